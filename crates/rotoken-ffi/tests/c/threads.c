/* Four threads rotating four families at once through one handle, then the
 * same while a fifth thread closes the handle under them. No error but the
 * expected ones, no crash, no acknowledged rotation lost.
 *
 * usage: threads DIR ROUNDS */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "check.h"

#define THREADS 4

typedef struct {
    rotoken_handle *h;
    int index;
    int rounds;
    char *token;            /* the family's current token (owned) */
    uint32_t generation;    /* its generation */
    char family[ROTOKEN_FAMILY_ID_LEN + 1];
    long rotations;         /* phase 2: rotations acknowledged before the close */
} worker;

static atomic_long total_rotations;
static atomic_int closed_seen;

static void replace_token(worker *w, rotoken_rotated *r) {
    rotoken_string_free(w->token);
    w->token = r->refresh_token; /* take ownership, then clear the rest */
    r->refresh_token = NULL;
    w->generation = r->generation;
    rotoken_rotated_clear(r);
}

/* Phase 1: rotate `rounds` times; every fifth time also retry the
 * predecessor within the grace window and expect the same successor. */
static void *rotate_rounds(void *arg) {
    worker *w = arg;
    char *err = NULL;
    char client[32];
    snprintf(client, sizeof client, "client-%d", w->index);
    for (int i = 0; i < w->rounds; i++) {
        rotoken_rotated r;
        EXPECT(rotoken_rotate(w->h, w->token, client, NULL, NULL, &r, &err), ROTOKEN_STATUS_OK);
        ASSERT(!r.retried);
        ASSERT(r.generation == w->generation + 1);
        ASSERT_STR(r.family, w->family);
        if (i % 5 == 0) {
            rotoken_rotated again;
            EXPECT(rotoken_rotate(w->h, w->token, client, NULL, NULL, &again, &err), ROTOKEN_STATUS_OK);
            ASSERT(again.retried);
            ASSERT_STR(again.refresh_token, r.refresh_token);
            rotoken_rotated_clear(&again);
        }
        replace_token(w, &r);
    }
    return NULL;
}

/* Phase 2: rotate until the handle is closed under us. Every status is OK
 * until the first CLOSED, and CLOSED from then on. */
static void *rotate_until_closed(void *arg) {
    worker *w = arg;
    char *err = NULL;
    char client[32];
    snprintf(client, sizeof client, "client-%d", w->index);
    for (long i = 0; i < 1000000; i++) {
        rotoken_rotated r;
        rotoken_status s = rotoken_rotate(w->h, w->token, client, NULL, NULL, &r, &err);
        if (s == ROTOKEN_STATUS_CLOSED) {
            expect_status(s, ROTOKEN_STATUS_CLOSED, &err, "rotate after close", __LINE__);
            ASSERT(r.refresh_token == NULL);
            atomic_fetch_add(&closed_seen, 1);
            /* Everything else is closed too, and never crashes. */
            rotoken_introspection info;
            EXPECT(rotoken_introspect(w->h, w->token, &info, &err), ROTOKEN_STATUS_CLOSED);
            EXPECT(rotoken_rotate(w->h, w->token, client, NULL, NULL, &r, &err), ROTOKEN_STATUS_CLOSED);
            EXPECT(rotoken_revoke_family(w->h, w->family, NULL, &err), ROTOKEN_STATUS_CLOSED);
            return NULL;
        }
        expect_status(s, ROTOKEN_STATUS_OK, &err, "rotate before close", __LINE__);
        ASSERT(r.generation == w->generation + 1);
        replace_token(w, &r);
        w->rotations++;
        atomic_fetch_add(&total_rotations, 1);
    }
    fail_at(__LINE__, "the handle was never closed");
    return NULL;
}

/* Closes the handle once the workers are well under way. */
static void *close_midway(void *arg) {
    rotoken_handle *h = arg;
    char *err = NULL;
    struct timespec ts = {0, 1000000L};
    while (atomic_load(&total_rotations) < 4 * THREADS) nanosleep(&ts, NULL);
    EXPECT(rotoken_close(h, &err), ROTOKEN_STATUS_OK);
    return NULL;
}

static void start(pthread_t *t, void *(*f)(void *), void *arg) {
    if (pthread_create(t, NULL, f, arg) != 0) fail_at(__LINE__, "pthread_create");
}

