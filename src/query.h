/* query.h — read-only HTTP endpoints: a channel's history and a user's
 * presence. Both run the route's auth chain; the identity's channel
 * patterns decide what it may read (`user:<id>` for presence). See
 * docs/protocol.md for parameters and answers. */
#ifndef MP_QUERY_H
#define MP_QUERY_H

#include "http.h"

/* GET <history route>?channel=C[&since=N][&limit=M] */
void mp_query_history(mp_http_req *req);

/* GET <presence route>?user=U */
void mp_query_presence(mp_http_req *req);

#endif
