-- For the unit specs of plugins (no server): the request an auth hook
-- sees, the checks of a validate() refusal and of a denial, and loading a
-- plugin through the server's own loader.
--
--   local unit = require "helpers.plugin_unit"
--   unit.refuses(plugin, { bad = "config" })
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

-- plugin.validate(conf) refuses: nil and a reason.
function M.refuses(plugin, conf)
  local ok, err = plugin.validate(conf)
  assert.is_nil(ok)
  assert.is_string(err)
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
