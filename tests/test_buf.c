/* Unit tests for mp_buf, the growable byte buffer (src/buf.c). */
#include <string.h>

#include "buf.h"
#include "check.h"
#include "server.h"

mp_server mp;

static void test_appends_grow_and_stay_terminated(void)
{
    mp_buf b = {0};
    char chunk[1000];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 10; i++)
        CHECK(mp_buf_append(&b, chunk, sizeof chunk) == 0);
    CHECK(b.len == 10000 && b.cap > b.len && !b.failed);
    CHECK(b.s[b.len] == '\0' && b.s[0] == 'x' && b.s[b.len - 1] == 'x');
    mp_buf_free(&b);
    CHECK(b.s == NULL && b.len == 0 && b.cap == 0);
}

static void test_empty_append_gives_an_empty_string(void)
{
    mp_buf b = {0};
    CHECK(mp_buf_append(&b, "", 0) == 0);
    CHECK(b.s != NULL && b.len == 0 && b.s[0] == '\0');
    mp_buf_free(&b);
}

static void test_printf_formats_across_growth(void)
{
    mp_buf b = {0};
    for (int i = 0; i < 100; i++)
        CHECK(mp_buf_printf(&b, "%d,", i) == 0);
    CHECK(strncmp(b.s, "0,1,2,", 6) == 0);
    CHECK(strcmp(b.s + b.len - 3, "99,") == 0);
    char big[600];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    size_t before = b.len;
    CHECK(mp_buf_printf(&b, "[%s]", big) == 0);   /* longer than the room left */
    CHECK(b.len == before + 601 && b.s[before] == '[' && b.s[b.len - 1] == ']');
    mp_buf_free(&b);
}

static void test_failure_is_sticky_until_reset(void)
{
    mp_buf b = {0};
    CHECK(mp_buf_append(&b, "ab", 2) == 0);
    CHECK(mp_buf_append(&b, "x", (size_t)-1 / 2) < 0);   /* no such size: fails, appends nothing */
    CHECK(b.failed && b.len == 2);
    CHECK(mp_buf_append(&b, "c", 1) < 0 && mp_buf_printf(&b, "d") < 0);
    CHECK(b.len == 2 && strcmp(b.s, "ab") == 0);
    mp_buf_reset(&b);
    CHECK(!b.failed && b.len == 0 && b.s[0] == '\0');
    CHECK(mp_buf_append(&b, "e", 1) == 0 && strcmp(b.s, "e") == 0);
    mp_buf_free(&b);
}

int main(void)
{
    RUN(test_appends_grow_and_stay_terminated);
    RUN(test_empty_append_gives_an_empty_string);
    RUN(test_printf_formats_across_growth);
    RUN(test_failure_is_sticky_until_reset);
    return check_report("test_buf");
}
