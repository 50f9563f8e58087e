// The demo page's logic: one MoonpushClient (clients/js/moonpush.js) showing
// what it receives, and a form that publishes.
//
// Settings come from the query string (?server=http://127.0.0.1:8080&token=
// alice-laptop&channels=news&publisher=publisher-secret), else from what was
// used last (localStorage), else the tokens of examples/moonpush.lua. The
// client's positions are kept in localStorage too, so a reload resumes where
// the page was (watch for `reset` lines after restarting the server).
//
// Publishing from a browser is for this demo only: in production the
// backend publishes and the publisher token never reaches a browser.
import { MoonpushClient } from "../../clients/js/moonpush.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const saved = JSON.parse(localStorage.getItem("moonpush-demo") || "{}");
const DEFAULTS = { server: "http://127.0.0.1:8080", token: "alice-laptop", channels: "news", publisher: "publisher-secret" };
const MAX_LINES = 200;

function setting(name) {
  return query.get(name) ?? saved[name] ?? DEFAULTS[name];
}

for (const name of ["server", "token", "channels", "publisher"]) $(name).value = setting(name);

function settings() {
  return {
    server: $("server").value.trim().replace(/\/+$/, ""),
    token: $("token").value.trim(),
    channels: $("channels").value.split(",").map((c) => c.trim()).filter(Boolean),
    publisher: $("publisher").value.trim(),
  };
}

function wsUrl(server) {
  return server.replace(/^http/i, "ws") + "/ws";
}

function positionsKey(s) {
  return "moonpush-demo-positions:" + s.server + ":" + s.token;
}

// ---- the list ---------------------------------------------------------------

function line(text, meta, cls) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  const m = document.createElement("span");
  m.className = "meta";
  m.textContent = new Date().toLocaleTimeString() + "  " + meta + "  ";
  li.append(m, text);
  const list = $("messages");
  list.prepend(li);
  while (list.children.length > MAX_LINES) list.lastChild.remove();
}

function showState(s) {
  const el = $("status");
  el.className = "status " + s.state;
  let text = s.state;
  if (s.state === "open") text += " as " + s.welcome.user + "/" + s.welcome.device;
  if (s.state === "closed" && s.code) text += " (" + s.code + (s.reason ? " " + s.reason : "") + ")";
  if (s.state === "closed" && s.willReconnect) text += ", again in " + (s.delayMs / 1000).toFixed(1) + " s";
  el.textContent = text;
}

// ---- the client ---------------------------------------------------------------

let client = null;

function connect() {
  const s = settings();
  localStorage.setItem("moonpush-demo", JSON.stringify(s));
  if (client) client.close();
  const key = positionsKey(s);
  client = new MoonpushClient(wsUrl(s.server), {
    token: s.token,
    channels: s.channels,
    positions: JSON.parse(localStorage.getItem(key) || "{}"),
  });
  client.on("state", (st) => {
    showState(st);
    if (st.state === "closed" && st.code && !st.willReconnect) line("stopped: close " + st.code + " " + (st.reason || ""), "state", "event");
  });
  client.on("message", (m) => {
    line(JSON.stringify(m.data), m.channel + " #" + m.seq);
    localStorage.setItem(key, JSON.stringify(client.positions()));
  });
  client.on("reset", (r) => {
    const held = r.last_seq >= r.first_seq ? "the server holds " + r.first_seq + ".." + r.last_seq : "the server holds nothing";
    line("reset (" + r.reason + "): could not resume, " + held, r.channel, "event");
  });
  client.on("error", (e) => line(e.code + ": " + e.message, e.channel || "error", "event"));
  client.connect();
  window.demo.client = client;
  showCurl();
}

// ---- publishing -----------------------------------------------------------------

function publishBody() {
  const target = $("target").value;
  const body = {};
  body[target] = $("target-name").value.trim();
  body.data = { text: $("text").value };
  return body;
}

function shellQuote(s) {
  return "'" + s.replace(/'/g, "'\\''") + "'";
}

function showCurl() {
  const s = settings();
  $("curl").textContent = "curl -s -H " + shellQuote("Authorization: Bearer " + s.publisher) +
    " -H 'Content-Type: application/json' \\\n     -d " + shellQuote(JSON.stringify(publishBody())) +
    " " + s.server + "/publish";
}

// examples/moonpush.lua lets the demo's origins (http://127.0.0.1:8000 and
// http://localhost:8000) call /publish: its `cors` option answers the
// browser's preflight, so this is a normal JSON request whose answer the page
// reads. A server (or an origin) without that option makes the browser refuse
// it (a TypeError, as when the server is down); the page then falls back to
// what needs no CORS, a "simple" request: the token in the query and no
// Content-Type (a Blob without a type; moonpush reads such a body as JSON),
// whose answer the page may not read.
async function publish() {
  const s = settings();
  const body = JSON.stringify(publishBody());
  $("publish-note").textContent = "sending...";
  let res;
  try {
    res = await fetch(s.server + "/publish", {
      method: "POST",
      headers: { "Authorization": "Bearer " + s.publisher, "Content-Type": "application/json" },
      body,
    });
  } catch (err) {
    return publishWithoutCors(s, body);
  }
  const answer = await res.json().catch(() => ({}));
  $("publish-note").textContent = res.ok
    ? "published: " + JSON.stringify(answer)
    : "refused: " + res.status + " " + answer.error + ": " + answer.message;
}

async function publishWithoutCors(s, body) {
  const url = s.server + "/publish?token=" + encodeURIComponent(s.publisher);
  try {
    await fetch(url, { method: "POST", mode: "no-cors", body: new Blob([body]) });
    $("publish-note").textContent = "sent without CORS (the server does not list " + location.origin +
      " in /publish's cors.origins, so the page cannot read the answer: the message appears above if this " +
      "device may read that channel; the curl line shows the answer).";
  } catch (err) {
    $("publish-note").textContent = "could not reach " + s.server + ": " + err.message + " (is `make run` going?)";
  }
}

$("connect-form").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
$("publish-form").addEventListener("submit", (e) => { e.preventDefault(); publish(); });
for (const id of ["target", "target-name", "text", "publisher", "server"]) $(id).addEventListener("input", showCurl);

window.demo = { client: null };
connect();
