-- Integration: the `metrics` route (docs/operations.md "Metrics"). Every
-- scrape is parsed by a real parser of the Prometheus text format
-- (python3-prometheus-client's text_string_to_metric_families, run through
-- /usr/bin/python3), then values are compared before and after an action.
-- One shared server; counters are compared as deltas so tests do not depend
-- on each other's order.
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"
local util = require "helpers.util"

local cjson = client.json
local PYTHON = "/usr/bin/python3"
local WAIT = 3

local PARSER = [[
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1], encoding="utf-8").read()
out = {"families": {}, "samples": {}}
for fam in text_string_to_metric_families(text):
    out["families"][fam.name] = {"type": fam.type, "help": fam.documentation}
    for s in fam.samples:
        name, labels, value = s[0], s[1], s[2]
        key = ",".join("%s=%s" % (k, labels[k]) for k in sorted(labels))
        if math.isinf(value) or math.isnan(value):
            value = str(value)
        out["samples"].setdefault(name, {})[key] = value
print(json.dumps(out))
]]

local readfile, writefile, shq = util.read_file, util.write_file, util.shq

local WORK = util.mkdtemp("moonpush-metrics")
writefile(WORK .. "/parse.py", PARSER)

-- Parses exposition text with the Prometheus parser. Returns
-- { families = { name = { type=, help= } }, samples = { name = { "k=v,k2=v2" = value } } }
-- or errors with the parser's message.
local function parse(text)
  local file = WORK .. "/scrape.txt"
  writefile(file, text)
  local p = io.popen(string.format("timeout 20 %s %s %s 2>&1; echo \"__rc=$?\"", PYTHON,
    shq(WORK .. "/parse.py"), shq(file)))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  out = out:gsub("__rc=%d+%s*$", "")
  if rc ~= 0 then error("the Prometheus parser refused the scrape (rc " .. tostring(rc) .. "):\n" .. out, 2) end
  local v = cjson.decode(out)
  if type(v) ~= "table" then error("parser printed no JSON: " .. out, 2) end
  return v
end

-- Every documented metric (docs/operations.md) with its type.
local DOCUMENTED = {
  moonpush_connections = "gauge",
  moonpush_http_connections = "gauge",
  moonpush_outbound_queue_bytes = "gauge",
  moonpush_channels = "gauge",
  moonpush_uptime_seconds = "gauge",
  moonpush_connections_accepted_total = "counter",
  moonpush_connections_rejected_total = "counter",
  moonpush_http_requests_total = "counter",
  moonpush_auth_cache_hits_total = "counter",
  moonpush_auth_cache_misses_total = "counter",
  moonpush_handshakes_total = "counter",
  moonpush_auth_denials_total = "counter",
  moonpush_ratelimit_denials_total = "counter",
  moonpush_route_messages_published_total = "counter",
  moonpush_messages_published_total = "counter",
  moonpush_messages_queued_total = "counter",
  moonpush_messages_delivered_total = "counter",
  moonpush_messages_replayed_total = "counter",
  moonpush_messages_acked_total = "counter",
  moonpush_messages_resent_total = "counter",
  moonpush_messages_dropped_total = "counter",
  moonpush_closes_total = "counter",
  moonpush_writev_calls_total = "counter",
  moonpush_history_messages = "gauge",
  moonpush_history_bytes = "gauge",
  moonpush_device_cursors = "gauge",
  moonpush_history_trimmed_total = "counter",
  moonpush_history_expired_total = "counter",
  moonpush_publish_refused_total = "counter",
  moonpush_publish_to_deliver_seconds = "histogram",
  moonpush_publish_to_ack_seconds = "histogram",
  moonpush_plugin_calls_total = "counter",
  moonpush_plugin_errors_total = "counter",
  moonpush_plugin_seconds_total = "counter",
  moonpush_reloads_total = "counter",
  -- the standard process metrics of every Prometheus exporter
  process_cpu_seconds_total = "counter",
  process_resident_memory_bytes = "gauge",
  process_virtual_memory_bytes = "gauge",
  process_open_fds = "gauge",
  process_max_fds = "gauge",
  process_start_time_seconds = "gauge",
}

