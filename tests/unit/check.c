#include "check.h"

#include <stdio.h>
#include <stdlib.h>

struct test {
        const char *name;
        void (*fn)(void);
};

static struct test tests[512];
static int n_tests;
static bool failed;
static const char *skipped; /* why the running test skipped, or NULL */

void test_register(const char *name, void (*fn)(void))
{
        if (n_tests < (int)(sizeof(tests) / sizeof(tests[0])))
                tests[n_tests++] = (struct test){ name, fn };
}

void test_fail(const char *file, int line, const char *what)
{
        fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
        failed = true;
}

void test_skip(const char *why)
{
        skipped = why;
}

int main(int argc, char **argv)
{
        int passed = 0, nfailed = 0, nskipped = 0;

        if (argc > 1 && strcmp(argv[1], "--list") == 0) {
                for (int i = 0; i < n_tests; i++)
                        printf("%s\n", tests[i].name);
                return 0;
        }
        for (int i = 0; i < n_tests; i++) {
                if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
                        continue;
                failed = false;
                skipped = NULL;
                tests[i].fn();
                if (failed) {
                        printf("not ok %s\n", tests[i].name);
                        nfailed++;
                } else if (skipped) {
                        printf("skip %s: %s\n", tests[i].name, skipped);
                        nskipped++;
                } else {
                        printf("ok %s\n", tests[i].name);
                        passed++;
                }
        }
        if (argc > 1 && passed + nfailed + nskipped == 0) {
                fprintf(stderr, "no test named %s\n", argv[1]);
                return 2;
        }
        printf("%d passed, %d failed, %d skipped\n", passed, nfailed, nskipped);
        if (nfailed)
                return 1;
        return argc > 1 && nskipped ? TEST_SKIPPED_EXIT : 0;
}
