// moonpush.js — the browser (and Node) client for moonpush's WebSocket
// protocol (docs/protocol.md; this file's guide is docs/client-js.md).
//
// One ES module, no dependencies, no build step. It owns what every web team
// would otherwise write for itself and get subtly wrong: the position
// (epoch, seq) of every channel, resuming from it on each reconnect, dropping
// seqs already handed to the application, acking on ack routes only after the
// application's handlers are done, reconnecting with bounded exponential
// backoff and full jitter, obeying the server's `reconnect` frame, stopping
// on the close codes that mean "do not come back", and refreshing an
// expiring token on the open connection.
//
// Why channels are subscribed with frames and not with `channels=` in the
// URL: a channel the token may not read fails the whole handshake with 403,
// which a browser cannot even see (it reports 1006), so one bad channel would
// keep the client reconnecting forever. A `subscribe` frame gets a per-channel
// `error` instead, and the client drops that channel. Only the personal
// channel `user:<id>`, which every connection is on from the start, is
// resumed with `since.<ch>`/`epoch.<ch>` in the URL.

/** Close codes after which the client does not reconnect (see docs/client-js.md). */
export const STOP_CODES = Object.freeze([
  1002, // protocol error: a client bug, reconnecting would repeat it
  1003, // binary message: a client bug
  1007, // invalid UTF-8: a client bug
  1008, // policy violation
  1009, // message too big: the application sent an oversized frame
  4002, // replaced by a newer connection of the same user and device: two
        // tabs with one device id would otherwise replace each other forever
  4003, // kicked by an administrator
]);

const DEFAULTS = {
  minDelayMs: 500,         // backoff base: the first retry waits up to this
  maxDelayMs: 30000,       // backoff cap
  stableMs: 5000,          // a connection that lived this long resets the backoff
  openTimeoutMs: 10000,    // connect + welcome must take less than this
  ackDelayMs: 20,          // acks are cumulative: coalesce them this long
  refreshAt: 0.8,          // refresh the token at this fraction of its lifetime
  maxAttempts: Infinity,   // consecutive failed attempts before giving up
};

const EVENTS = ["message", "reset", "state", "error", "frame"];
const MAX_TIMER_MS = 2147483647; // setTimeout's limit (2^31 - 1)

// Per-channel errors that mean "this channel will never work": the channel
// is dropped from the wanted set so that reconnects do not ask again.
const FATAL_CHANNEL_ERRORS = new Set(["forbidden", "bad_channel", "too_many_subscriptions"]);
// Per-channel errors worth asking again after a pause.
const RETRY_CHANNEL_ERRORS = new Set(["rate_limited", "unavailable"]);
const SUBSCRIBE_RETRY_MS = 1000;

function isThenable(v) {
  return v !== null && (typeof v === "object" || typeof v === "function") && typeof v.then === "function";
}

function position(epoch, seq, acked = null) {
  return { epoch, seq, acked };
}

function personalChannel(user) {
  return "user:" + user;
}

