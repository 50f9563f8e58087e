/* Unit tests for the token buckets behind moonpush.limit(). */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "limiter.h"
#include "server.h"

mp_server mp;

static int take(const char *key, double rate, double burst, double now, double *retry)
{
    return mp_limiter_take(key, strlen(key), rate, burst, now, retry);
}

static void test_burst_then_refill(void)
{
    double retry;
    for (int i = 0; i < 5; i++)
        CHECK(take("a", 1, 5, 100.0, &retry) == 1);
    CHECK(take("a", 1, 5, 100.0, &retry) == 0);
    CHECK(retry > 0.99 && retry <= 1.0);
    CHECK(take("a", 1, 5, 100.5, &retry) == 0);     /* half a token */
    CHECK(retry > 0.49 && retry <= 0.5);
    CHECK(take("a", 1, 5, 101.0, &retry) == 1);     /* one full token */
    CHECK(take("a", 1, 5, 1000.0, &retry) == 1);    /* refill caps at burst */
    for (int i = 0; i < 4; i++)
        CHECK(take("a", 1, 5, 1000.0, &retry) == 1);
    CHECK(take("a", 1, 5, 1000.0, &retry) == 0);
    mp_limiter_free_all();
}

static void test_keys_are_independent(void)
{
    double retry;
    CHECK(take("ip|1", 1, 1, 5.0, &retry) == 1);
    CHECK(take("ip|1", 1, 1, 5.0, &retry) == 0);
    CHECK(take("ip|2", 1, 1, 5.0, &retry) == 1);
    mp_limiter_free_all();
}

static void test_bad_arguments(void)
{
    double retry;
    char long_key[MP_LIMITER_MAX_KEY_LEN + 2];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    CHECK(take("k", 0, 5, 1.0, &retry) == -1);
    CHECK(take("k", 1, 0, 1.0, &retry) == -1);
    CHECK(take("", 1, 1, 1.0, &retry) == -1);
    CHECK(take(long_key, 1, 1, 1.0, &retry) == -1);
    CHECK(mp_limiter_count() == 0);
}

static void test_table_is_bounded_lru(void)
{
    double retry;
    char key[32];
    for (int i = 0; i < MP_LIMITER_MAX_KEYS + 10; i++) {
        snprintf(key, sizeof key, "k%d", i);
        take(key, 1, 1, 1.0, &retry);
        if (i == 100)
            take("k0", 1, 1, 1.0, &retry);          /* k0 used recently: kept */
    }
    CHECK(mp_limiter_count() == MP_LIMITER_MAX_KEYS);
    CHECK(take("k0", 1, 1, 1.0, &retry) == 0);       /* still the same, empty bucket */
    CHECK(take("k1", 1, 1, 1.0, &retry) == 1);       /* evicted: starts full */
    mp_limiter_free_all();
    CHECK(mp_limiter_count() == 0);
}

int main(void)
{
    RUN(test_burst_then_refill);
    RUN(test_keys_are_independent);
    RUN(test_bad_arguments);
    RUN(test_table_is_bounded_lru);
    return check_report("test_limiter");
}
