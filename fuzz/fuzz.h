/* fuzz.h — what every fuzz harness shares: the least process state of a
 * running server, and real connections to feed bytes to.
 *
 * The harnesses drive the real code (http.c, ws.c, publish.c, lua_host.c and
 * everything behind them), linked from the same objects as ./moonpush. Only
 * main()'s start-up is redone here: the global `mp`, its libev loop, a memory
 * store, the routes of fuzz/fuzz.lua (one route of each kind, the bundled
 * plugins and fuzz/plugins), and a listener on a free loopback port.
 *
 * A connection is made the real way: a client socket connects and net.c's
 * accept callback creates the server side. Input bytes are then handed to
 * the connection as net.c's read callback would hand them (mp_http_feed
 * while it speaks HTTP, mp_ws_feed once upgraded), one "read" at a time,
 * and between two reads the loop runs one iteration, so queued answers are
 * written, closes proceed and dead connections are freed, as on a live
 * server. What the server writes is read and dropped on the client side.
 *
 * Each input ends with fuzz_end(): every client socket is reset, the loop runs
 * until the server has freed every connection, and the store is replaced by
 * a fresh one, so no input depends on an earlier one. A connection left over
 * after that is a bug: fuzz_end() aborts, which the fuzzer reports.
 *
 * Harnesses are built twice (see docs/fuzzing.md): with libFuzzer (clang,
 * `make fuzz`), and with gcc and tests/fuzz_replay.c, a plain main() that
 * replays the corpus and the regressions in `make test`.
 */
#ifndef MP_FUZZ_H
#define MP_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "net.h"

/* libFuzzer's entry points, defined by each harness. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Loads fuzz/fuzz.lua (from $MOONPUSH_ROOT, default "."), creates the loop
 * and the store, listens on a free loopback port. Logs go to /dev/null in
 * logfmt, or JSON lines if json is set: every line is still formatted. */
void fuzz_init(int json_logs);

/* Reports a broken invariant and aborts (the fuzzer keeps the input). */
void fuzz_fail(const char *what) __attribute__((noreturn));

/* The repository root the harness reads its files from: $MOONPUSH_ROOT, or
 * ".". Also points MOONPUSH_LUA_DIR at its lua/ unless that is set. */
const char *fuzz_root(void);

/* Connects a client and returns the server's side of it (HTTP state). */
mp_conn *fuzz_connect(void);

/* Connects a client and completes a WebSocket handshake on target (path
 * and query, e.g. "/ws?channels=news") with `Authorization: Bearer token`.
 * Returns the upgraded connection; aborts if the server refused. */
mp_conn *fuzz_upgrade(const char *target, const char *token);

/* Hands one read's worth of bytes to c as net.c's read callback would, then
 * runs the loop once. Returns 0 while c can take more input, -1 once it is
 * closing or gone (the caller stops feeding it). */
int fuzz_feed(mp_conn *c, const uint8_t *data, size_t len);

/* Feeds data to c in reads whose sizes come from seed (see fuzz_read_size).
 * Returns like fuzz_feed. */
int fuzz_feed_split(mp_conn *c, const uint8_t *data, size_t len, uint8_t seed);

/* The size of the next read of a stream with `left` bytes to go: seed 0 is
 * everything at once; any other seed cuts the stream into reads of 1 to
 * seed + 1 bytes, a fixed pseudo-random sequence per seed (*state starts
 * at 0). */
size_t fuzz_read_size(uint8_t seed, size_t left, uint32_t *state);

/* Runs one loop iteration without blocking, then drains the clients. */
void fuzz_pump(void);

/* Ends the input: see the top of this file. */
void fuzz_end(void);

/* Frees everything main() frees at exit, once (fuzz_init registers it with
 * atexit, so that LeakSanitizer sees only what an input leaked). */
void fuzz_teardown(void);

#endif
