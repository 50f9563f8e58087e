-- A real EventSource in headless Chromium against an sse route
-- (docs/protocol.md, SSE): the page is on another origin (the static
-- server), so the route's cors lets it read the stream. The page receives
-- the welcome and live messages; the admin kicks the stream; what is
-- published while it is away comes back when EventSource reconnects on its
-- own with Last-Event-ID — replayed from history, each message once.
local server = require "helpers.server"
local client = require "helpers.client"
local routes = require "helpers.routes"
local session = require "helpers.session"
local browser = require "helpers.browser"

local J = browser.json

local PAGE_JS = [[
  window.sse = { events: [], opens: 0, errors: 0 };
  const es = new EventSource(%s);
  const keep = (type) => (e) => sse.events.push({ type, id: e.lastEventId, data: JSON.parse(e.data) });
  es.addEventListener("welcome", keep("welcome"));
  es.addEventListener("reset", keep("reset"));
  es.onmessage = keep("message");
  es.onopen = () => { sse.opens++; };
  es.onerror = () => { sse.errors++; };
  window.es = es;
]]

local function admin_number(srv, expr)
  local out, rc = srv:admin(expr)
  assert.equals(0, rc, out)
  return tonumber(out:match("(%d+)"))
end

describe("EventSource in Chromium", function()
  local br, srv, page

  lazy_setup(function()
    br = browser.start()
    srv = server.start({
      routes = {
        { path = "/sse", type = "sse", plugins = { routes.device_auth() }, cors = { origins = { br.origin } } },
        { path = "/publish", type = "publish", plugins = { routes.publisher_auth() } },
      },
    })
  end)

  lazy_teardown(function()
    if page then page:close() end
    if br then br:stop() end
    if srv then session.stop(srv) end
  end)

  it("receives live messages, and after a server-side cut reconnects with Last-Event-ID and gets exactly what it missed", function()
    page = br:open("/harness.html")
    local ch = client.unique("es-")
    local url = "http://127.0.0.1:" .. srv.port .. "/sse?token=bob&channels=" .. ch
    page:js(string.format(PAGE_JS, J(url)))
    page:wait_js("sse.events.length >= 1 && sse.events[0].type === 'welcome'", 10)
    for i = 1, 3 do client.publish_ok(srv, { channel = ch, data = { n = i } }) end
    page:wait_js("sse.events.filter(e => e.type === 'message').length === 3", 10)
    local first = page:js("return sse.events")
    assert.equals("bob", first[1].data.user)
    for i = 1, 3 do
      assert.same({ ch, i, { n = i } }, { first[i + 1].data.channel, first[i + 1].data.seq, first[i + 1].data.data })
    end
    local last_id = first[4].id
    local replayed_before = admin_number(srv, "stats().messages_replayed")

    -- cut the stream server-side; publish while the browser waits to reconnect
    assert.equals(1, admin_number(srv, "kick(" .. first[1].data.conn .. ")"))
    for i = 4, 5 do client.publish_ok(srv, { channel = ch, data = { n = i } }) end
    page:wait_js("sse.events.filter(e => e.type === 'welcome').length === 2", 15)
    page:wait_js("sse.events.filter(e => e.type === 'message').length >= 5", 10)
    client.publish_ok(srv, { channel = ch, data = { n = 6 } })
    page:wait_js("sse.events.filter(e => e.type === 'message').length >= 6", 10)

    local all = page:js("return { events: sse.events, opens: sse.opens, errors: sse.errors, state: es.readyState }")
    local welcomes, seqs = {}, {}
    for _, e in ipairs(all.events) do
      if e.type == "welcome" then welcomes[#welcomes + 1] = e end
      if e.type == "message" then seqs[#seqs + 1] = e.data.seq end
      assert.is_not.equals("reset", e.type)
    end
    assert.same({ 1, 2, 3, 4, 5, 6 }, seqs)
    -- the second stream started where the first one ended: EventSource sent
    -- the last id it had, and the server replayed 4 and 5 from history
    assert.equals(last_id, welcomes[2].id)
    assert.equals(2, admin_number(srv, "stats().messages_replayed") - replayed_before)
    assert.equals(2, all.opens)
    assert.truthy(all.errors >= 1)
    assert.equals(1, all.state)   -- OPEN
  end)
end)
