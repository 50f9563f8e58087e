-- Tokens for the /ws/pos route of examples/pos.lua (read by the auth_table
-- plugin, examples/plugins/auth_table.lua). Edit while the server runs: the
-- table is re-read within reload_interval seconds. Plain data only.
return {
  -- device tokens: one per till
  ["till-12-1-secret"] = { user = "store-12", device = "till-1", kind = "pos", channels = { "store:12", "prices" } },
  ["till-12-2-secret"] = { user = "store-12", device = "till-2", kind = "pos", channels = { "store:12", "prices" } },
  ["till-40-1-secret"] = { user = "store-40", device = "till-1", kind = "pos", channels = { "store:40", "prices" } },
}
