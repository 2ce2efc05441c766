/* The whole life of a refresh-token family through the C ABI: keys, open,
 * issue, introspect, rotate, a retry within the grace window, a retry after
 * it, client and scope checks, reuse detection, the four revocations, gc,
 * check, close and reopen, and the open errors. Every status is checked.
 *
 * usage: lifecycle DIR    (DIR: an empty, writable directory) */
#include <time.h>

#include "check.h"

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    char keys[4096], db[4096], db2[4096], other_keys[4096], not_db[4096];
    join_path(keys, sizeof keys, argv[1], "rotoken.keys");
    join_path(db, sizeof db, argv[1], "tokens.redb");
    join_path(db2, sizeof db2, argv[1], "grace.redb");
    join_path(other_keys, sizeof other_keys, argv[1], "other.keys");
    join_path(not_db, sizeof not_db, argv[1], "notes.txt");
    char *err = NULL;

    /* Static strings. */
    ASSERT(rotoken_version() != NULL && rotoken_version()[0] != '\0');
    ASSERT_STR(rotoken_status_name(ROTOKEN_STATUS_OK), "ok");
    ASSERT_STR(rotoken_status_name(ROTOKEN_STATUS_REUSE_DETECTED), "reuse_detected");
    ASSERT_STR(rotoken_status_name(ROTOKEN_STATUS_LOCKED), "locked");
    ASSERT_STR(rotoken_status_name(12345), "unknown");

    /* Keys. */
    rotoken_handle *h = (rotoken_handle *)1;
    EXPECT(rotoken_open(db, keys, NULL, &h, &err), ROTOKEN_STATUS_KEYS_MISSING);
    ASSERT(h == NULL);
    EXPECT(rotoken_keys_generate(keys, &err), ROTOKEN_STATUS_OK);
    EXPECT(rotoken_keys_generate(keys, &err), ROTOKEN_STATUS_KEYS_EXIST);

    /* Open; a second opener of the same file is refused. */
    rotoken_policy policy = rotoken_policy_default();
    ASSERT(policy.grace_ms == 30000);
    ASSERT(policy.durability == ROTOKEN_DURABILITY_IMMEDIATE);
    EXPECT(rotoken_open(db, keys, &policy, &h, &err), ROTOKEN_STATUS_OK);
    ASSERT(h != NULL);
    rotoken_handle *second = NULL;
    EXPECT(rotoken_open(db, keys, NULL, &second, &err), ROTOKEN_STATUS_LOCKED);
    ASSERT(second == NULL);

    /* Issue. */
    rotoken_issued first;
    const char meta[] = "session-42";
    EXPECT(rotoken_issue(h, "alice", "web", "openid offline_access", NULL, (const uint8_t *)meta,
                         strlen(meta), &first, &err),
           ROTOKEN_STATUS_OK);
    ASSERT(strncmp(first.refresh_token, "rt1_", 4) == 0);
    ASSERT(strlen(first.family) == ROTOKEN_FAMILY_ID_LEN);
    ASSERT(first.generation == 0);
    ASSERT(first.expires_at > (int64_t)time(NULL));

    /* Introspect the live token. */
    rotoken_introspection info;
    EXPECT(rotoken_introspect(h, first.refresh_token, &info, &err), ROTOKEN_STATUS_OK);
    ASSERT(info.active);
    ASSERT_STR(info.sub, "alice");
    ASSERT_STR(info.client_id, "web");
    ASSERT_STR(info.scope, "offline_access openid");
    ASSERT_STR(info.family, first.family);
    ASSERT(info.cnf_jkt == NULL);
    ASSERT(info.generation == 0);
    rotoken_introspection_clear(&info);
    ASSERT(info.sub == NULL);

    /* Rotate: generation 1. */
    rotoken_rotated second_gen;
    EXPECT(rotoken_rotate(h, first.refresh_token, "web", NULL, NULL, &second_gen, &err), ROTOKEN_STATUS_OK);
    ASSERT(second_gen.generation == 1);
    ASSERT(!second_gen.retried);
    ASSERT_STR(second_gen.family, first.family);
    ASSERT_STR(second_gen.subject, "alice");
    ASSERT_STR(second_gen.client_id, "web");
    ASSERT_STR(second_gen.scope, "offline_access openid");
    ASSERT(second_gen.confirmation == NULL);
    ASSERT(second_gen.metadata_len == strlen(meta));
    ASSERT(memcmp(second_gen.metadata, meta, strlen(meta)) == 0);
    ASSERT(strcmp(second_gen.refresh_token, first.refresh_token) != 0);

    /* The old token is no longer active; the new one is. */
    EXPECT(rotoken_introspect(h, first.refresh_token, &info, &err), ROTOKEN_STATUS_OK);
    ASSERT(!info.active);
    ASSERT(info.sub == NULL && info.family[0] == '\0');
    EXPECT(rotoken_introspect(h, second_gen.refresh_token, &info, &err), ROTOKEN_STATUS_OK);
    ASSERT(info.active && info.generation == 1);
    rotoken_introspection_clear(&info);

    /* A second tab retries with the same token within the grace window:
     * the very same successor, not a fork and not a logout. */
    rotoken_rotated retry;
    EXPECT(rotoken_rotate(h, first.refresh_token, "web", NULL, NULL, &retry, &err), ROTOKEN_STATUS_OK);
    ASSERT(retry.retried);
    ASSERT(retry.generation == 1);
    ASSERT_STR(retry.refresh_token, second_gen.refresh_token);
    rotoken_rotated_clear(&retry);
    ASSERT(retry.refresh_token == NULL);
    rotoken_rotated_clear(&retry); /* twice is fine */

    /* Another client presenting the token changes nothing. */
    EXPECT(rotoken_rotate(h, second_gen.refresh_token, "mobile", NULL, NULL, &retry, &err),
           ROTOKEN_STATUS_CLIENT_MISMATCH);
    ASSERT(retry.refresh_token == NULL);
    /* A scope wider than the grant. */
    EXPECT(rotoken_rotate(h, second_gen.refresh_token, "web", "openid admin", NULL, &retry, &err),
           ROTOKEN_STATUS_SCOPE_WIDENED);

    /* Rotate again with a narrower scope: generation 2. */
    rotoken_rotated third_gen;
    EXPECT(rotoken_rotate(h, second_gen.refresh_token, "web", "openid", NULL, &third_gen, &err),
           ROTOKEN_STATUS_OK);
    ASSERT(third_gen.generation == 2);
    ASSERT_STR(third_gen.scope, "openid");

    /* Someone replays the first token, now two generations old: reuse.
     * The whole family is revoked, the current token with it. */
    EXPECT(rotoken_rotate(h, first.refresh_token, "web", NULL, NULL, &retry, &err), ROTOKEN_STATUS_REUSE_DETECTED);
    EXPECT(rotoken_rotate(h, third_gen.refresh_token, "web", NULL, NULL, &retry, &err), ROTOKEN_STATUS_REVOKED);
    EXPECT(rotoken_introspect(h, third_gen.refresh_token, &info, &err), ROTOKEN_STATUS_OK);
    ASSERT(!info.active);
    rotoken_issued_clear(&first);
    rotoken_rotated_clear(&second_gen);
    rotoken_rotated_clear(&third_gen);

    /* Garbage and forged tokens are refused before any storage access. */
    EXPECT(rotoken_rotate(h, "not a token", "web", NULL, NULL, &retry, &err), ROTOKEN_STATUS_INVALID_TOKEN);
    EXPECT(rotoken_rotate(h, "", "web", NULL, NULL, &retry, &err), ROTOKEN_STATUS_INVALID_TOKEN);

    /* Confirmation-bound family: the key must match. */
    rotoken_issued bound;
    EXPECT(rotoken_issue(h, "erin", "spa", "openid", "jkt-1", NULL, 0, &bound, &err), ROTOKEN_STATUS_OK);
    EXPECT(rotoken_rotate(h, bound.refresh_token, "spa", NULL, NULL, &retry, &err),
           ROTOKEN_STATUS_CONFIRMATION_MISMATCH);
    EXPECT(rotoken_rotate(h, bound.refresh_token, "spa", NULL, "jkt-1", &retry, &err), ROTOKEN_STATUS_OK);
    ASSERT_STR(retry.confirmation, "jkt-1");
    ASSERT(retry.metadata == NULL && retry.metadata_len == 0);
    rotoken_rotated_clear(&retry);
    rotoken_issued_clear(&bound);

    /* Revocation: by token, family, subject and client. */
    rotoken_issued a, b, c, d;
    EXPECT(rotoken_issue(h, "bob", "web", "openid", NULL, NULL, 0, &a, &err), ROTOKEN_STATUS_OK);
    EXPECT(rotoken_issue(h, "bob", "mobile", "openid", NULL, NULL, 0, &b, &err), ROTOKEN_STATUS_OK);
    EXPECT(rotoken_issue(h, "carol", "mobile", "openid", NULL, NULL, 0, &c, &err), ROTOKEN_STATUS_OK);
    EXPECT(rotoken_issue(h, "dave", "web", "openid", NULL, NULL, 0, &d, &err), ROTOKEN_STATUS_OK);
    size_t n = 99;
    EXPECT(rotoken_revoke_token(h, a.refresh_token, &n, &err), ROTOKEN_STATUS_OK);
    ASSERT(n == 1);
    EXPECT(rotoken_revoke_token(h, a.refresh_token, &n, &err), ROTOKEN_STATUS_OK);
    ASSERT(n == 0); /* already revoked */
    EXPECT(rotoken_rotate(h, a.refresh_token, "web", NULL, NULL, &retry, &err), ROTOKEN_STATUS_REVOKED);
    EXPECT(rotoken_revoke_token(h, "rt1_garbage", &n, &err), ROTOKEN_STATUS_INVALID_TOKEN);
    ASSERT(n == 0);
    EXPECT(rotoken_revoke_family(h, d.family, &n, &err), ROTOKEN_STATUS_OK);
    ASSERT(n == 1);
    EXPECT(rotoken_revoke_family(h, "not-a-family-id", &n, &err), ROTOKEN_STATUS_INVALID_INPUT);
    EXPECT(rotoken_rotate(h, d.refresh_token, "web", NULL, NULL, &retry, &err), ROTOKEN_STATUS_REVOKED);
    EXPECT(rotoken_revoke_subject(h, "bob", &n, &err), ROTOKEN_STATUS_OK);
    ASSERT(n == 1); /* b; a was revoked already */
    EXPECT(rotoken_rotate(h, b.refresh_token, "mobile", NULL, NULL, &retry, &err), ROTOKEN_STATUS_REVOKED);
    EXPECT(rotoken_revoke_client(h, "mobile", NULL, &err), ROTOKEN_STATUS_OK); /* count optional */
    EXPECT(rotoken_rotate(h, c.refresh_token, "mobile", NULL, NULL, &retry, &err), ROTOKEN_STATUS_REVOKED);
    EXPECT(rotoken_revoke_subject(h, "nobody", &n, &err), ROTOKEN_STATUS_OK);
    ASSERT(n == 0);

    /* RFC 7009 section 2.1: a revocation endpoint revokes only its client's tokens. */
    rotoken_issued e;
    EXPECT(rotoken_issue(h, "frank", "web", "openid", NULL, NULL, 0, &e, &err), ROTOKEN_STATUS_OK);
    n = 99;
    EXPECT(rotoken_revoke_token_of_client(h, e.refresh_token, "mobile", &n, &err), ROTOKEN_STATUS_CLIENT_MISMATCH);
    ASSERT(n == 0);
    EXPECT(rotoken_rotate(h, e.refresh_token, "web", NULL, NULL, &retry, &err), ROTOKEN_STATUS_OK);
    EXPECT(rotoken_revoke_token_of_client(h, e.refresh_token, "web", &n, &err), ROTOKEN_STATUS_OK);
    ASSERT(n == 1); /* an old token of the family, presented by its own client */
    EXPECT(rotoken_introspect(h, retry.refresh_token, &info, &err), ROTOKEN_STATUS_OK);
    ASSERT(!info.active);
    rotoken_introspection_clear(&info);
    rotoken_rotated_clear(&retry);
    rotoken_issued_clear(&e);

    /* gc and check. */
    rotoken_gc_report gc;
    EXPECT(rotoken_gc(h, 100, &gc, &err), ROTOKEN_STATUS_OK);
    ASSERT(gc.removed == 0 && !gc.more); /* revoked families are kept for a day */
    rotoken_check_report report;
    EXPECT(rotoken_check(h, &report, &err), ROTOKEN_STATUS_OK);
    ASSERT(report.problem_count == 0 && report.problems == NULL);
    ASSERT(report.families == 7); /* frank's family, revoked, included */
    ASSERT(report.active == 1); /* erin */
    rotoken_check_report_clear(&report);

    /* Close: later calls and a second close get CLOSED; the file is released. */
    EXPECT(rotoken_close(h, &err), ROTOKEN_STATUS_OK);
    EXPECT(rotoken_introspect(h, a.refresh_token, &info, &err), ROTOKEN_STATUS_CLOSED);
    rotoken_issued_clear(&a); /* a result struct is overwritten, not freed, by the next call */
    EXPECT(rotoken_issue(h, "x", "web", "", NULL, NULL, 0, &a, &err), ROTOKEN_STATUS_CLOSED);
    ASSERT(a.refresh_token == NULL);
    EXPECT(rotoken_close(h, &err), ROTOKEN_STATUS_CLOSED);
    rotoken_issued_clear(&b);
    rotoken_issued_clear(&c);
    rotoken_issued_clear(&d);

    EXPECT(rotoken_open(db, keys, NULL, &h, &err), ROTOKEN_STATUS_OK);
    EXPECT(rotoken_check(h, &report, &err), ROTOKEN_STATUS_OK);
    ASSERT(report.families == 7 && report.problem_count == 0);
    rotoken_check_report_clear(&report);
    EXPECT(rotoken_close(h, &err), ROTOKEN_STATUS_OK);

    /* The grace window is a policy: a retry after it is reuse. (A retry
       within the default 30 s window is tested above.) A 1 ms window and a
       sleep of at least 20 ms: the retry is after the window however slow
       the machine (valgrind included); a window short enough to end between
       two calls, and a retry inside it, would depend on the scheduler. */
    policy.grace_ms = 1;
    EXPECT(rotoken_open(db2, keys, &policy, &h, &err), ROTOKEN_STATUS_OK);
    EXPECT(rotoken_issue(h, "frank", "web", "openid", NULL, NULL, 0, &a, &err), ROTOKEN_STATUS_OK);
    rotoken_rotated next, again;
    EXPECT(rotoken_rotate(h, a.refresh_token, "web", NULL, NULL, &next, &err), ROTOKEN_STATUS_OK);
    sleep_ms(20);
    EXPECT(rotoken_rotate(h, a.refresh_token, "web", NULL, NULL, &again, &err), ROTOKEN_STATUS_REUSE_DETECTED);
    EXPECT(rotoken_rotate(h, next.refresh_token, "web", NULL, NULL, &again, &err), ROTOKEN_STATUS_REVOKED);
    rotoken_rotated_clear(&next);
    rotoken_issued_clear(&a);
    EXPECT(rotoken_close(h, &err), ROTOKEN_STATUS_OK);

    /* Open errors: other keys, a file that is not a database. */
    EXPECT(rotoken_keys_generate(other_keys, &err), ROTOKEN_STATUS_OK);
    EXPECT(rotoken_open(db, other_keys, NULL, &h, &err), ROTOKEN_STATUS_WRONG_KEYS);
    ASSERT(h == NULL);
    FILE *f = fopen(not_db, "w");
    ASSERT(f != NULL);
    fputs("these are my notes, not a database\n", f);
    fclose(f);
    EXPECT(rotoken_open(not_db, keys, NULL, &h, &err), ROTOKEN_STATUS_NOT_ROTOKEN);
    EXPECT(rotoken_open(db, not_db, NULL, &h, &err), ROTOKEN_STATUS_KEYS_INVALID);

    printf("lifecycle: all checks passed\n");
    return 0;
}
