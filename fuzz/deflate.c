/* Harness: permessage-deflate's two inputs from clients (deflate.c): the
 * Sec-WebSocket-Extensions offer and the compressed messages they send.
 *
 * Input: the first byte picks what the rest is.
 *   'n'  an offer header value (up to the first NUL): the answer, if any,
 *        must be one of the two the server gives
 *   else compressed message bytes: inflated into at most 4096 bytes (a
 *        zip bomb must stop there); what inflates is compressed again and
 *        must come back the same
 * No server state is needed: these are pure functions over their input.
 */
#include <stdlib.h>
#include <string.h>

#include "deflate.h"
#include "frame.h"
#include "fuzz.h"

#define MAX_OUT 4096

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    return 0;
}

static void offer(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return;
    memcpy(s, data, size);
    s[size] = '\0';
    char resp[128];
    if (mp_deflate_negotiate(s, resp, sizeof resp) &&
        strncmp(resp, "permessage-deflate; server_no_context_takeover; client_no_context_takeover", 74) != 0)
        abort();
    free(s);
}

static void message(const uint8_t *data, size_t size)
{
    uint8_t *out = NULL;
    size_t len = 0;
    int rc = mp_inflate_message(data, size, MAX_OUT, &out, &len);
    if (rc != MP_INFLATE_OK) {
        if (out)
            abort();
        return;
    }
    if (len > MAX_OUT)
        abort();
    mp_frame *f = mp_frame_ws(MP_WS_TEXT, out, len);
    mp_frame *z = f ? mp_deflate_frame(f, 1 + (int)(size % 9)) : NULL;
    if (z) {
        size_t zlen;
        const uint8_t *zp = mp_frame_ws_payload(z, &zlen);
        uint8_t *back = NULL;
        size_t blen = 0;
        if (mp_inflate_message(zp, zlen, MAX_OUT, &back, &blen) != MP_INFLATE_OK || blen != len ||
            memcmp(back, out, len) != 0)
            abort();
        free(back);
    }
    mp_frame_unref(f);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] == 'n')
        offer(data + 1, size - 1);
    else
        message(data + 1, size - 1);
    return 0;
}
