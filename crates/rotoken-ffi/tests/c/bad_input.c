/* Hostile and careless arguments: NULL pointers, invalid UTF-8, a 1 MB
 * token, oversize fields, made-up handles. Each must give its error code
 * (and a message), never a crash.
 *
 * usage: bad_input DIR */
#include "check.h"

#define MB (1024 * 1024)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    char keys[4096], db[4096];
    join_path(keys, sizeof keys, argv[1], "rotoken.keys");
    join_path(db, sizeof db, argv[1], "tokens.redb");
    char *err = NULL;
    const char *bad_utf8 = "caf\xc3\x28"; /* a truncated two-byte sequence */
    char *huge = malloc(MB + 1);           /* a 1 MB token */
    ASSERT(huge != NULL);
    memcpy(huge, "rt1_", 4);
    memset(huge + 4, 'A', MB - 4);
    huge[MB] = '\0';
    char long_subject[2000];
    memset(long_subject, 's', sizeof long_subject - 1);
    long_subject[sizeof long_subject - 1] = '\0';
    static uint8_t big_metadata[ROTOKEN_MAX_METADATA_LEN + 1];

    /* Keys and open. */
    EXPECT(rotoken_keys_generate(NULL, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_keys_generate(bad_utf8, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_keys_generate(huge, &err), ROTOKEN_STATUS_TOO_LARGE);
    EXPECT(rotoken_keys_generate(keys, &err), ROTOKEN_STATUS_OK);
    rotoken_handle *h = NULL;
    EXPECT(rotoken_open(NULL, keys, NULL, &h, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_open(db, NULL, NULL, &h, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_open(db, keys, NULL, NULL, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_open(bad_utf8, keys, NULL, &h, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_open(huge, keys, NULL, &h, &err), ROTOKEN_STATUS_TOO_LARGE);
    rotoken_policy bad_policy = rotoken_policy_default();
    bad_policy.durability = 7;
    EXPECT(rotoken_open(db, keys, &bad_policy, &h, &err), ROTOKEN_STATUS_INVALID_INPUT);
    ASSERT(h == NULL);
    /* A NULL error out-parameter is allowed: the status still tells. */
    ASSERT(rotoken_open(NULL, keys, NULL, &h, NULL) == ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_open(db, keys, NULL, &h, &err), ROTOKEN_STATUS_OK);

    /* Issue. */
    rotoken_issued issued;
    EXPECT(rotoken_issue(NULL, "alice", "web", "openid", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_issue(h, NULL, "web", "openid", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_NULL_POINTER);
    ASSERT(issued.refresh_token == NULL); /* written empty on failure */
    EXPECT(rotoken_issue(h, "alice", NULL, "openid", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_issue(h, "alice", "web", NULL, NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_issue(h, "alice", "web", "openid", NULL, NULL, 0, NULL, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_issue(h, "alice", "web", "openid", NULL, NULL, 5, &issued, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_issue(h, bad_utf8, "web", "openid", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_issue(h, "alice", bad_utf8, "openid", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_issue(h, "alice", "web", bad_utf8, NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_issue(h, "alice", "web", "openid", bad_utf8, NULL, 0, &issued, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_issue(h, long_subject, "web", "openid", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_TOO_LARGE);
    EXPECT(rotoken_issue(h, huge, "web", "openid", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_TOO_LARGE);
    EXPECT(rotoken_issue(h, "alice", "web", "openid", NULL, big_metadata, sizeof big_metadata, &issued, &err),
           ROTOKEN_STATUS_TOO_LARGE);
    EXPECT(rotoken_issue(h, "", "web", "openid", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_INVALID_INPUT);
    EXPECT(rotoken_issue(h, "alice\n", "web", "openid", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_INVALID_INPUT);
    EXPECT(rotoken_issue(h, "alice", "web", "open\"id", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_INVALID_INPUT);
    EXPECT(rotoken_issue(h, "alice", "web", "openid", NULL, NULL, 0, &issued, &err), ROTOKEN_STATUS_OK);

    /* Rotate. */
    rotoken_rotated rotated;
    EXPECT(rotoken_rotate(h, NULL, "web", NULL, NULL, &rotated, &err), ROTOKEN_STATUS_NULL_POINTER);
    ASSERT(rotated.refresh_token == NULL && rotated.subject == NULL);
    EXPECT(rotoken_rotate(h, issued.refresh_token, NULL, NULL, NULL, &rotated, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_rotate(h, issued.refresh_token, "web", NULL, NULL, NULL, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_rotate(h, bad_utf8, "web", NULL, NULL, &rotated, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_rotate(h, huge, "web", NULL, NULL, &rotated, &err), ROTOKEN_STATUS_TOO_LARGE);
    huge[1000] = '\0'; /* 1000 bytes: under the limit, so the parser refuses it */
    EXPECT(rotoken_rotate(h, huge, "web", NULL, NULL, &rotated, &err), ROTOKEN_STATUS_INVALID_TOKEN);
    huge[1000] = 'A';
    EXPECT(rotoken_rotate(h, issued.refresh_token, "web", bad_utf8, NULL, &rotated, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_rotate(h, issued.refresh_token, "web", NULL, huge, &rotated, &err), ROTOKEN_STATUS_TOO_LARGE);
    EXPECT(rotoken_rotate(h, issued.refresh_token, huge, NULL, NULL, &rotated, &err), ROTOKEN_STATUS_TOO_LARGE);
    /* A token with one character changed fails its checksum. */
    char tampered[ROTOKEN_MAX_TOKEN_LEN];
    strcpy(tampered, issued.refresh_token);
    tampered[10] = tampered[10] == 'A' ? 'B' : 'A';
    EXPECT(rotoken_rotate(h, tampered, "web", NULL, NULL, &rotated, &err), ROTOKEN_STATUS_INVALID_TOKEN);
    /* After all of that, the real token still works: nothing was changed. */
    EXPECT(rotoken_rotate(h, issued.refresh_token, "web", NULL, NULL, &rotated, &err), ROTOKEN_STATUS_OK);
    ASSERT(rotated.generation == 1);

    /* Introspect. */
    rotoken_introspection info;
    EXPECT(rotoken_introspect(h, NULL, &info, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_introspect(h, rotated.refresh_token, NULL, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_introspect(h, bad_utf8, &info, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_introspect(h, huge, &info, &err), ROTOKEN_STATUS_TOO_LARGE);
    EXPECT(rotoken_introspect(h, "garbage", &info, &err), ROTOKEN_STATUS_OK);
    ASSERT(!info.active);

    /* Revoke. */
    size_t n = 7;
    EXPECT(rotoken_revoke_token(h, NULL, &n, &err), ROTOKEN_STATUS_NULL_POINTER);
    ASSERT(n == 0);
    EXPECT(rotoken_revoke_token(h, huge, &n, &err), ROTOKEN_STATUS_TOO_LARGE);
    EXPECT(rotoken_revoke_token(h, bad_utf8, &n, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_revoke_token_of_client(h, NULL, "web", &n, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_revoke_token_of_client(h, "rt1_x", NULL, &n, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_revoke_token_of_client(h, "rt1_x", huge, &n, &err), ROTOKEN_STATUS_TOO_LARGE);
    EXPECT(rotoken_revoke_token_of_client(h, "rt1_x", bad_utf8, &n, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_revoke_token_of_client(h, "rt1_x", "web", &n, &err), ROTOKEN_STATUS_INVALID_TOKEN);
    ASSERT(n == 0);
    EXPECT(rotoken_revoke_family(h, NULL, &n, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_revoke_family(h, huge, &n, &err), ROTOKEN_STATUS_TOO_LARGE);
    EXPECT(rotoken_revoke_family(h, "0123456789abcdef0123456789abcdeg", &n, &err), ROTOKEN_STATUS_INVALID_INPUT);
    EXPECT(rotoken_revoke_family(h, "0123456789abcdef0123456789abcdef", &n, &err), ROTOKEN_STATUS_OK);
    ASSERT(n == 0); /* no such family */
    EXPECT(rotoken_revoke_subject(h, NULL, &n, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_revoke_subject(h, bad_utf8, &n, &err), ROTOKEN_STATUS_INVALID_UTF8);
    EXPECT(rotoken_revoke_subject(h, long_subject, &n, &err), ROTOKEN_STATUS_TOO_LARGE);
    EXPECT(rotoken_revoke_subject(h, "", &n, &err), ROTOKEN_STATUS_INVALID_INPUT);
    EXPECT(rotoken_revoke_client(h, NULL, &n, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_revoke_client(h, huge, &n, &err), ROTOKEN_STATUS_TOO_LARGE);

    /* gc and check. */
    EXPECT(rotoken_gc(h, 10, NULL, &err), ROTOKEN_STATUS_OK); /* the report is optional */
    EXPECT(rotoken_check(h, NULL, &err), ROTOKEN_STATUS_NULL_POINTER);
    EXPECT(rotoken_gc(NULL, 10, NULL, &err), ROTOKEN_STATUS_NULL_POINTER);

    /* Handles that are not handles: an error, never a dereference. */
    rotoken_handle *made_up = (rotoken_handle *)(uintptr_t)0x1234;
    EXPECT(rotoken_introspect(made_up, rotated.refresh_token, &info, &err), ROTOKEN_STATUS_CLOSED);
    EXPECT(rotoken_close(made_up, &err), ROTOKEN_STATUS_CLOSED);
    EXPECT(rotoken_close(NULL, &err), ROTOKEN_STATUS_NULL_POINTER);

    /* Freeing NULL and clearing NULL or twice are no-ops. */
    rotoken_string_free(NULL);
    rotoken_bytes_free(NULL);
    rotoken_issued_clear(NULL);
    rotoken_rotated_clear(NULL);
    rotoken_introspection_clear(NULL);
    rotoken_check_report_clear(NULL);
    rotoken_issued_clear(&issued);
    rotoken_issued_clear(&issued);
    /* A token taken out of its struct is freed on its own. */
    char *token = rotated.refresh_token;
    rotated.refresh_token = NULL;
    rotoken_rotated_clear(&rotated);
    ASSERT(strncmp(token, "rt1_", 4) == 0);
    rotoken_string_free(token);

    EXPECT(rotoken_close(h, &err), ROTOKEN_STATUS_OK);
    free(huge);
    printf("bad_input: all checks passed\n");
    return 0;
}
