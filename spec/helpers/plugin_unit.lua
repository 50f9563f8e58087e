-- For the unit specs of plugins (no server): the request an auth hook
-- sees, the checks of a validate() refusal and of a denial, and loading a
-- plugin through the server's own loader.
--
--   local unit = require "helpers.plugin_unit"
--   local conf = unit.config(plugin, { secret = "..." })   -- as the loader fills it
--   unit.refuses(plugin, { bad = "config" }, "unknown option")
--   unit.assert_unauthorized("unknown token", plugin.auth(unit.auth_request("mallory"), conf))
--   local p = unit.load_through_server("plugins/auth_token.lua", "auth_token")

local assert = require "luassert"

local M = {}

-- The request table of an auth hook: a GET of /ws on a websocket route with
-- `token`, fields overridden by `extra` (route, route_type, remote_addr...).
function M.auth_request(token, extra)
  local r = { method = "GET", path = "/ws", route = "/ws", route_type = "websocket",
              query = {}, headers = {}, remote_addr = "10.0.0.1:4000", token = token }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

-- The config the server's loader makes of `conf` for `plugin` (its schema
-- checked and defaults filled in, then its validate run): what the hooks
-- get in the server. Fails the test if the loader refuses it.
function M.config(plugin, conf)
  local out, err = require("moonpush.plugins").check_config(plugin, conf)
  assert.is_nil(err)
  assert.is_table(out)
  return out
end
M.accepts = M.config

-- The loader refuses `conf` for `plugin` (schema or validate) with a reason
-- matching `pattern` (plain text) when one is given. Returns the reason.
function M.refuses(plugin, conf, pattern)
  local ok, err = require("moonpush.plugins").check_config(plugin, conf)
  assert.is_nil(ok)
  assert.is_string(err)
  if pattern then assert.matches(pattern, err, 1, true) end
  return err
end

-- A hook's answer (nil, err) is a denial with that status, code and a
-- message matching `pattern`.
function M.assert_denied(status, code, pattern, value, err)
  assert.is_nil(value)
  assert.is_table(err)
  assert.equal(status, err.status)
  assert.equal(code, err.code)
  assert.matches(pattern, err.message)
end

-- An auth hook's answer (nil, err) is a 401 unauthorized matching `pattern`.
function M.assert_unauthorized(pattern, id, err)
  M.assert_denied(401, "unauthorized", pattern, id, err)
end

-- Loads `file` as plugin `name` through moonpush.plugins (the server's
-- loader; where it has no load_path, by name from `dir`, default
-- "plugins") and insists that it loads. Returns the plugin.
function M.load_through_server(file, name, dir)
  local plugins = require "moonpush.plugins"
  local loadp = plugins.load_path or function(_, n) return plugins.load_file(dir or "plugins", n) end
  local p, err = loadp(file, name)
  assert.is_nil(err)
  return p
end

return M