static void join(pthread_t t) {
    if (pthread_join(t, NULL) != 0) fail_at(__LINE__, "pthread_join");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DIR ROUNDS\n", argv[0]);
        return 2;
    }
    char keys[4096], db[4096];
    join_path(keys, sizeof keys, argv[1], "rotoken.keys");
    join_path(db, sizeof db, argv[1], "tokens.redb");
    int rounds = atoi(argv[2]);
    ASSERT(rounds > 0);
    char *err = NULL;
    EXPECT(rotoken_keys_generate(keys, &err), ROTOKEN_STATUS_OK);
    rotoken_handle *h = NULL;
    EXPECT(rotoken_open(db, keys, NULL, &h, &err), ROTOKEN_STATUS_OK);

    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        char subject[32], client[32];
        snprintf(subject, sizeof subject, "user-%d", i);
        snprintf(client, sizeof client, "client-%d", i);
        rotoken_issued issued;
        EXPECT(rotoken_issue(h, subject, client, "openid offline_access", NULL, NULL, 0, &issued, &err),
               ROTOKEN_STATUS_OK);
        w[i] = (worker){.h = h, .index = i, .rounds = rounds, .token = issued.refresh_token, .generation = 0};
        memcpy(w[i].family, issued.family, sizeof w[i].family);
        issued.refresh_token = NULL;
        rotoken_issued_clear(&issued);
    }

    /* Phase 1: four threads, four families, one handle. */
    pthread_t t[THREADS + 1];
    for (int i = 0; i < THREADS; i++) start(&t[i], rotate_rounds, &w[i]);
    for (int i = 0; i < THREADS; i++) join(t[i]);
    for (int i = 0; i < THREADS; i++) {
        ASSERT(w[i].generation == (uint32_t)rounds);
        rotoken_introspection info;
        EXPECT(rotoken_introspect(h, w[i].token, &info, &err), ROTOKEN_STATUS_OK);
        ASSERT(info.active && info.generation == (uint32_t)rounds);
        rotoken_introspection_clear(&info);
    }
    rotoken_check_report report;
    EXPECT(rotoken_check(h, &report, &err), ROTOKEN_STATUS_OK);
    ASSERT(report.problem_count == 0 && report.families == THREADS && report.active == THREADS);
    rotoken_check_report_clear(&report);
    printf("phase 1: %d threads x %d rotations (plus %d grace retries each): ok\n", THREADS, rounds,
           (rounds + 4) / 5);

    /* Phase 2: the same, while another thread closes the handle. */
    for (int i = 0; i < THREADS; i++) start(&t[i], rotate_until_closed, &w[i]);
    start(&t[THREADS], close_midway, h);
    for (int i = 0; i <= THREADS; i++) join(t[i]);
    ASSERT(atomic_load(&closed_seen) == THREADS);
    EXPECT(rotoken_close(h, &err), ROTOKEN_STATUS_CLOSED);
    printf("phase 2: %ld rotations, then close under 4 threads: every later call got ROTOKEN_STATUS_CLOSED\n",
           atomic_load(&total_rotations));

    /* Reopen: the file was released, and every acknowledged rotation is there. */
    EXPECT(rotoken_open(db, keys, NULL, &h, &err), ROTOKEN_STATUS_OK);
    for (int i = 0; i < THREADS; i++) {
        rotoken_introspection info;
        EXPECT(rotoken_introspect(h, w[i].token, &info, &err), ROTOKEN_STATUS_OK);
        ASSERT(info.active);
        ASSERT(info.generation == w[i].generation);
        ASSERT(info.generation == (uint32_t)(rounds + w[i].rotations));
        rotoken_introspection_clear(&info);
        rotoken_string_free(w[i].token);
    }
    EXPECT(rotoken_check(h, &report, &err), ROTOKEN_STATUS_OK);
    ASSERT(report.problem_count == 0 && report.active == THREADS);
    rotoken_check_report_clear(&report);
    EXPECT(rotoken_close(h, &err), ROTOKEN_STATUS_OK);
    printf("phase 3: reopened, no acknowledged rotation lost, check clean\n");
    printf("threads: all checks passed\n");
    return 0;
}
