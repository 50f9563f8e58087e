/* ws_int.h — the WebSocket module's private header: the session state and
 * the calls its pieces (ws.c, ws_handshake.c, ws_session.c, ws_commands.c)
 * share. Nothing outside ws*.c includes it; the rest of the server uses
 * ws.h.
 */
#ifndef MP_WS_INT_H
#define MP_WS_INT_H

#include <jansson.h>
#include <stdint.h>
#include <wslay/wslay.h>

#include "deadlines.h"
#include "delivery.h"
#include "devices.h"
#include "identity.h"
#include "lua_host.h"
#include "ws.h"

/* Input state, only while a client message is arriving (see ws.h): an idle
 * connection holds neither this nor a wslay context. */
typedef struct mp_ws_reader {
    wslay_event_context_ptr wslay;
    uint64_t fed;                   /* bytes handed to this wslay context */
    uint64_t framed;                /* bytes of frames it completed */
    uint64_t frame_size;            /* header + payload of the frame in progress */
    uint64_t msg_bytes;             /* payload so far of the message in progress */
    uint8_t in_fragment;            /* a fragmented message is not finished */
} mp_ws_reader;

/* One allocation per connection: the session, then the strings of its
 * identity (user, device, kind, allow patterns) copied out of what the auth
 * hook returned. The list of channels asked for at connect is not kept: it is
 * spent once join_channels has run. */
typedef struct mp_ws {
    mp_ws_reader *rd;               /* NULL while idle */
    mp_sub *subs;
    mp_acks *acks;                  /* ack routes only */
    mp_conn *conn;
    uint16_t nsubs;                 /* subscriptions besides user:<id> */
    int16_t route_index;            /* the route it connected through; -1 if gone */
    /* One byte of flags: a byte more would cost 8 per connection (padding). */
    uint8_t in_recv : 1;            /* wslay_event_recv is on the stack */
    uint8_t detached : 1;           /* the connection let go while in_recv */
    uint8_t deflate : 1;            /* permessage-deflate negotiated (deflate.h) */
    uint16_t device_tag;            /* of its (user, device) hash: index probes compare it first */
    mp_deadline expiry;             /* when the identity expires (on the heap only if it does) */
    mp_identity ident;              /* strings in data[] below; no subscribe list */
    char data[];
} mp_ws;

/* ---- ws.c --------------------------------------------------------------- */

/* Every WebSocket connection by (user, device), for the duplicate check:
 * added with c->ws at the handshake, removed in mp_ws_session_free. */
extern mp_devices devices;

/* Queues {"type":"error",...} (channel may be NULL). */
void send_error(mp_conn *c, const char *code, const char *message, const char *channel);

/* Whether the session's route (if it still exists) has hook. */
int route_has(const mp_ws *ws, unsigned hook);

/* What the event hooks see of c. */
mp_conn_info conn_info(const mp_conn *c);

/* Puts the session's deadline at `expires` (unix seconds; 0: never);
 * expires_in_ms: how long until then, -1 for never. */
int set_expiry(mp_ws *ws, double expires);
json_int_t expires_in_ms(const mp_ws *ws);

/* ---- ws_session.c ------------------------------------------------------- */

/* A session holding a copy of id's user, device, kind and allow patterns
 * (id itself stays the caller's). NULL if out of memory. */
mp_ws *session_new(const mp_identity *id);
void session_destroy(mp_ws *ws);

/* ---- ws_commands.c ------------------------------------------------------ */

/* A client's text message, as wslay delivered it whole. */
void handle_text(mp_conn *c, const uint8_t *msg, size_t len);

/* An epoch a client sends back (a frame or the query): see ws_commands.c. */
int epoch_valid(const char *e);

#endif
