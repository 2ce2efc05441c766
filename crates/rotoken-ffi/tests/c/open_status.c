/* Opens a database and prints the status name; exits 0 if it is the
 * expected one. The Rust test holds the file open in another process to
 * show a second process gets ROTOKEN_STATUS_LOCKED.
 *
 * usage: open_status DB KEYS EXPECTED_STATUS_NAME */
#include "check.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s DB KEYS EXPECTED_STATUS_NAME\n", argv[0]);
        return 2;
    }
    rotoken_handle *h = NULL;
    char *err = NULL;
    rotoken_status s = rotoken_open(argv[1], argv[2], NULL, &h, &err);
    printf("%s\n", rotoken_status_name((int)s));
    if (err) printf("%s\n", err);
    rotoken_string_free(err);
    if (s == ROTOKEN_STATUS_OK) {
        ASSERT(h != NULL);
        ASSERT(rotoken_close(h, NULL) == ROTOKEN_STATUS_OK);
    } else {
        ASSERT(h == NULL);
    }
    return strcmp(rotoken_status_name((int)s), argv[3]) == 0 ? 0 : 1;
}
