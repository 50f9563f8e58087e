/* check.h — the smallest test harness that reports honestly.
 * CHECK(cond) records a failed assertion (with file:line); RUN(test) runs one
 * test function and counts it passed only if none of its checks failed. Each
 * test binary ends with one line "name: N passed, N failed" (tests, not
 * assertions) that tests/run_all.sh adds up. */
#ifndef MP_CHECK_H
#define MP_CHECK_H

#include <stdio.h>

static int check_failures, tests_passed, tests_failed;

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            check_failures++;                                               \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                   \
    } while (0)

#define RUN(test)                                                           \
    do {                                                                    \
        int before = check_failures;                                        \
        test();                                                             \
        if (check_failures == before) tests_passed++; else tests_failed++;  \
        printf("%s %s\n", check_failures == before ? "ok  " : "FAIL", #test); \
    } while (0)

static inline int check_report(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}

#endif
