/* A minimal unit-test harness: TEST() registers a function, CHECK() fails it, SKIP() says why it
 * cannot run here. Each test binary accepts --list and a test name, so pytest can run tests one by
 * one; a test run alone that skipped exits TEST_SKIPPED_EXIT (tests/test_unit.py's pytest skip). */
#ifndef CAPSULE_TESTS_CHECK_H
#define CAPSULE_TESTS_CHECK_H

#include <stdbool.h>
#include <string.h>

void test_register(const char *name, void (*fn)(void));
void test_fail(const char *file, int line, const char *what);
void test_skip(const char *why);

#define TEST_SKIPPED_EXIT 77

#define TEST(name)                                                                      \
        static void name(void);                                                         \
        __attribute__((constructor)) static void register_##name(void)                  \
        {                                                                               \
                test_register(#name, name);                                             \
        }                                                                               \
        static void name(void)

#define CHECK(cond)                                             \
        do {                                                    \
                if (!(cond)) {                                  \
                        test_fail(__FILE__, __LINE__, #cond);   \
                        return;                                 \
                }                                               \
        } while (0)

#define SKIP(why)                       \
        do {                            \
                test_skip(why);         \
                return;                 \
        } while (0)

#define CHECK_STR(a, b) CHECK((a) != NULL && strcmp((a), (b)) == 0)

#endif
