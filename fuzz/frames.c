/* Harness: client JSON frames through ws.c's command handling: subscribe,
 * unsubscribe, ack, resume with since/epoch, unknown types (on_message),
 * the per-message rate limit, and the replays and acks they start.
 *
 * Input: lines. Each line is the payload of one client text frame, sent
 * masked, whole, in a read of its own. Two kinds of line are directives:
 *   #acks                        (first line only) connect on the acks route
 *                                /ws/reliable as till-1, not on /ws as alice
 *   #publish <channel> <json>    publish data on channel through the hub, as
 *                                a publish request would (invalid JSON or
 *                                channel: the line is skipped)
 * e.g.
 *   #publish news {"n":1}
 *   {"type":"subscribe","channel":"news","since":0}
 *   {"type":"ack","channel":"news","seq":1}
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "hub.h"

#define MAX_LINE 8192   /* above limits.max_message_bytes: oversize is an input too */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fuzz_init(1);
    return 0;
}

/* One masked text frame holding payload, fed as one read. */
static int send_text(mp_conn *c, const uint8_t *payload, size_t len)
{
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    static uint8_t frame[MAX_LINE + 14];
    size_t h = 0;
    frame[h++] = 0x81;
    if (len < 126) {
        frame[h++] = (uint8_t)(0x80 | len);
    } else {
        frame[h++] = 0x80 | 126;
        frame[h++] = (uint8_t)(len >> 8);
        frame[h++] = (uint8_t)len;
    }
    memcpy(frame + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < len; i++)
        frame[h + i] = payload[i] ^ mask[i % 4];
    return fuzz_feed(c, frame, h + len);
}

/* "#publish <channel> <json>": as publish.c, the data goes out compact. */
static void publish_line(const char *line, size_t len)
{
    char buf[MAX_LINE + 1];
    memcpy(buf, line, len);
    buf[len] = '\0';
    char *name = buf + strlen("#publish "), *sp = strchr(name, ' ');
    if (!sp)
        return;
    *sp = '\0';
    json_t *data = json_loads(sp + 1, JSON_DECODE_ANY, NULL);
    char *text = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15)) : NULL;
    if (text && mp_hub_valid_name(name, strlen(name))) {
        mp_publish_result r;
        mp_hub_publish(name, text, strlen(text), NULL, &r);
    }
    free(text);
    json_decref(data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    int acks = size >= 5 && memcmp(p, "#acks", 5) == 0;
    mp_conn *c = acks ? fuzz_upgrade("/ws/reliable", "till-1") : fuzz_upgrade("/ws", "alice-phone");
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        if (len > MAX_LINE)
            len = MAX_LINE;
        if (len >= 9 && memcmp(p, "#publish ", 9) == 0)
            publish_line(p, len);
        else if (!(len == 5 && memcmp(p, "#acks", 5) == 0) && send_text(c, (const uint8_t *)p, len) < 0)
            break;
        fuzz_pump();
        p = nl ? nl + 1 : end;
    }
    fuzz_end();
    return 0;
}
