/* Harness: the HTTP request reader (http.c) and everything a request can
 * reach: routing, health, publish, history, presence, metrics and the
 * WebSocket handshake, with the bundled plugins of fuzz/fuzz.lua.
 *
 * Input: one byte that picks how the stream is cut into reads
 * (fuzz_read_size: 0 = one read), then the bytes a client sends, e.g.
 * "\0GET /health HTTP/1.1\r\n\r\n". Pipelined requests, upgrades followed by
 * WebSocket bytes and partial requests are all fair. */
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fuzz_init(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    mp_conn *c = fuzz_connect();
    fuzz_feed_split(c, data + 1, size - 1, data[0]);
    fuzz_end();
    return 0;
}
