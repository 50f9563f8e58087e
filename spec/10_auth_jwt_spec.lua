-- Unit spec for plugins/auth_jwt.lua (no server). Tokens are built here with
-- the real crypto (moonpush.hmac_sha256 + base64url), plus the RFC 7515 A.1
-- example as an outside reference.

local moonpush = require "moonpush"
local unit = require "helpers.plugin_unit"
local json = moonpush.json

local SECRET = "0123456789abcdef0123456789abcdef-test"
local PLUGIN = "plugins/auth_jwt.lua"

local b64 = moonpush.base64url_encode

local function now() return math.floor(moonpush.now() / 1000) end

-- Signs header.payload; a string payload/header is used as it is.
local function jwt(payload, opts)
  opts = opts or {}
  local header = opts.header or { alg = "HS256", typ = "JWT" }
  local h = b64(type(header) == "string" and header or json.encode(header))
  local p = b64(type(payload) == "string" and payload or json.encode(payload))
  local sig = b64(moonpush.hmac_sha256(opts.secret or SECRET, h .. "." .. p))
  return h .. "." .. p .. "." .. sig
end

local function req(token, extra)
  local r = unit.auth_request(token, { remote_addr = "127.0.0.1:5000" })
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

-- Loads a fresh copy of the plugin, optionally with moonpush.now stubbed to
-- return `at` (unix seconds) for its whole life.
local function load(at)
  if not at then return dofile(PLUGIN) end
  local real = moonpush.now
  moonpush.now = function() return at * 1000 end
  local ok, p = pcall(dofile, PLUGIN)
  moonpush.now = real
  assert(ok, p)
  return p
end

-- The operator's config: the secret plus `extra`.
local function raw(extra)
  local c = { secret = SECRET }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

-- The config the hooks get in the server: raw(extra) checked against the
-- plugin's schema, defaults filled in.
local SCHEMA_OF = dofile(PLUGIN)
local function conf(extra) return unit.config(SCHEMA_OF, raw(extra)) end

local function assert_denied(status, pattern, id, err)
  unit.assert_denied(status, status == 401 and "unauthorized" or "forbidden", pattern, id, err)
end

