/* Unit tests for the pure WebSocket helpers: the accept key and UTF-8. */
#include <string.h>

#include "check.h"
#include "server.h"
#include "ws.h"

mp_server mp;

static void test_accept_key_rfc6455_example(void)
{
    char out[29];
    CHECK(mp_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out) == 0);
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
}

static void test_accept_key_rejects_bad_keys(void)
{
    char out[29];
    CHECK(mp_ws_accept_key("", out) < 0);
    CHECK(mp_ws_accept_key("short", out) < 0);
    CHECK(mp_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ", out) < 0);           /* 22 chars */
    CHECK(mp_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==x", out) < 0);
    CHECK(mp_ws_accept_key("!!!!!!!!!!!!!!!!!!!!!!==", out) < 0);
    CHECK(mp_ws_accept_key("dGhlIHNhbXBsZSBub25jZUFB", out) < 0);          /* 18 bytes */
}

int main(void)
{
    RUN(test_accept_key_rfc6455_example);
    RUN(test_accept_key_rejects_bad_keys);
    return check_report("test_ws");
}
