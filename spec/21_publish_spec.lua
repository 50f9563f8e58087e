-- Integration: POST /publish answers (docs/protocol.md "Publish").
local server = require "helpers.server"
local client = require "helpers.client"

describe("moonpush publish", function()
  local srv

  lazy_setup(function()
    srv = server.start()
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  local function assert_answer(a, channel, seq)
    assert.is_table(a)
    assert.equals(channel, a.channel)
    assert.equals(seq, a.seq)
    assert.is_string(a.id)
    assert.matches("^%x+%-%x+$", a.id, "id is not <hex boot id>-<counter>")
    assert.is_number(a.recipients)
  end

  describe("a single message", function()
    it("to a channel answers 200 with channel, seq 1, id and recipients", function()
      local ch = client.unique("news-")
      local status, a, headers = client.publish(srv, { channel = ch, data = { title = "hello" } })
      assert.equals(200, status)
      assert.matches("^application/json", headers:get("content-type"))
      assert_answer(a, ch, 1)
      assert.equals(0, a.recipients)
    end)

    it("to a user answers with the personal channel user:<name>", function()
      local status, a = client.publish(srv, { user = "nobody-online", data = "any JSON value" })
      assert.equals(200, status)
      assert_answer(a, "user:nobody-online", 1)
      assert.equals(0, a.recipients)
    end)

    it("counts seq from 1 and adds 1 per message on the same channel", function()
      local ch = client.unique("count-")
      for i = 1, 5 do
        local a = client.publish_ok(srv, { channel = ch, data = i })
        assert_answer(a, ch, i)
      end
    end)

    it("keeps seq independent per channel", function()
      local a, b = client.unique("ind-a-"), client.unique("ind-b-")
      assert.equals(1, client.publish_ok(srv, { channel = a, data = 1 }).seq)
      assert.equals(2, client.publish_ok(srv, { channel = a, data = 2 }).seq)
      assert.equals(1, client.publish_ok(srv, { channel = b, data = 1 }).seq)
      assert.equals(3, client.publish_ok(srv, { channel = a, data = 3 }).seq)
      assert.equals(2, client.publish_ok(srv, { channel = b, data = 2 }).seq)
    end)

    it("counts user and channel seqs separately", function()
      local u = client.unique("u")
      assert.equals(1, client.publish_ok(srv, { user = u, data = 1 }).seq)
      assert.equals(1, client.publish_ok(srv, { channel = u, data = 1 }).seq)
      assert.equals(2, client.publish_ok(srv, { user = u, data = 2 }).seq)
    end)

    it("gives every message a distinct id with one boot id", function()
      local seen, boot = {}, nil
      for i = 1, 20 do
        local a = client.publish_ok(srv, { channel = "ids-" .. (i % 3), data = i })
        assert.is_nil(seen[a.id], "duplicate id " .. a.id)
        seen[a.id] = true
        local b = a.id:match("^(%x+)%-")
        boot = boot or b
        assert.equals(boot, b)
      end
    end)

    it("counts the connections the frame was queued to in recipients", function()
      local ch = client.unique("rcpt-")
      local w1 = client.ws(srv, { token = "bob", device = client.unique("r-"), channels = { ch } })
      local w2 = client.ws(srv, { token = "bob", device = client.unique("r-"), channels = { ch } })
      local a = client.publish_ok(srv, { channel = ch, data = "x" })
      client.close(w1)
      client.close(w2)
      assert.equals(2, a.recipients)
    end)

    it("accepts every JSON value as data", function()
      for _, data in ipairs({ '"s"', '0', '-1.5', 'true', 'false', '[]', '{}', '[1,{"a":[null]}]' }) do
        local status, a, _, raw = client.publish(srv, '{"channel":"values","data":' .. data .. '}')
        assert.equals(200, status, "data " .. data .. ": " .. tostring(raw))
        assert.equals("values", a.channel)
      end
    end)

    it("accepts null as data (it is a JSON value, not a missing field)", function()
      local status, a, _, raw = client.publish(srv, '{"channel":"nulls","data":null}')
      assert.equals(200, status, raw)
      assert.equals("nulls", a.channel)
    end)

    it("accepts the token as ?token= instead of Authorization", function()
      local status, a = client.publish(srv, { channel = "qt", data = 1 }, { query_token = true })
      assert.equals(200, status)
      assert.equals("qt", a.channel)
    end)

    it("accepts application/json with a charset parameter", function()
      local status = client.publish(srv, { channel = "cs", data = 1 },
        { headers = { ["content-type"] = "application/json; charset=utf-8" } })
      assert.equals(200, status)
    end)

    it("accepts a chunked body", function()
      local body = '{"channel":"chunked","data":{"n":1}}'
      local req = "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. server.PUBLISHER ..
        "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" ..
        string.format("%x\r\n%s\r\n", 10, body:sub(1, 10)) ..
        string.format("%x\r\n%s\r\n", #body - 10, body:sub(11)) .. "0\r\n\r\n"
      local resp, err, c = client.raw_request(srv, req)
      c:close()
      assert.is_table(resp, err)
      assert.equals(200, resp.status, resp.body)
      assert.equals("chunked", resp.json.channel)
      assert.equals(1, resp.json.seq)
    end)

    it("answers Expect: 100-continue with 100 Continue before the body", function()
      -- curl and lua-http send this for bigger bodies and stall ~1 s without it
      local body = '{"channel":"expect","data":"' .. ("e"):rep(2000) .. '"}'
      local c = client.tcp(srv)
      assert(c:send("POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. server.PUBLISHER ..
        "\r\nContent-Type: application/json\r\nContent-Length: " .. #body ..
        "\r\nExpect: 100-continue\r\n\r\n"))
      local interim, err = c:response(0.5)
      if not interim then
        assert(c:send(body)) -- let the request finish before failing
        c:close()
      end
      assert.is_table(interim, "no 100 Continue within 0.5 s: " .. tostring(err))
      assert.equals(100, interim.status)
      assert(c:send(body))
      local resp, err2 = c:response()
      c:close()
      assert.is_table(resp, err2)
      assert.equals(200, resp.status)
      assert.equals("expect", resp.json and resp.json.channel)
    end)

    it("answers several publishes on one keep-alive connection", function()
      local c = client.tcp(srv)
      for i = 1, 3 do
        local body = '{"channel":"ka","data":' .. i .. '}'
        assert(c:send("POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. server.PUBLISHER ..
          "\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body))
        local resp, err = c:response()
        assert.is_table(resp, err)
        assert.equals(200, resp.status)
        assert.equals(i, resp.json.seq)
      end
      c:close()
    end)
  end)

  describe("a batch", function()
    it("answers a JSON array of per-item answers in order", function()
      local a, b = client.unique("batch-a-"), client.unique("batch-b-")
      local status, answers, _, raw = client.publish(srv, {
        { channel = a, data = 1 },
        { channel = b, data = 2 },
        { user = "zed", data = 3 },
        { channel = a, data = 4 },
      })
      assert.equals(200, status, raw)
      assert.is_table(answers)
      assert.equals(4, #answers)
      assert_answer(answers[1], a, 1)
      assert_answer(answers[2], b, 1)
      assert_answer(answers[3], "user:zed", 1)
      assert_answer(answers[4], a, 2)
      local ids = {}
      for _, x in ipairs(answers) do
        assert.is_nil(ids[x.id]); ids[x.id] = true
      end
    end)

    it("continues the channel's seq across single and batch publishes", function()
      local ch = client.unique("mix-")
      assert.equals(1, client.publish_ok(srv, { channel = ch, data = 0 }).seq)
      local answers = client.publish_ok(srv, { { channel = ch, data = 1 }, { channel = ch, data = 2 } })
      assert.equals(2, answers[1].seq)
      assert.equals(3, answers[2].seq)
      assert.equals(4, client.publish_ok(srv, { channel = ch, data = 3 }).seq)
    end)

    it("answers a one-item batch with a one-item array", function()
      local ch = client.unique("one-")
      local answers = client.publish_ok(srv, { { channel = ch, data = 1 } })
      assert.equals(1, #answers)
      assert_answer(answers[1], ch, 1)
    end)

    it("delivers a batch in order", function()
      local ch = client.unique("bo-")
      local ws = client.ws(srv, { token = "bob", device = client.unique("bo-"), channels = { ch } })
      local items = {}
      for i = 1, 10 do items[i] = { channel = ch, data = i } end
      client.publish_ok(srv, items)
      for i = 1, 10 do
        local m = client.recv_message(ws)
        assert.equals(i, m.seq)
        assert.equals(i, m.data)
      end
      client.close(ws)
    end)
  end)

  describe("auth", function()
    it("rejects a publish without a token with 401 unauthorized", function()
      local status, body = client.publish(srv, { channel = "x", data = 1 }, { token = false })
      assert.equals(401, status)
      assert.equals("unauthorized", body and body.error)
      assert.is_string(body.message)
    end)

    it("rejects an unknown publisher token with 401 unauthorized", function()
      local status, body = client.publish(srv, { channel = "x", data = 1 }, { token = "wrong" })
      assert.equals(401, status)
      assert.equals("unauthorized", body and body.error)
    end)

    it("rejects an unknown ?token= with 401 unauthorized", function()
      local status, body = client.publish(srv, { channel = "x", data = 1 }, { token = "wrong", query_token = true })
      assert.equals(401, status)
      assert.equals("unauthorized", body and body.error)
    end)

    it("rejects a device token on the publish route with 401", function()
      local status, body = client.publish(srv, { channel = "x", data = 1 }, { token = "bob" })
      assert.equals(401, status)
      assert.equals("unauthorized", body and body.error)
    end)

    it("lets a restricted publisher publish to its channels", function()
      local status, a = client.publish(srv, { channel = "news", data = 1 }, { token = server.NEWS_PUBLISHER })
      assert.equals(200, status)
      assert.equals("news", a.channel)
      status = client.publish(srv, { channel = "orders:7", data = 1 }, { token = server.NEWS_PUBLISHER })
      assert.equals(200, status)
    end)

    it("rejects a publish to a channel the publisher may not use with 403 forbidden", function()
      local ch = client.unique("sports-")
      local status, body = client.publish(srv, { channel = ch, data = 1 }, { token = server.NEWS_PUBLISHER })
      assert.equals(403, status)
      assert.equals("forbidden", body and body.error)
      assert.is_string(body.message)
      assert.equals(1, client.publish_ok(srv, { channel = ch, data = 2 }).seq)
    end)

    it("rejects a whole batch with 403 when one item is forbidden, publishing none", function()
      local ch = client.unique("orders:")
      local status, body = client.publish(srv, {
        { channel = ch, data = 1 },
        { channel = client.unique("elsewhere-"), data = 2 },
      }, { token = server.NEWS_PUBLISHER })
      assert.equals(403, status)
      assert.equals("forbidden", body and body.error)
      assert.equals(1, client.publish_ok(srv, { channel = ch, data = 3 }).seq)
    end)

    it("does not publish a rejected message", function()
      local ch = client.unique("unauth-")
      client.publish(srv, { channel = ch, data = 1 }, { token = "wrong" })
      assert.equals(1, client.publish_ok(srv, { channel = ch, data = 2 }).seq)
    end)
  end)
end)
