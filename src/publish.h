/* publish.h — the HTTP publish API (POST on a `publish` route).
 *
 * Validates the whole request (auth, JSON, every item of a batch) before
 * publishing anything, so a batch is all-or-nothing; then hands each item to
 * the hub and answers with the channel, seq and id of each. See
 * docs/protocol.md for the body format and every error.
 */
#ifndef MP_PUBLISH_H
#define MP_PUBLISH_H

#include "http.h"

void mp_publish_handle(mp_http_req *req);

#endif