export class MoonpushClient {
  /**
   * @param {string} url  ws:// or wss:// URL of a websocket route, e.g. "wss://push.example.com/ws"
   * @param {object} options  see docs/client-js.md
   */
  constructor(url, options = {}) {
    if (typeof url !== "string" || !/^wss?:\/\//i.test(url)) {
      throw new TypeError("MoonpushClient: url must be a ws:// or wss:// URL");
    }
    const o = { ...DEFAULTS, ...options };
    if (o.getToken !== undefined && typeof o.getToken !== "function") {
      throw new TypeError("MoonpushClient: getToken must be a function");
    }
    if (o.getToken === undefined && o.token !== undefined && typeof o.token !== "string") {
      throw new TypeError("MoonpushClient: token must be a string");
    }
    this._WebSocket = o.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("MoonpushClient: no WebSocket implementation (pass options.WebSocket in Node)");
    }
    this.url = url;
    this._opts = o;
    this._stopCodes = new Set(o.stopCodes || STOP_CODES);
    this._listeners = new Map(EVENTS.map((e) => [e, []]));
    this._wanted = new Set();          // channels the application asked for (not user:)
    for (const ch of o.channels || []) this._wanted.add(ch);
    // channel -> { epoch, seq: last seq handed to the listeners, acked: last
    // seq acked (ack routes) }; null where unknown
    this._pos = new Map();
    for (const [ch, p] of Object.entries(o.positions || {})) {
      if (p && Number.isInteger(p.seq) && p.seq >= 0) this._pos.set(ch, position(p.epoch ?? null, p.seq, p.seq));
    }
    this._state = "idle";
    this._running = false;             // connect() called and not close()d / stopped
    this._ws = null;
    this._gen = 0;                     // connection generation: stale callbacks compare it
    this._welcome = null;
    this._user = o.user ?? null;       // from the welcome (or options): resumes user:<id> in the URL
    this._acks = false;
    this._attempt = 0;                 // consecutive attempts without a stable connection
    this._failures = 0;                // consecutive attempts that never got a welcome
    this._openedAt = 0;
    this._afterMs = null;              // from a `reconnect` frame
    this._timers = { retry: null, open: null, refresh: null, ack: null };
    this._ackQueue = new Map();        // channel -> highest seq ready to ack (this connection)
    this._ackChains = new Map();       // channel -> { chain: Promise, pending: number }
    this._subscribing = new Set();     // channels whose subscribe frame is unanswered
    this._personalResumed = false;     // this connection's URL carried since.user:<id>
    this._refreshing = false;
    this._onOnline = () => { if (this._timers.retry !== null) this._retryNow(); };
  }

  /** "idle" | "connecting" | "open" | "closed" */
  get state() { return this._state; }

  /** The last welcome frame (null before the first). */
  get welcome() { return this._welcome; }

  /** Channels the client keeps subscribed (besides the personal user:<id>). */
  get channels() { return [...this._wanted]; }

  /** { channel: { epoch, seq } } for every channel with a known position: persist it and
   * pass it back as options.positions to resume across page loads. */
  positions() {
    const out = {};
    for (const [ch, p] of this._pos) if (p.seq !== null) out[ch] = { epoch: p.epoch, seq: p.seq };
    return out;
  }

  on(event, fn) {
    const list = this._listeners.get(event);
    if (!list) throw new TypeError("MoonpushClient: unknown event " + event + " (one of " + EVENTS.join(", ") + ")");
    if (typeof fn !== "function") throw new TypeError("MoonpushClient: listener must be a function");
    list.push(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const list = this._listeners.get(event);
    const i = list ? list.indexOf(fn) : -1;
    if (i >= 0) list.splice(i, 1);
  }

  connect() {
    if (this._running) return this;
    this._running = true;
    this._attempt = 0;
    this._failures = 0;
    this._afterMs = null;
    if (globalThis.addEventListener) globalThis.addEventListener("online", this._onOnline);
    this._open();
    return this;
  }

  /** Closes for good (until connect() again): no reconnect. */
  close(code = 1000, reason = "bye") {
    const wasRunning = this._running;
    this._stop();
    const ws = this._detach();
    if (ws) {
      try { ws.close(code, reason); } catch (_) { /* already closing */ }
    }
    if (wasRunning || ws) this._setState("closed", { code, reason, willReconnect: false });
  }

  // No more reconnecting: until connect() again.
  _stop() {
    this._running = false;
    this._afterMs = null;
    if (globalThis.removeEventListener) globalThis.removeEventListener("online", this._onOnline);
    this._clearTimers();
  }

  subscribe(channel) {
    if (typeof channel !== "string" || channel === "") throw new TypeError("MoonpushClient: channel must be a non-empty string");
    if (this._wanted.has(channel) || (this._user !== null && channel === personalChannel(this._user))) return;
    this._wanted.add(channel);
    if (this._state === "open") this._sendSubscribe(channel);
  }

  unsubscribe(channel) {
    if (!this._wanted.delete(channel)) return;
    this._pos.delete(channel);
    this._subscribing.delete(channel);
    this._ackQueue.delete(channel);
    if (this._state === "open") this._send({ type: "unsubscribe", channel });
  }

  /** Sends a frame of the application's own type to the route's on_message
   * plugins; their answers arrive as "frame" events. Returns false when not open. */
  send(frame) {
    if (this._state !== "open") return false;
    return this._send(frame);
  }

  // ---- events -------------------------------------------------------------

  // Calls every listener; returns what they returned. A listener that throws
  // is reported on "error" (an "error" listener that throws is not, to avoid
  // a loop) and does not stop the others.
  _emit(event, payload) {
    const out = [];
    for (const fn of [...this._listeners.get(event)]) {
      try {
        out.push(fn(payload));
      } catch (err) {
        if (event !== "error") this._error("handler_error", "a " + event + " listener threw: " + err, { cause: err });
      }
    }
    return out;
  }

  _error(code, message, extra = {}) {
    this._emit("error", { code, message, ...extra });
  }

  _setState(state, info = {}) {
    this._state = state;
    this._emit("state", { state, ...info });
  }

  // ---- connecting ---------------------------------------------------------

  async _open() {
    const gen = ++this._gen;
    this._setState("connecting", { attempt: this._attempt });
    let token;
    try {
      token = this._opts.getToken ? await this._opts.getToken() : this._opts.token;
    } catch (err) {
      if (gen !== this._gen || !this._running) return;
      this._error("token_error", "getToken failed: " + err, { cause: err });
      this._failed({ code: 1006, reason: "getToken failed" });
      return;
    }
    if (gen !== this._gen || !this._running) return;
    let ws;
    try {
      ws = new this._WebSocket(this._connectUrl(token));
    } catch (err) {
      this._error("connect_error", "cannot open " + this.url + ": " + err, { cause: err });
      this._failed({ code: 1006, reason: String(err) });
      return;
    }
    this._ws = ws;
    this._timers.open = setTimeout(() => {
      if (gen !== this._gen) return;
      this._error("open_timeout", "no welcome within " + this._opts.openTimeoutMs + " ms");
      this._detach();
      try { ws.close(); } catch (_) { /* never opened */ }
      this._failed({ code: 1006, reason: "open timeout" });
    }, this._opts.openTimeoutMs);
    ws.onmessage = (e) => { if (gen === this._gen) this._onFrame(e.data); };
    ws.onclose = (e) => { if (gen === this._gen) this._onClose(e.code, e.reason); };
    ws.onerror = () => { /* a close event follows with the code */ };
  }

  _connectUrl(token) {
    const params = [];
    const add = (k, v) => params.push(encodeURIComponent(k) + "=" + encodeURIComponent(v));
    if (token !== undefined && token !== null && token !== "") add("token", token);
    if (this._opts.device) add("device", this._opts.device);
    for (const [k, v] of Object.entries(this._opts.params || {})) add(k, v);
    this._personalResumed = false;
    if (this._user !== null) {
      const ch = personalChannel(this._user);
      const r = this._resumeFrom(ch);
      if (r) {
        add("since." + ch, r.since);
        if (r.epoch) add("epoch." + ch, r.epoch);
        this._personalResumed = true;
      }
    }
    if (!params.length) return this.url;
    return this.url + (this.url.includes("?") ? "&" : "?") + params.join("&");
  }

  // Where to resume a channel from: { since, epoch } or null (no position).
  // On a plain route: after the last seq handed to the listeners; a
  // position whose epoch is unknown or "" (the channel had never been
  // published when we learnt it) is then resumed by seq alone. On an ack
  // route: after the last seq acked, so that what was handled but not acked
  // comes again (and is acked, not handled, see _onMessage); without an
  // epoch or an ack of ours, the server's cursor for the device knows better.
  _resumeFrom(ch) {
    const p = this._pos.get(ch);
    if (!p) return null;
    if (this._acks) return p.epoch && p.acked !== null ? { since: p.acked, epoch: p.epoch } : null;
    if (p.seq === null) return null;
    return { since: p.seq, epoch: p.epoch || null };
  }

  _failed({ code, reason }) {
    this._failures++;
    if (this._failures >= this._opts.maxAttempts) {
      this._stop();
      this._setState("closed", { code, reason, willReconnect: false, gaveUp: true });
      return;
    }
    this._scheduleRetry(code, reason);
  }

  _onClose(code, reason) {
    const lived = this._openedAt ? Date.now() - this._openedAt : 0;
    const welcomed = this._state === "open";
    this._detach();
    this._clearTimers();
    if (!this._running) return;
    if (this._stopCodes.has(code)) {
      this._stop();
      this._setState("closed", { code, reason, willReconnect: false });
      return;
    }
    if (!welcomed) {
      this._failed({ code, reason });
      return;
    }
    if (lived >= this._opts.stableMs) this._attempt = 0;
    this._scheduleRetry(code, reason);
  }

  _scheduleRetry(code, reason) {
    let delayMs;
    if (this._afterMs !== null) {
      delayMs = this._afterMs;            // the server said when: already spread by it
      this._afterMs = null;
    } else {
      const cap = Math.min(this._opts.maxDelayMs, this._opts.minDelayMs * 2 ** this._attempt);
      delayMs = Math.round(Math.random() * cap);   // full jitter
      this._attempt++;
    }
    this._setState("closed", { code, reason, willReconnect: true, delayMs });
    if (!this._running) return;               // a state listener called close()
    this._timers.retry = setTimeout(() => {
      this._timers.retry = null;
      if (this._running) this._open();
    }, delayMs);
  }

  _retryNow() {
    clearTimeout(this._timers.retry);
    this._timers.retry = null;
    if (this._running) this._open();
  }

  // Forgets the current socket: its late events are ignored from now on.
  _detach() {
    const ws = this._ws;
    this._ws = null;
    this._gen++;
    this._ackQueue.clear();             // acks belong to a connection (chains do not: see _ackAfter)
    this._subscribing.clear();
    this._refreshing = false;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
    }
    return ws;
  }

  _clearTimers() {
    for (const k of Object.keys(this._timers)) {
      clearTimeout(this._timers[k]);
      this._timers[k] = null;
    }
  }

  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  // ---- frames from the server ---------------------------------------------

  _onFrame(data) {
    let f;
    try {
      f = JSON.parse(typeof data === "string" ? data : String(data));
    } catch (err) {
      this._error("bad_frame", "the server sent a frame that is not JSON", { frame: String(data).slice(0, 200) });
      return;
    }
    if (f === null || typeof f !== "object") {
      this._error("bad_frame", "the server sent a frame that is not an object", { frame: String(data).slice(0, 200) });
      return;
    }
    switch (f.type) {
      case "welcome": return this._onWelcome(f);
      case "message": return this._onMessage(f);
      case "reset": return this._onReset(f);
      case "subscribed": return this._onSubscribed(f);
      case "unsubscribed": return;
      case "reconnect":
        if (typeof f.after_ms === "number" && f.after_ms >= 0) this._afterMs = Math.min(f.after_ms, MAX_TIMER_MS);
        return;
      case "refreshed": return this._onRefreshed(f);
      case "error": return this._onErrorFrame(f);
      default:
        this._emit("frame", f);
    }
  }

  _onWelcome(f) {
    clearTimeout(this._timers.open);
    this._timers.open = null;
    const personal = personalChannel(f.user);
    if (this._user !== null && this._user !== f.user) {
      // another identity (a new token): positions of the old personal channel do not apply
      this._pos.delete(personalChannel(this._user));
    }
    this._user = f.user;
    this._acks = !!f.acks;
    this._welcome = f;
    this._openedAt = Date.now();
    this._failures = 0;
    this._wanted.delete(personal);
    const p = this._pos.get(personal);
    const epoch = (f.epochs && f.epochs[personal]) ?? null;
    if (!p || p.seq === null) this._pos.set(personal, position(epoch, null));
    this._setState("open", { welcome: f });
    if (this._state !== "open") return;       // a listener closed us
    // On a plain route the server replays nothing without since: learn where
    // the personal channel stands (no position yet), or resume it now (a
    // position from options.positions that the URL could not carry, since
    // the user was not known yet). On an ack route the device cursor did it.
    if (!this._acks && !this._personalResumed) this._sendSubscribe(personal);
    for (const ch of this._wanted) this._sendSubscribe(ch);
    this._scheduleRefresh(f.expires_in_ms);
  }

  // resume = false: a plain subscribe to an already subscribed channel, only
  // to learn its epoch (plain routes answer it with `subscribed` and nothing else).
  _sendSubscribe(ch, resume = true) {
    const frame = { type: "subscribe", channel: ch };
    const r = resume ? this._resumeFrom(ch) : null;
    if (r) {
      frame.since = r.since;
      if (r.epoch) frame.epoch = r.epoch;
    }
    this._subscribing.add(ch);
    this._send(frame);
  }

  // Frames about a channel the application left meanwhile are ignored.
  _keeps(ch) {
    return this._wanted.has(ch) || ch === personalChannel(this._user);
  }

  _onSubscribed(f) {
    const ch = f.channel;
    this._subscribing.delete(ch);
    if (!this._keeps(ch)) return;
    const p = this._pos.get(ch);
    if (!p || p.seq === null) {
      // Without since. On a plain route every message up to f.seq was queued
      // before this answer, so f.seq is our position. On an ack route the
      // server replays what the device has not acked after this frame:
      // only the epoch is known yet.
      this._pos.set(ch, position(f.epoch, this._acks ? null : f.seq));
    } else if (!p.epoch && f.epoch) {
      // We resumed by seq alone; a replay (if any) follows and a reset
      // frame corrects the epoch if it did not match.
      p.epoch = f.epoch;
    }
  }

  _onReset(f) {
    const ch = f.channel;
    if (!this._keeps(ch)) return;
    // What follows is the retained history from first_seq (nothing for "ahead").
    const seq = f.reason === "ahead" ? f.last_seq : Math.max(0, Math.min(f.first_seq - 1, f.last_seq));
    this._pos.set(ch, position(f.epoch, seq, seq));
    this._emit("reset", { channel: ch, epoch: f.epoch, first_seq: f.first_seq, last_seq: f.last_seq, reason: f.reason });
  }

  _onMessage(f) {
    const ch = f.channel;
    if (!this._keeps(ch)) return;
    const gen = this._gen;
    let p = this._pos.get(ch);
    if (!p) {
      p = position(null, null);
      this._pos.set(ch, p);
    }
    if (p.seq !== null && f.seq <= p.seq) {
      // Already handed to the application: a resend racing our ack, or a replay.
      if (this._acks) this._ackAfter(ch, f.seq, gen, []);
      return;
    }
    p.seq = f.seq;
    if (p.epoch === "" && !this._acks && !this._subscribing.has(ch)) {
      // The channel had no epoch when we learnt it: ask for the one it has now.
      this._sendSubscribe(ch, false);
    }
    const results = this._emit("message", { channel: ch, seq: f.seq, id: f.id, data: f.data });
    if (this._acks && gen === this._gen) this._ackAfter(ch, f.seq, gen, results.filter(isThenable));
  }

  // ---- acks -----------------------------------------------------------------

  // Acks seq on channel once every promise a handler returned for it (and for
  // every earlier seq of the channel) has settled. The chain outlives the
  // connection, so that a newer seq's cumulative ack on the next connection
  // still waits for an older handler; the ack itself belongs to the
  // connection the seq came on and is dropped if that one is gone (the
  // server sends the seq again, or a later ack covers it). So is an ack
  // whose channel was reset (or left) meanwhile: it names an old position.
  _ackAfter(ch, seq, gen, promises) {
    const p = this._pos.get(ch);
    let c = this._ackChains.get(ch);
    if (!promises.length && (!c || c.pending === 0)) {
      this._queueAck(ch, seq, gen, p);
      return;
    }
    if (!c) {
      c = { chain: Promise.resolve(), pending: 0 };
      this._ackChains.set(ch, c);
    }
    c.pending++;
    c.chain = c.chain
      .then(() => Promise.allSettled(promises))
      .then((settled) => {
        c.pending--;
        for (const s of settled) {
          if (s.status === "rejected") {
            this._error("handler_error", "a message listener's promise rejected: " + s.reason, { cause: s.reason, channel: ch, seq });
          }
        }
        this._queueAck(ch, seq, gen, p);
      });
  }

  _queueAck(ch, seq, gen, p) {
    if (gen !== this._gen || this._pos.get(ch) !== p) return;
    const prev = this._ackQueue.get(ch);
    if (prev === undefined || seq > prev) this._ackQueue.set(ch, seq);
    if (this._timers.ack === null) {
      this._timers.ack = setTimeout(() => this._flushAcks(gen), this._opts.ackDelayMs);
    }
  }

  _flushAcks(gen) {
    this._timers.ack = null;
    if (gen !== this._gen) return;
    for (const [channel, seq] of this._ackQueue) {
      if (!this._send({ type: "ack", channel, seq })) break;
      const p = this._pos.get(channel);
      if (p && (p.acked === null || seq > p.acked)) p.acked = seq;
    }
    this._ackQueue.clear();
  }

  // ---- errors from the server -------------------------------------------------

  _onErrorFrame(f) {
    const ch = f.channel;
    if (ch !== undefined && this._subscribing.has(ch)) {
      this._subscribing.delete(ch);
      if (FATAL_CHANNEL_ERRORS.has(f.code)) {
        this._wanted.delete(ch);
        this._pos.delete(ch);
      } else if (RETRY_CHANNEL_ERRORS.has(f.code)) {
        const gen = this._gen;
        setTimeout(() => {
          if (gen === this._gen && this._wanted.has(ch)) this._sendSubscribe(ch);
        }, SUBSCRIBE_RETRY_MS * (0.5 + Math.random()));
      }
    }
    if (ch === undefined && this._refreshing && (f.code === "unauthorized" || f.code === "forbidden")) {
      // The refresh was refused: the server closes with 4005 at expiry and
      // the reconnect asks getToken() again.
      this._refreshing = false;
      this._error(f.code, f.message, { refresh: true });
      return;
    }
    this._error(f.code, f.message, ch !== undefined ? { channel: ch } : {});
  }

  // ---- token refresh ----------------------------------------------------------

  _scheduleRefresh(expiresInMs) {
    clearTimeout(this._timers.refresh);
    this._timers.refresh = null;
    if (typeof expiresInMs !== "number" || !this._opts.getToken) return;
    const gen = this._gen;
    const at = Math.min(MAX_TIMER_MS, Math.max(0, expiresInMs * this._opts.refreshAt));
    this._timers.refresh = setTimeout(() => this._refresh(gen), at);
  }

  async _refresh(gen) {
    this._timers.refresh = null;
    let token;
    try {
      token = await this._opts.getToken();
    } catch (err) {
      if (gen === this._gen) this._error("token_error", "getToken failed: " + err, { cause: err, refresh: true });
      return;
    }
    if (gen !== this._gen) return;
    this._refreshing = true;
    this._send({ type: "refresh", token });
  }

  _onRefreshed(f) {
    this._refreshing = false;
    this._scheduleRefresh(f.expires_in_ms);
  }
}

export default MoonpushClient;
