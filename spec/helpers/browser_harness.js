// The page side of the browser specs (served as /harness.js by
// spec/helpers/browser.lua, loaded by /harness.html). It creates real
// MoonpushClient objects and records everything they do on one timeline, so
// that a spec can check order ("the ack left after the handler returned")
// as well as content. Specs drive it with page:js("... return harness.x()").
import { MoonpushClient, STOP_CODES } from "/moonpush.js";

const t0 = performance.now();
const now = () => Math.round((performance.now() - t0) * 10) / 10;

// A WebSocket that writes what crosses the wire to rec.log, so that specs
// see the server's own frames (resends included) and the client's acks.
function recordingWebSocket(rec) {
  return class RecordingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      rec.connects.push(url);
      rec.log.push({ t: now(), ev: "connect", url });
      this.addEventListener("message", (e) => rec.log.push({ t: now(), ev: "in", frame: JSON.parse(e.data) }));
      this.addEventListener("close", (e) => rec.log.push({ t: now(), ev: "close", code: e.code, reason: e.reason }));
    }
    send(data) {
      rec.log.push({ t: now(), ev: "out", frame: JSON.parse(data) });
      super.send(data);
    }
  };
}

const clients = new Map();

const harness = {
  STOP_CODES,
  MoonpushClient,

  // Creates (not connects) a client named `name`. opts are MoonpushClient
  // options (JSON); besides:
  //   tokens: [..]       getToken() answers these in turn (the last repeats);
  //                      while harness.hold(name) is in force it waits first
  //   handlerDelayMs: N  the message listener returns a promise settled N ms later
  create(name, url, opts = {}) {
    const rec = { messages: [], resets: [], states: [], errors: [], frames: [], log: [], connects: [],
                  tokenCalls: 0, held: 0, gate: null };
    const o = { ...opts, WebSocket: recordingWebSocket(rec) };
    delete o.tokens;
    delete o.handlerDelayMs;
    if (opts.tokens) {
      o.getToken = async () => {
        if (rec.gate) {
          rec.held++;
          rec.log.push({ t: now(), ev: "held" });
          await rec.gate.promise;
        }
        const t = opts.tokens[Math.min(rec.tokenCalls, opts.tokens.length - 1)];
        rec.tokenCalls++;
        rec.log.push({ t: now(), ev: "token", token: t });
        return t;
      };
    }
    const c = new MoonpushClient(url, o);
    c.on("message", (m) => {
      rec.messages.push(m);
      rec.log.push({ t: now(), ev: "message", channel: m.channel, seq: m.seq });
      const done = () => rec.log.push({ t: now(), ev: "handled", channel: m.channel, seq: m.seq });
      if (!opts.handlerDelayMs) return done();
      return new Promise((resolve) => setTimeout(() => { done(); resolve(); }, opts.handlerDelayMs));
    });
    c.on("reset", (r) => { rec.resets.push(r); rec.log.push({ t: now(), ev: "reset", ...r }); });
    c.on("state", (s) => {
      const { welcome, ...rest } = s;
      rec.states.push({ t: now(), ...rest });
      rec.log.push({ t: now(), ev: "state", ...rest });
    });
    c.on("error", (e) => rec.errors.push({ code: e.code, message: e.message, channel: e.channel, refresh: e.refresh }));
    c.on("frame", (f) => rec.frames.push(f));
    clients.set(name, { c, rec });
    return name;
  },

  client(name) { return clients.get(name).c; },

  // Holds the client's next getToken() calls (so its reconnect) until release(name).
  hold(name) {
    const rec = clients.get(name).rec;
    let release;
    const promise = new Promise((r) => { release = r; });
    rec.gate = { promise, release };
  },

  release(name) {
    const rec = clients.get(name).rec;
    if (rec.gate) rec.gate.release();
    rec.gate = null;
  },

  rec(name) { return clients.get(name).rec; },

  // Seqs delivered to the application on a channel, in delivery order.
  seqs(name, channel) {
    return clients.get(name).rec.messages.filter((m) => m.channel === channel).map((m) => m.seq);
  },

  // Frames of `type` the server sent (every copy, resends included).
  received(name, type) {
    return clients.get(name).rec.log.filter((e) => e.ev === "in" && e.frame.type === type).map((e) => e.frame);
  },

  sent(name, type) {
    return clients.get(name).rec.log.filter((e) => e.ev === "out" && e.frame.type === type).map((e) => e.frame);
  },

  // Resolves when fn() is truthy (polled every 10 ms); rejects after ms with
  // `what` and a summary of every client, so a failing spec says why.
  waitFor(fn, ms, what) {
    return new Promise((resolve, reject) => {
      const until = performance.now() + ms;
      const tick = () => {
        let v;
        try { v = fn(); } catch (err) { reject(err); return; }
        if (v) { resolve(v); return; }
        if (performance.now() > until) {
          reject(new Error((what || "condition") + " not within " + ms + " ms; " + harness.summary()));
          return;
        }
        setTimeout(tick, 10);
      };
      tick();
    });
  },

  sleep(ms) { return new Promise((r) => setTimeout(r, ms)); },

  summary() {
    const out = [];
    for (const [name, { c, rec }] of clients) {
      out.push(name + ": state=" + c.state + " connects=" + rec.connects.length + " messages=" + rec.messages.length +
        " states=" + JSON.stringify(rec.states.slice(-6).map((s) => [s.state, s.code])) +
        " errors=" + JSON.stringify(rec.errors.slice(-3)));
    }
    return out.join("; ");
  },

  closeAll() {
    for (const { c } of clients.values()) c.close();
    clients.clear();
  },
};

window.harness = harness;