local ACK_TOKENS = {}
for i = 1, 5 do ACK_TOKENS["ack-" .. i] = { user = "metrics-acker" .. i, kind = "web", channels = { "*" } } end

local function overrides()
  return {
    routes = {
      { path = "/ws", type = "websocket", plugins = { routes.device_auth() } },
      routes.ack_route({ timeout_ms = 5000, max_tries = 5, jitter = 0 }, ACK_TOKENS),
      { path = "/publish", type = "publish", plugins = { routes.publisher_auth() } },
      { path = "/health", type = "health" },
      { path = "/metrics", type = "metrics" },
      { path = "/secure/metrics", type = "metrics", plugins = { routes.publisher_auth() } },
    },
  }
end

describe("moonpush metrics", function()
  local srv
  lazy_teardown(function()
    util.rm_rf(WORK)
  end)
  local ws = session.shared_server(function()
    srv = server.start(overrides())
    return srv
  end)

  -- GET the metrics route; returns status, body, headers.
  local function get(path, headers)
    local st, _, h, body = client.http(srv, path or "/metrics", { headers = headers })
    return st, body, h
  end

  local function scrape()
    local st, body = get("/metrics")
    assert.equals(200, st, body)
    return parse(body), body
  end

  -- value of one sample (labels as "k=v,k2=v2", "" for none); 0 when absent
  local function value(m, name, labels)
    local s = m.samples[name]
    return s and s[labels or ""] or 0
  end

  -- Scrapes until pred(m) holds (bounded); returns the last scrape.
  local function eventually(pred, what)
    local deadline = client.now() + WAIT
    local m
    repeat
      m = scrape()
      if pred(m) then return m end
      server.sleep(0.02)
    until client.now() > deadline
    error("not within " .. WAIT .. "s: " .. what, 2)
  end

  it("serves text format 0.0.4 that the Prometheus parser reads", function()
    -- some traffic first, so labelled families have samples
    ws({ token = "carol", device = client.unique("fmt-") })
    client.publish_ok(srv, { channel = "fmt", data = 1 })
    local st, body, h = get("/metrics")
    assert.equals(200, st)
    local ctype = h:get("content-type")
    assert.truthy(ctype:find("text/plain", 1, true), ctype)
    assert.truthy(ctype:find("version=0.0.4", 1, true), ctype)
    local m = parse(body)
    assert.truthy(next(m.samples), "no samples")
  end)

  it("has every documented metric, with its type", function()
    local _, body = get("/metrics")
    local types = {}
    for name, t in body:gmatch("# TYPE (%S+) (%S+)") do types[name] = t end
    for name, t in pairs(DOCUMENTED) do
      assert.equals(t, types[name], "# TYPE of " .. name)
    end
    local m = parse(body)
    for name, t in pairs(DOCUMENTED) do
      local fam = name:gsub("_total$", "")
      assert.is_table(m.families[fam], "the parser found no family " .. fam)
      assert.equals(t, m.families[fam].type, "parsed type of " .. fam)
    end
  end)

  it("has HELP and TYPE for every family, and every sample line is well-formed", function()
    ws({ token = "bob", device = client.unique("lines-") })
    local _, body = get("/metrics")
    assert.equals("\n", body:sub(-1), "the exposition does not end with a newline")
    local help, typ = {}, {}
    local nsamples = 0
    for line in body:gmatch("([^\n]*)\n") do
      local hn, htext = line:match("^# HELP (%S+) (.+)$")
      local tn, ttype = line:match("^# TYPE (%S+) (%S+)$")
      if hn then
        assert.is_nil(help[hn], "two HELP lines for " .. hn)
        help[hn] = htext
      elseif tn then
        assert.is_nil(typ[tn], "two TYPE lines for " .. tn)
        assert.truthy(({ counter = true, gauge = true, histogram = true, summary = true, untyped = true })[ttype], line)
        typ[tn] = ttype
      else
        assert.is_nil(line:match("^#"), "unexpected comment line: " .. line)
        assert.not_equals("", line, "an empty line in the exposition")
        -- name{labels} value
        local name, rest = line:match("^([%a_:][%w_:]*)(.*)$")
        assert.truthy(name, "bad sample line: " .. line)
        local labels, val = rest:match("^(%b{}) (%S+)$")
        if not labels then val = rest:match("^ (%S+)$") end
        assert.truthy(val, "bad sample line: " .. line)
        assert.truthy(tonumber(val) or val == "+Inf" or val == "-Inf" or val == "NaN", "bad value: " .. line)
        if labels then
          local inner = labels:sub(2, -2)
          local stripped = inner:gsub('[%a_][%w_]*="[^"\\]*"', ""):gsub(",", "")
          assert.equals("", stripped, "bad labels: " .. line)
        end
        -- its family: the name itself, or a histogram's _bucket/_sum/_count
        local fam = name
        if not typ[fam] then
          local base = name:match("^(.*)_bucket$") or name:match("^(.*)_sum$") or name:match("^(.*)_count$")
          if base and typ[base] == "histogram" then fam = base end
        end
        assert.truthy(typ[fam], "no # TYPE before " .. line)
        assert.truthy(help[fam], "no # HELP before " .. line)
        nsamples = nsamples + 1
      end
    end
    assert.is_true(nsamples > 30, "only " .. nsamples .. " samples")
    for name in pairs(typ) do assert.truthy(help[name], "TYPE without HELP: " .. name) end
    for name in pairs(help) do assert.truthy(typ[name], "HELP without TYPE: " .. name) end
    -- and the real parser agrees: every family has documentation and a type
    local m = parse(body)
    for name, fam in pairs(m.families) do
      assert.truthy(fam.help ~= nil and fam.help ~= "", "no HELP for family " .. name)
      assert.not_equals("unknown", fam.type, "no TYPE for family " .. name)
    end
  end)

  it("connections{route,kind} goes up with a connected client and down after it closes", function()
    local labels = "kind=pos,route=/ws"
    local before = value(scrape(), "moonpush_connections", labels)
    local w = ws({ token = "carol", device = client.unique("gauge-") })
    local m = scrape()
    assert.equals(before + 1, value(m, "moonpush_connections", labels))
    -- an acked route is counted under its own path
    local ack_before = value(m, "moonpush_connections", "kind=web,route=/ws/acked")
    local a = ws({ token = "ack-5", device = client.unique("gauge-"), path = "/ws/acked" })
    assert.equals(ack_before + 1, value(scrape(), "moonpush_connections", "kind=web,route=/ws/acked"))
    client.close(w)
    client.close(a)
    eventually(function(x)
      return value(x, "moonpush_connections", labels) == before
        and value(x, "moonpush_connections", "kind=web,route=/ws/acked") == ack_before
    end, "connections gauge back to " .. before .. " after the close")
  end)

  it("counts handshakes_total by route", function()
    local m0 = scrape()
    local ws0 = value(m0, "moonpush_handshakes_total", "route=/ws")
    local ack0 = value(m0, "moonpush_handshakes_total", "route=/ws/acked")
    ws({ token = "bob", device = client.unique("hs-") })
    ws({ token = "bob", device = client.unique("hs-") })
    ws({ token = "ack-4", device = client.unique("hs-"), path = "/ws/acked" })
    local m = scrape()
    assert.equals(ws0 + 2, value(m, "moonpush_handshakes_total", "route=/ws"))
    assert.equals(ack0 + 1, value(m, "moonpush_handshakes_total", "route=/ws/acked"))
  end)

  it("counts auth_denials_total by route after a bad token", function()
    local m0 = scrape()
    local ws0 = value(m0, "moonpush_auth_denials_total", "route=/ws")
    local pub0 = value(m0, "moonpush_auth_denials_total", "route=/publish")
    local hs0 = value(m0, "moonpush_handshakes_total", "route=/ws")
    local resp, err, c = client.raw_request(srv, client.upgrade_request(srv, { token = "no-such-token" }))
    c:close()
    assert.is_table(resp, err)
    assert.equals(401, resp.status)
    local st = client.publish(srv, { channel = "x", data = 1 }, { token = "wrong-publisher" })
    assert.equals(401, st)
    local m = scrape()
    assert.equals(ws0 + 1, value(m, "moonpush_auth_denials_total", "route=/ws"))
    assert.equals(pub0 + 1, value(m, "moonpush_auth_denials_total", "route=/publish"))
    assert.equals(hs0, value(m, "moonpush_handshakes_total", "route=/ws"))
  end)

  it("counts published, queued and delivered messages and the publish-to-deliver histogram", function()
    local ch = client.unique("met-")
    local w1 = ws({ token = "bob", device = client.unique("pd-"), channels = { ch } })
    local w2 = ws({ token = "bob", device = client.unique("pd-"), channels = { ch } })
    local m0 = scrape()
    local pub0 = value(m0, "moonpush_messages_published_total")
    local route0 = value(m0, "moonpush_route_messages_published_total", "route=/publish")
    local q0 = value(m0, "moonpush_messages_queued_total")
    local d0 = value(m0, "moonpush_messages_delivered_total")
    local h0 = value(m0, "moonpush_publish_to_deliver_seconds_count")
    local inf0 = value(m0, "moonpush_publish_to_deliver_seconds_bucket", "le=+Inf")
    for i = 1, 3 do client.publish_ok(srv, { channel = ch, data = i }) end
    for _ = 1, 3 do client.recv_message(w1); client.recv_message(w2) end
    local m = eventually(function(x)
      return value(x, "moonpush_messages_delivered_total") >= d0 + 6
    end, "delivered_total up by 6")
    assert.equals(pub0 + 3, value(m, "moonpush_messages_published_total"))
    assert.equals(route0 + 3, value(m, "moonpush_route_messages_published_total", "route=/publish"))
    assert.equals(q0 + 6, value(m, "moonpush_messages_queued_total"))
    assert.equals(d0 + 6, value(m, "moonpush_messages_delivered_total"))
    assert.equals(h0 + 6, value(m, "moonpush_publish_to_deliver_seconds_count"))
    assert.equals(inf0 + 6, value(m, "moonpush_publish_to_deliver_seconds_bucket", "le=+Inf"))
    assert.equals(value(m, "moonpush_publish_to_deliver_seconds_count"),
      value(m, "moonpush_publish_to_deliver_seconds_bucket", "le=+Inf"))
    -- buckets are cumulative
    local prev = 0
    for _, le in ipairs({ "0.0001", "0.001", "0.01", "0.1", "1", "10", "+Inf" }) do
      local v = value(m, "moonpush_publish_to_deliver_seconds_bucket", "le=" .. le)
      assert.is_true(v >= prev, "bucket le=" .. le .. " below the one before")
      prev = v
    end
    assert.is_true(value(m, "moonpush_publish_to_deliver_seconds_sum") >= 0)
  end)

  it("measures publish-to-deliver with a real clock: the sum grows with delivered messages", function()
    -- The publish, the fanout and the write happen within one loop
    -- iteration: measured with libev's cached loop time every one is 0.
    local ch = client.unique("dur-")
    local w1 = ws({ token = "bob", device = client.unique("dur-"), channels = { ch } })
    local w2 = ws({ token = "bob", device = client.unique("dur-"), channels = { ch } })
    local m0 = scrape()
    local sum0 = value(m0, "moonpush_publish_to_deliver_seconds_sum")
    local n0 = value(m0, "moonpush_publish_to_deliver_seconds_count")
    for i = 1, 5 do client.publish_ok(srv, { channel = ch, data = i }) end
    for _ = 1, 5 do client.recv_message(w1); client.recv_message(w2) end
    local m = eventually(function(x)
      return value(x, "moonpush_publish_to_deliver_seconds_count") >= n0 + 10
    end, "publish_to_deliver_seconds_count up by 10")
    local sum = value(m, "moonpush_publish_to_deliver_seconds_sum")
    assert.is_true(sum > sum0, string.format("publish_to_deliver_seconds_sum stayed %.9g after 10 deliveries", sum0))
    -- and plausible: no delivery took minutes (nor went backwards)
    assert.is_true(sum - sum0 < 10, "10 deliveries took " .. (sum - sum0) .. " s in all")
  end)

  it("has the standard process_* metrics, read from /proc at scrape time", function()
    local m = scrape()
    local function v(name)
      local x = m.samples[name] and m.samples[name][""]
      assert.is_number(x, "no sample " .. name)
      return x
    end
    local now = os.time()
    assert.is_true(v("process_cpu_seconds_total") >= 0)
    local rss, vsz = v("process_resident_memory_bytes"), v("process_virtual_memory_bytes")
    assert.is_true(rss > 1048576 and rss < 4 * 2 ^ 30, "resident memory " .. rss)
    assert.is_true(vsz >= rss, "virtual " .. vsz .. " below resident " .. rss)
    local fds, max = v("process_open_fds"), v("process_max_fds")
    assert.is_true(fds >= 4, "open fds " .. fds)   -- stdio, the listener, the scrape's connection
    assert.is_true(max >= fds, "max fds " .. max .. " below open fds " .. fds)
    -- the start time and the uptime agree with each other and with now
    local start, up = v("process_start_time_seconds"), v("moonpush_uptime_seconds")
    assert.is_true(start <= now + 1 and start > now - 3600, "start time " .. start .. ", now " .. now)
    assert.is_true(math.abs(start + up - now) < 5, string.format("start %.3f + uptime %.3f is not now %d", start, up, now))
    -- open fds follow connections: closing 3 websockets frees 3 fds (the
    -- way down, because connections of earlier tests may still be closing)
    local held = {}
    for i = 1, 3 do held[i] = ws({ token = "bob", device = client.unique("fds-") }) end
    local during = scrape().samples["process_open_fds"][""]
    assert.is_true(during >= 7, "open fds " .. during .. " with 3 connections held")
    for _, w in ipairs(held) do client.close(w) end
    eventually(function(x) return x.samples["process_open_fds"][""] <= during - 3 end,
      "process_open_fds down by 3 from " .. during .. " after 3 connections closed")
  end)

  it("counts a message published with no subscriber as published, not queued", function()
    local m0 = scrape()
    local pub0 = value(m0, "moonpush_messages_published_total")
    local q0 = value(m0, "moonpush_messages_queued_total")
    client.publish_ok(srv, { channel = client.unique("nobody-"), data = 1 })
    local m = scrape()
    assert.equals(pub0 + 1, value(m, "moonpush_messages_published_total"))
    assert.equals(q0, value(m, "moonpush_messages_queued_total"))
  end)

  it("counts acks and the publish-to-ack histogram on an ack route", function()
    local w = ws({ token = "ack-1", device = client.unique("acker-"), path = "/ws/acked" })
    local m0 = scrape()
    local acked0 = value(m0, "moonpush_messages_acked_total")
    local h0 = value(m0, "moonpush_publish_to_ack_seconds_count")
    local ans = client.publish_ok(srv, { user = "metrics-acker1", data = { please = "ack" } })
    local msg = client.recv_message(w)
    assert.equals(ans.seq, msg.seq)
    client.send_json(w, { type = "ack", channel = msg.channel, seq = msg.seq })
    local m = eventually(function(x)
      return value(x, "moonpush_messages_acked_total") >= acked0 + 1
    end, "acked_total up by 1")
    assert.equals(acked0 + 1, value(m, "moonpush_messages_acked_total"))
    assert.equals(h0 + 1, value(m, "moonpush_publish_to_ack_seconds_count"))
    assert.equals(h0 + 1, value(m, "moonpush_publish_to_ack_seconds_bucket", "le=+Inf"))
    assert.is_true(value(m, "moonpush_publish_to_ack_seconds_sum") >= 0)
  end)

  it("counts closes_total{reason=kicked} after an admin kick", function()
    local w = ws({ token = "ack-2", device = client.unique("kick-"), path = "/ws/acked" })
    local k0 = value(scrape(), "moonpush_closes_total", "reason=kicked")
    local out, rc = srv:admin("kick('metrics-acker2', 'metrics test')")
    assert.equals(0, rc, out)
    local code = client.expect_close(w, 3)
    assert.equals(4003, code)
    local m = scrape()
    assert.equals(k0 + 1, value(m, "moonpush_closes_total", "reason=kicked"))
    for _, reason in ipairs({ "slow_consumer", "idle_timeout", "ack_timeout", "replaced", "kicked" }) do
      assert.is_number(m.samples["moonpush_closes_total"]["reason=" .. reason], "no closes_total reason " .. reason)
    end
  end)

  it("counts closes_total{reason=replaced} when a device connects twice", function()
    local r0 = value(scrape(), "moonpush_closes_total", "reason=replaced")
    local dev = client.unique("dup-")
    local first = ws({ token = "bob", device = dev })
    ws({ token = "bob", device = dev })
    assert.equals(4002, (client.expect_close(first, 3)))
    assert.equals(r0 + 1, value(scrape(), "moonpush_closes_total", "reason=replaced"))
  end)

  it("counts plugin_calls_total{plugin=auth_token}", function()
    local c0 = value(scrape(), "moonpush_plugin_calls_total", "plugin=auth_token")
    client.publish_ok(srv, { channel = "calls", data = 1 })
    ws({ token = "bob", device = client.unique("calls-") })
    local m = scrape()
    assert.is_true(value(m, "moonpush_plugin_calls_total", "plugin=auth_token") >= c0 + 2,
      "plugin_calls_total{plugin=auth_token} did not go up by 2 from " .. c0)
    assert.is_number(m.samples["moonpush_plugin_errors_total"]["plugin=auth_token"])
    assert.is_number(m.samples["moonpush_plugin_seconds_total"]["plugin=auth_token"])
  end)

  it("counts reloads_total{result=ok} after SIGHUP, and result=refused after a broken config", function()
    local m0 = scrape()
    local ok0 = value(m0, "moonpush_reloads_total", "result=ok")
    local refused0 = value(m0, "moonpush_reloads_total", "result=refused")
    assert.is_true(srv:signal("HUP"))
    local m = eventually(function(x) return value(x, "moonpush_reloads_total", "result=ok") >= ok0 + 1 end,
      "reloads_total{result=ok} up by 1 after SIGHUP")
    assert.equals(ok0 + 1, value(m, "moonpush_reloads_total", "result=ok"))
    assert.equals(refused0, value(m, "moonpush_reloads_total", "result=refused"))

    local original = readfile(srv.cfgfile)
    finally(function() writefile(srv.cfgfile, original) end)
    writefile(srv.cfgfile, "return { this is not lua")
    assert.is_true(srv:signal("HUP"))
    m = eventually(function(x) return value(x, "moonpush_reloads_total", "result=refused") >= refused0 + 1 end,
      "reloads_total{result=refused} up by 1 after a broken config")
    assert.equals(ok0 + 1, value(m, "moonpush_reloads_total", "result=ok"))
  end)

  it("counts http_requests_total and connections_accepted_total", function()
    local m0 = scrape()
    local r0 = value(m0, "moonpush_http_requests_total")
    local a0 = value(m0, "moonpush_connections_accepted_total")
    client.health(srv)
    client.health(srv)
    local m = scrape()
    -- two health requests plus the scrape itself
    assert.equals(r0 + 3, value(m, "moonpush_http_requests_total"))
    assert.equals(a0 + 3, value(m, "moonpush_connections_accepted_total"))
  end)

  it("refuses a metrics route with an auth plugin without a token (401), serves it with one", function()
    local st, body = get("/secure/metrics")
    assert.equals(401, st, body)
    local j = cjson.decode(body)
    assert.equals("unauthorized", j and j.error, body)
    st, body = get("/secure/metrics", { authorization = "Bearer wrong-token" })
    assert.equals(401, st, body)
    -- a device token is no publisher credential
    st, body = get("/secure/metrics", { authorization = "Bearer bob" })
    assert.equals(401, st, body)
    st, body = get("/secure/metrics", { authorization = "Bearer " .. server.PUBLISHER })
    assert.equals(200, st, body)
    local m = parse(body)
    assert.is_table(m.samples["moonpush_uptime_seconds"])
    st, body = get("/secure/metrics?token=" .. server.PUBLISHER)
    assert.equals(200, st, body)
    parse(body)
  end)

  it("counts the refusals of the metrics route in auth_denials_total", function()
    local d0 = value(scrape(), "moonpush_auth_denials_total", "route=/secure/metrics")
    assert.equals(401, (get("/secure/metrics")))
    assert.equals(d0 + 1, value(scrape(), "moonpush_auth_denials_total", "route=/secure/metrics"))
  end)

  it("answers 405 to a POST on the metrics route", function()
    local st = client.http(srv, "/metrics", { method = "POST", body = "{}" })
    assert.equals(405, st)
  end)
end)
