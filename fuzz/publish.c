/* Harness: publish-body validation (publish.c) and what a valid body leads
 * to: route hooks (route_default), the store, and fanout to subscribers in
 * the standard envelope and through a format hook (format_pos_legacy).
 *
 * Input: a publish body, as is. It is POSTed with a valid publisher token
 * to /publish, then to /publish/routed, on one keep-alive connection, while
 * two WebSocket clients listen on the channels a body is likely to name. */
#include <stdio.h>

#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fuzz_init(0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const paths[] = {"/publish", "/publish/routed"};
    fuzz_upgrade("/ws/pos?channels=news,orders:1,backend:news,backend:orders:1", "till-2");
    fuzz_upgrade("/ws?channels=news,orders:1", "bob");
    mp_conn *c = fuzz_connect();
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char head[256];
        int n = snprintf(head, sizeof head,
                         "POST %s HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Bearer publisher-secret\r\n"
                         "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", paths[i], size);
        if (fuzz_feed(c, (const uint8_t *)head, (size_t)n) < 0)
            break;
        /* No zero-length read: to http_parser that is the end of the stream. */
        if (size > 0 && fuzz_feed(c, data, size) < 0)
            break;
    }
    fuzz_end();
    return 0;
}
