-- Raw deflate / inflate for the permessage-deflate specs and bench, via
-- LuaJIT's FFI to the system libz (the server links the same library, but
-- the specs must not trust the server's code to check the server).
-- RFC 7692 7.2.1: a message is compressed with a sync flush and its trailing
-- 00 00 ff ff dropped; the receiver appends it before inflating.
local ffi = require "ffi"

pcall(ffi.cdef, [[
typedef struct mp_spec_z_stream {
  const unsigned char *next_in; unsigned avail_in; unsigned long total_in;
  unsigned char *next_out; unsigned avail_out; unsigned long total_out;
  const char *msg; void *state;
  void *zalloc; void *zfree; void *opaque;
  int data_type; unsigned long adler; unsigned long reserved;
} mp_spec_z_stream;
const char *zlibVersion(void);
int deflateInit2_(mp_spec_z_stream *s, int level, int method, int windowBits, int memLevel, int strategy,
                  const char *version, int stream_size);
int deflate(mp_spec_z_stream *s, int flush);
int deflateEnd(mp_spec_z_stream *s);
int inflateInit2_(mp_spec_z_stream *s, int windowBits, const char *version, int stream_size);
int inflate(mp_spec_z_stream *s, int flush);
int inflateEnd(mp_spec_z_stream *s);
]])

local z = ffi.load("z")
local M = {}
local Z_SYNC_FLUSH, Z_FINISH = 2, 4
local TAIL = "\0\0\255\255"

-- data compressed as one message (final = true: a final block, no tail to drop).
function M.deflate(data, opts)
  opts = opts or {}
  local s = ffi.new("mp_spec_z_stream")
  assert(z.deflateInit2_(s, opts.level or 6, 8, -15, 8, 0, z.zlibVersion(), ffi.sizeof(s)) == 0)
  local cap = #data + 1024
  local out = ffi.new("unsigned char[?]", cap)
  s.next_in, s.avail_in = data, #data
  s.next_out, s.avail_out = out, cap
  local rc = z.deflate(s, opts.final and Z_FINISH or Z_SYNC_FLUSH)
  local n = cap - s.avail_out
  z.deflateEnd(s)
  assert(rc == 0 or rc == 1, "deflate failed: " .. rc)
  local bytes = ffi.string(out, n)
  if opts.final then return bytes end
  assert(bytes:sub(-4) == TAIL, "sync flush did not end in 00 00 ff ff")
  return bytes:sub(1, -5)
end

-- The message a compressed payload holds; nil, err if it is not valid.
function M.inflate(payload, max)
  max = max or 16 * 1048576
  local s = ffi.new("mp_spec_z_stream")
  assert(z.inflateInit2_(s, -15, z.zlibVersion(), ffi.sizeof(s)) == 0)
  local input = payload .. TAIL
  local out = ffi.new("unsigned char[?]", max)
  s.next_in, s.avail_in = input, #input
  s.next_out, s.avail_out = out, max
  local rc = z.inflate(s, Z_SYNC_FLUSH)
  local n = max - s.avail_out
  z.inflateEnd(s)
  if rc ~= 0 and rc ~= 1 then return nil, "inflate failed: " .. rc end
  return ffi.string(out, n)
end

return M
