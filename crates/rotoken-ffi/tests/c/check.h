/* Helpers shared by the C test programs: every call's status is checked,
 * and so is the error out-parameter (NULL on success, a message on failure). */
#ifndef ROTOKEN_TEST_CHECK_H
#define ROTOKEN_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rotoken.h"

static inline void fail_at(int line, const char *what) {
    fprintf(stderr, "FAILED line %d: %s\n", line, what);
    exit(1);
}

/* Checks a status against the expected one, then frees the message. */
static inline void expect_status(rotoken_status got, rotoken_status want, char **err, const char *call, int line) {
    if (got != want) {
        fprintf(stderr, "FAILED line %d: %s\n  got %s (%d), want %s (%d): %s\n", line, call,
                rotoken_status_name((int)got), (int)got, rotoken_status_name((int)want), (int)want,
                *err ? *err : "(no message)");
        exit(1);
    }
    if (want == ROTOKEN_STATUS_OK && *err != NULL) {
        fprintf(stderr, "FAILED line %d: %s: success but *error = \"%s\"\n", line, call, *err);
        exit(1);
    }
    if (want != ROTOKEN_STATUS_OK && (*err == NULL || (*err)[0] == '\0')) {
        fprintf(stderr, "FAILED line %d: %s: failed without a message\n", line, call);
        exit(1);
    }
    rotoken_string_free(*err);
    *err = NULL;
}

/* EXPECT(call, status): needs a `char *err` in scope, passed as `&err` to the call. */
#define EXPECT(call, want) expect_status((call), (want), &err, #call, __LINE__)
#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) fail_at(__LINE__, #cond);                                                     \
    } while (0)
#define ASSERT_STR(a, b)                                                                           \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                     \
            fprintf(stderr, "FAILED line %d: %s == %s\n  \"%s\" != \"%s\"\n", __LINE__, #a, #b,    \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                       \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* dir + "/" + name, in a static-lifetime buffer owned by the caller. */
static inline void join_path(char *out, size_t size, const char *dir, const char *name) {
    int n = snprintf(out, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size) fail_at(__LINE__, "path too long");
}

#endif
