/* Harness: WebSocket input (ws.c mp_ws_feed, wslay underneath) on an
 * upgraded connection: framing, masking, fragmentation, control frames,
 * close codes, UTF-8, sizes, and the client frames the bytes carry.
 *
 * Input: one byte that picks the route and how the stream is cut into reads
 * (bit 7: the acks route /ws/reliable, else /ws; bits 0-6: the read-size
 * seed of fuzz_read_size), then the raw bytes the client sends after its
 * handshake. The handshake itself is fixed. */
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fuzz_init(0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    mp_conn *c = data[0] & 0x80 ? fuzz_upgrade("/ws/reliable?channels=news", "till-1")
                                : fuzz_upgrade("/ws?channels=news", "alice-phone");
    fuzz_feed_split(c, data + 1, size - 1, data[0] & 0x7f);
    fuzz_end();
    return 0;
}