describe("auth_jwt", function()
  local plugin

  before_each(function()
    plugin = load()
  end)

  describe("its options", function()
    it("accept a config with only a long enough secret, and fill in the defaults", function()
      assert.same({ secret = SECRET, leeway = 30, require_exp = false, publisher = false, require_role = false,
                    claims = { user = "sub", device = "device", kind = "kind", channels = "channels",
                               name = "sub", role = "role" } },
                  unit.accepts(plugin, raw()))
    end)

    it("accept every documented option", function()
      local c = unit.accepts(plugin, raw({
        leeway = 0, require_exp = true, issuer = { "a", "b" }, audience = "push", publisher = true,
        require_role = true,
        claims = { user = "uid", device = "dev", kind = "k", channels = "ch", name = "pub", role = "r" },
      }))
      assert.equal(0, c.leeway)
      assert.equal("uid", c.claims.user)
    end)

    it("keep claims not mapped at their defaults", function()
      assert.same({ user = "uid", device = "device", kind = "kind", channels = "channels", name = "sub", role = "role" },
                  unit.accepts(plugin, raw({ claims = { user = "uid" } })).claims)
    end)

    local bad = {
      { "a missing secret", {}, 'option "secret" is required' },
      { "a non-string secret", { secret = 12345 }, 'option "secret" must be a string of at least 32 bytes' },
      { "an empty secret", { secret = "" }, 'option "secret" must be' },
      { "a secret shorter than 32 bytes", { secret = "short-secret" }, "got a string of 12 bytes" },
      { "a negative leeway", raw({ leeway = -1 }), 'option "leeway" must be a number >= 0, got -1' },
      { "a string leeway", raw({ leeway = "30" }), 'option "leeway" must be a number >= 0, got "30"' },
      { "a non-boolean require_exp", raw({ require_exp = "yes" }), 'option "require_exp" must be true or false' },
      { "a non-boolean publisher", raw({ publisher = 1 }), 'option "publisher" must be true or false, got 1' },
      { "an issuer that is not a string or list", raw({ issuer = 7 }),
        'option "issuer" must be a non-empty string or a non-empty list of strings, got 7' },
      { "an empty audience list", raw({ audience = {} }), 'option "audience" must be' },
      { "an unknown claim mapping", raw({ claims = { scope = "r" } }), 'unknown option "claims.scope"' },
      { "a non-boolean require_role", raw({ require_role = "yes" }), 'option "require_role" must be true or false' },
      { "a claim mapped to a non-string", raw({ claims = { user = 1 } }), 'option "claims.user" must be a non-empty string' },
      { "a misspelt key", raw({ leway = 10 }), 'unknown option "leway" (did you mean "leeway"?)' },
    }
    for _, case in ipairs(bad) do
      it("refuse " .. case[1], function() unit.refuses(plugin, case[2], case[3]) end)
    end

    it("never show the secret in a message", function()
      local err = unit.refuses(plugin, { secret = "hunter2-is-my-password" })
      assert.is_nil(err:find("hunter2", 1, true))
    end)
  end)

  describe("a valid token", function()
    it("becomes a device identity from sub, device, kind and channels", function()
      local t = jwt({ sub = "alice", device = "phone", kind = "mobile", channels = { "news", "orders:*" },
                      exp = now() + 60, iat = now() })
      local id, err = plugin.auth(req(t), conf())
      assert.is_nil(err)
      assert.same({ role = "device", user = "alice", device = "phone", kind = "mobile",
                    channels = { "news", "orders:*" }, expires = now() + 60 + 30 }, id)
    end)

    it("leaves device and kind to the core's defaults when absent and gives no channels", function()
      local id = plugin.auth(req(jwt({ sub = "bob" })), conf())
      assert.same({ role = "device", user = "bob", channels = {} }, id)
    end)

    it("treats JSON null claims as absent", function()
      local id = plugin.auth(req(jwt('{"sub":"bob","device":null,"kind":null,"channels":null,"role":null}')), conf())
      assert.same({ role = "device", user = "bob", channels = {} }, id)
    end)

    it("reads the claims named in the claims mapping", function()
      local t = jwt({ uid = "carol", dev = "till-3", k = "pos", ch = { "store:1" }, sub = "ignored" })
      local id = plugin.auth(req(t), conf({ claims = { user = "uid", device = "dev", kind = "k", channels = "ch" } }))
      assert.same({ role = "device", user = "carol", device = "till-3", kind = "pos", channels = { "store:1" } }, id)
    end)

    it("turns a numeric sub into a string", function()
      local id = plugin.auth(req(jwt({ sub = 12345 })), conf())
      assert.equal("12345", id.user)
    end)

    it("becomes a publisher identity with role = publisher, on any route (the core checks the route)", function()
      local t = jwt({ sub = "billing", role = "publisher", channels = { "orders:*" } })
      assert.same({ role = "publisher", name = "billing", channels = { "orders:*" } }, plugin.auth(req(t), conf()))
      local id = plugin.auth(req(t, { route_type = "publish", route = "/publish" }), conf())
      assert.same({ role = "publisher", name = "billing", channels = { "orders:*" } }, id)
    end)

    it("stays a device identity on a publish route without a role claim (the core refuses it there)", function()
      local id = plugin.auth(req(jwt({ sub = "alice", channels = { "*" } }), { route_type = "publish", route = "/publish" }), conf())
      assert.same({ role = "device", user = "alice", channels = { "*" } }, id)
    end)

    it("becomes a publisher identity without a role claim when publisher = true", function()
      local id = plugin.auth(req(jwt({ sub = "billing", channels = { "orders:*" } })), conf({ publisher = true }))
      assert.same({ role = "publisher", name = "billing", channels = { "orders:*" } }, id)
      -- an explicit role still wins
      id = plugin.auth(req(jwt({ sub = "alice", role = "device" })), conf({ publisher = true }))
      assert.same({ role = "device", user = "alice", channels = {} }, id)
    end)

    it("reads the role from the claim named in claims.role", function()
      local id = plugin.auth(req(jwt({ sub = "billing", typ = "publisher" })), conf({ claims = { role = "typ" } }))
      assert.equal("publisher", id.role)
    end)

    it("carries exp plus the leeway as expires", function()
      local exp = now() + 120
      assert.equal(exp + 30, plugin.auth(req(jwt({ sub = "a", exp = exp })), conf()).expires)
      assert.equal(exp, plugin.auth(req(jwt({ sub = "a", exp = exp })), conf({ leeway = 0 })).expires)
    end)

    it("takes the publisher name from claims.name", function()
      local id = plugin.auth(req(jwt({ sub = "x", svc = "erp" })), conf({ publisher = true, claims = { name = "svc" } }))
      assert.equal("erp", id.name)
    end)
  end)

  describe("refuses with 401", function()
    it("a request without a token", function()
      assert_denied(401, "missing token", plugin.auth(req(nil), conf()))
      assert_denied(401, "missing token", plugin.auth(req(""), conf()))
    end)

    for _, case in ipairs({
      { "one part", "abc" },
      { "two parts", "abc.def" },
      { "four parts", "a.b.c.d" },
      { "only dots", ".." },
    }) do
      it("a token with " .. case[1], function()
        assert_denied(401, "^malformed token", plugin.auth(req(case[2]), conf()))
      end)
    end

    it("a token with a valid signature but an extra fourth part", function()
      assert_denied(401, "^malformed token: a JWT has 3", plugin.auth(req(jwt({ sub = "a" }) .. ".x"), conf()))
    end)

    for _, case in ipairs({
      { "standard base64 characters (+ /)", function(t) return (t:gsub("^(.)", "+")) end },
      { "base64 padding", function(t) return (t:gsub("%.", "=.", 1)) end },
      { "whitespace", function(t) return " " .. t end },
    }) do
      it("a token with " .. case[1], function()
        assert_denied(401, "^malformed token", plugin.auth(req(case[2](jwt({ sub = "a" }))), conf()))
      end)
    end

    it("a header that is not valid base64url", function()
      -- 5 characters: no base64 text has a length of 1 mod 4
      local t = jwt({ sub = "a" })
      local _, p, s = t:match("^(.-)%.(.-)%.(.*)$")
      assert_denied(401, "^malformed token: header", plugin.auth(req("AAAAA." .. p .. "." .. s), conf()))
    end)

    for _, case in ipairs({
      { "not JSON", "alg=HS256" },
      { "a JSON array", '["HS256"]' },
      { "a JSON string", '"HS256"' },
    }) do
      it("a header that is " .. case[1], function()
        assert_denied(401, "^malformed token: header", plugin.auth(req(jwt({ sub = "a" }, { header = case[2] })), conf()))
      end)
    end

    it("alg none without a signature", function()
      local h = b64(json.encode({ alg = "none", typ = "JWT" }))
      local p = b64(json.encode({ sub = "mallory" }))
      assert_denied(401, "unsupported alg none", plugin.auth(req(h .. "." .. p .. "."), conf()))
    end)

    it("alg none even when signed with the secret", function()
      local t = jwt({ sub = "mallory" }, { header = { alg = "none" } })
      assert_denied(401, "unsupported alg none", plugin.auth(req(t), conf()))
    end)

    for _, alg in ipairs({ "hs256", "HS384", "HS512", "RS256", "ES256", "HS256 " }) do
      it("alg " .. alg, function()
        local t = jwt({ sub = "a" }, { header = { alg = alg } })
        assert_denied(401, "^unsupported alg", plugin.auth(req(t), conf()))
      end)
    end

    it("a header without alg or with a non-string alg", function()
      assert_denied(401, "^unsupported alg %(none%)", plugin.auth(req(jwt({ sub = "a" }, { header = { typ = "JWT" } })), conf()))
      assert_denied(401, "^unsupported alg %(none%)", plugin.auth(req(jwt({ sub = "a" }, { header = '{"alg":["HS256"]}' })), conf()))
    end)

    it("a header with crit extensions", function()
      local t = jwt({ sub = "a" }, { header = { alg = "HS256", crit = { "exp" }, exp = 1 } })
      assert_denied(401, "crit", plugin.auth(req(t), conf()))
    end)

    it("a payload changed after signing", function()
      local t = jwt({ sub = "alice", channels = { "news" } })
      local h, _, s = t:match("^(.-)%.(.-)%.(.*)$")
      local forged = h .. "." .. b64(json.encode({ sub = "alice", channels = { "*" } })) .. "." .. s
      assert_denied(401, "^bad signature$", plugin.auth(req(forged), conf()))
    end)

    it("a token signed with another secret", function()
      local t = jwt({ sub = "alice" }, { secret = SECRET .. "-other" })
      assert_denied(401, "^bad signature$", plugin.auth(req(t), conf()))
    end)

    it("a truncated, empty or altered signature", function()
      local t = jwt({ sub = "alice" })
      assert_denied(401, "^bad signature$", plugin.auth(req(t:sub(1, -2)), conf()))
      assert_denied(401, "^bad signature$", plugin.auth(req((t:gsub("[^.]*$", ""))), conf()))
      local i = #t - 10
      local altered = t:sub(1, i - 1) .. (t:sub(i, i) == "A" and "B" or "A") .. t:sub(i + 1)
      assert_denied(401, "^bad signature$", plugin.auth(req(altered), conf()))
    end)

    it("a signature in non-canonical base64url (padding bits set)", function()
      -- 32 bytes take 43 characters; the last one carries 2 unused bits, so
      -- a lenient decoder reads the same MAC: the plugin compares the text.
      local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
      local t = jwt({ sub = "alice" })
      local last = alphabet:find(t:sub(-1), 1, true)
      local odd = t:sub(1, -2) .. alphabet:sub(last + 1, last + 1)
      assert_denied(401, "^bad signature$", plugin.auth(req(odd), conf()))
    end)

    it("a signed payload that is not JSON", function()
      assert_denied(401, "^malformed token: payload", plugin.auth(req(jwt("sub=alice")), conf()))
    end)

    it("a signed payload that is a JSON array", function()
      assert_denied(401, "^malformed token: payload", plugin.auth(req(jwt('["alice"]')), conf()))
    end)

    it("an expired token", function()
      assert_denied(401, "^expired token$", plugin.auth(req(jwt({ sub = "a", exp = now() - 120 })), conf()))
    end)

    it("a token expired by less than the leeway only when leeway is 0", function()
      local t = jwt({ sub = "a", exp = now() - 5 })
      assert.is_table((plugin.auth(req(t), conf())))
      assert_denied(401, "^expired token$", plugin.auth(req(t), conf({ leeway = 0 })))
    end)

    it("a token used before nbf (beyond the leeway)", function()
      assert_denied(401, "not yet valid", plugin.auth(req(jwt({ sub = "a", nbf = now() + 120 })), conf()))
      assert.is_table((plugin.auth(req(jwt({ sub = "a", nbf = now() + 10 })), conf())))
    end)

    it("a token issued in the future (beyond the leeway)", function()
      assert_denied(401, "issued in the future", plugin.auth(req(jwt({ sub = "a", iat = now() + 120 })), conf()))
      assert.is_table((plugin.auth(req(jwt({ sub = "a", iat = now() - 3600 })), conf())))
    end)

    for _, claim in ipairs({ "exp", "nbf", "iat" }) do
      it("a token whose " .. claim .. " is not a number", function()
        assert_denied(401, "^malformed token: " .. claim, plugin.auth(req(jwt({ sub = "a", [claim] = tostring(now()) })), conf()))
      end)
    end

    it("a token without exp when require_exp is set", function()
      assert_denied(401, "no exp", plugin.auth(req(jwt({ sub = "a" })), conf({ require_exp = true })))
      assert.is_table((plugin.auth(req(jwt({ sub = "a", exp = now() + 60 })), conf({ require_exp = true }))))
    end)

    it("a token from another issuer, or with none", function()
      local c = conf({ issuer = { "billing", "erp" } })
      assert.is_table((plugin.auth(req(jwt({ sub = "a", iss = "erp" })), c)))
      assert_denied(401, "wrong issuer", plugin.auth(req(jwt({ sub = "a", iss = "mallory" })), c))
      assert_denied(401, "wrong issuer", plugin.auth(req(jwt({ sub = "a" })), c))
    end)

    it("a token for another audience, as a string or a list", function()
      local c = conf({ audience = "push" })
      assert.is_table((plugin.auth(req(jwt({ sub = "a", aud = "push" })), c)))
      assert.is_table((plugin.auth(req(jwt({ sub = "a", aud = { "web", "push" } })), c)))
      assert_denied(401, "wrong audience", plugin.auth(req(jwt({ sub = "a", aud = "web" })), c))
      assert_denied(401, "wrong audience", plugin.auth(req(jwt({ sub = "a", aud = { "web" } })), c))
      assert_denied(401, "wrong audience", plugin.auth(req(jwt({ sub = "a" })), c))
    end)

    it("a channels claim that is not a list of strings", function()
      assert_denied(401, "channels", plugin.auth(req(jwt({ sub = "a", channels = "news" })), conf()))
      assert_denied(401, "channels", plugin.auth(req(jwt({ sub = "a", channels = { "news", 5 } })), conf()))
    end)

    it("a role claim other than device or publisher", function()
      assert_denied(401, "role", plugin.auth(req(jwt({ sub = "a", role = "admin" })), conf()))
      assert_denied(401, "role", plugin.auth(req(jwt({ sub = "a", role = 1 })), conf()))
    end)

    it("a device or kind claim that is not a string", function()
      assert_denied(401, "device", plugin.auth(req(jwt({ sub = "a", device = 3 })), conf()))
      assert_denied(401, "kind", plugin.auth(req(jwt({ sub = "a", kind = { "pos" } })), conf()))
    end)

    it("an oversized token without looking at it", function()
      assert_denied(401, "too long", plugin.auth(req(string.rep("a", 9000)), conf()))
    end)

    it("never echoes the token in the message", function()
      local t = jwt({ sub = "a", exp = now() - 120 })
      local _, err = plugin.auth(req(t), conf())
      assert.is_nil(err.message:find(t, 1, true))
    end)
  end)

  describe("refuses with 403", function()
    it("an authentic token without a user on a device route", function()
      assert_denied(403, "no user", plugin.auth(req(jwt({ name = "x" })), conf()))
      assert_denied(403, "no user", plugin.auth(req(jwt({ sub = "" })), conf()))
    end)

    it("an authentic token without a name on a publish route", function()
      assert_denied(403, "no publisher name", plugin.auth(req(jwt({ user = "x" })), conf({ publisher = true })))
      assert_denied(403, "no publisher name", plugin.auth(req(jwt({ user = "x", role = "publisher" })), conf()))
    end)

    it("an authentic token without a role claim when require_role is set", function()
      assert_denied(403, "no role", plugin.auth(req(jwt({ sub = "x" })), conf({ require_role = true })))
      assert.equal("device", plugin.auth(req(jwt({ sub = "x", role = "device" })), conf({ require_role = true })).role)
    end)
  end)

  describe("with the RFC 7515 A.1 example token", function()
    local key = moonpush.base64url_decode(
      "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
    local token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
      .. ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
      .. ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

    it("verifies its signature and then finds it expired today", function()
      assert_denied(401, "^expired token$", plugin.auth(req(token), unit.config(plugin, { secret = key })))
    end)

    it("accepts it before its exp as a publisher named by iss", function()
      local p = load(1300819380 - 3600)
      local id, err = p.auth(req(token), unit.config(p, { secret = key, issuer = "joe", publisher = true,
                                                          claims = { name = "iss" } }))
      assert.is_nil(err)
      assert.same({ role = "publisher", name = "joe", channels = {}, expires = 1300819380 + 30 }, id)
    end)

    it("refuses it as a device token: it has no sub", function()
      local p = load(1300819380 - 3600)
      assert_denied(403, "no user", p.auth(req(token), unit.config(p, { secret = key })))
    end)
  end)

  it("loads through the server's plugin loader", function()
    local p = unit.load_through_server(PLUGIN, "auth_jwt")
    assert.equal("auth_jwt", p.name)
    assert.is_function(p.auth)
  end)
end)
