-- Pieces of route configs for server.start overrides: the auth_token
-- plugin entries with the default tokens and publishers, and the ack route
-- of the delivery specs. Every call returns fresh tables (copies), so a
-- spec may edit what it gets.
--
--   local routes = require "helpers.routes"
--   { path = "/ev", type = "websocket", plugins = { routes.device_auth(), { name = "events" } } }
--   { path = "/publish", type = "publish", plugins = { routes.publisher_auth() } }
--   table.insert(cfg.routes, routes.ack_route({ timeout_ms = 200, ... }, tokens))

local server = require "helpers.server"
local util = require "helpers.util"

local M = {}

-- The publisher book with only the backend (server.PUBLISHER, every channel).
function M.backend()
  return { [server.PUBLISHER] = { name = "backend", channels = { "*" } } }
end

-- The publisher book of the default config: the backend, and the newsroom
-- (server.NEWS_PUBLISHER, allowed only "news" and "orders:*").
function M.publishers()
  local t = M.backend()
  t[server.NEWS_PUBLISHER] = { name = "newsroom", channels = { "news", "orders:*" } }
  return t
end

-- auth_token for a websocket route: `tokens` (default server.TOKENS).
function M.device_auth(tokens)
  return { name = "auth_token", config = { tokens = util.copy(tokens or server.TOKENS) } }
end

-- auth_token for a publish (or history, presence, metrics) route:
-- `publishers` (default: the backend only).
function M.publisher_auth(publishers)
  return { name = "auth_token", config = { publishers = util.copy(publishers or M.backend()) } }
end

-- The websocket route /ws/acked with the route option `acks` and
-- auth_token over `tokens`.
function M.ack_route(acks, tokens)
  return { path = "/ws/acked", type = "websocket", acks = acks, plugins = { M.device_auth(tokens) } }
end

return M
