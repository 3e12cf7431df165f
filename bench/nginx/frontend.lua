-- The nginx + Lua + Redis tracking frontend that `make bench` measures pixelgate against.
--
-- It does what such frontends do: a token is `PAYLOAD.SIG`, PAYLOAD the base64url of the ids
-- (and, for a click, the destination) joined by newlines, SIG the base64url of HMAC-SHA1 over
-- PAYLOAD. A pixel always answers the GIF; a click with a good signature redirects, otherwise
-- 404. Each good request `RPUSH`es one event, the same JSON record pixelgate writes, and is
-- answered after Redis replies, as pixelgate answers after its batch is acknowledged. Tokens are
-- signed, not sealed: anyone who reads the mail can read the ids (pixelgate encrypts them).

local redis = require "nginx.redis"
local b64 = require "ngx.base64"

local hmac_sha1 = ngx.hmac_sha1
local encode_base64url = b64.encode_base64url
local decode_base64url = b64.decode_base64url
local format = string.format
local gsub = string.gsub
local match = string.match
local sub = string.sub

local M = {}

local config

-- A transparent 1x1 GIF89a, the bytes pixelgate answers.
local GIF = "GIF89a\1\0\1\0\128\0\0\0\0\0\255\255\255\33\249\4\1\0\0\0\0\44\0\0\0\0\1\0\1\0\0\2\2\68\1\0\59"

local MAX_USER_AGENT = 512

function M.configure(c)
  config = c
end

-- JSON string escaping for the characters that need it (quote, backslash, control characters).
local escapes = { ['"'] = '\\"', ['\\'] = '\\\\' }
local function escape(s)
  return (gsub(s, '[%c"\\]', function(c)
    return escapes[c] or format("\\u%04x", c:byte())
  end))
end

-- The fields of a good token, or nil.
local function verify(payload, sig)
  if not payload or encode_base64url(hmac_sha1(config.secret, payload)) ~= sig then
    return nil
  end
  local raw = decode_base64url(payload)
  if not raw then
    return nil
  end
  local account, campaign, message, recipient, url = match(raw, "^([^\n]+)\n([^\n]+)\n([^\n]+)\n([^\n]+)\n?([^\n]*)$")
  if not account then
    return nil
  end
  return { account = account, campaign = campaign, message = message, recipient = recipient, url = url }
end

-- UTC time with milliseconds, as pixelgate writes `ts`.
local function timestamp()
  local now = ngx.now()
  local ms = math.floor((now % 1) * 1000)
  return format("%s.%03dZ", gsub(ngx.utctime(), " ", "T"), ms)
end

-- One RPUSH of the event; answered requests never fail because Redis did.
local function record(kind, f)
  local ua = ngx.var.http_user_agent or ""
  if #ua > MAX_USER_AGENT then
    ua = sub(ua, 1, MAX_USER_AGENT)
  end
  local url = ""
  if kind == "click" then
    url = format('"url":"%s",', escape(f.url))
  end
  local event = format(
    '{"v":1,"id":"%s","kind":"%s","ts":"%s","account":"%s","campaign":"%s","message":"%s","recipient":"%s",%s"ip":"%s","ua":"%s"}',
    ngx.var.request_id, kind, timestamp(), escape(f.account), escape(f.campaign),
    escape(f.message), escape(f.recipient), url, ngx.var.remote_addr, escape(ua))

  local red = redis:new()
  red:set_timeouts(500, 500, 500)
  local ok, err = red:connect(config.redis_host, config.redis_port)
  if not ok then
    ngx.log(ngx.ERR, "redis connect: ", err)
    return
  end
  local _, perr = red:rpush(config.key, event)
  if perr then
    ngx.log(ngx.ERR, "redis rpush: ", perr)
    red:close()
    return
  end
  red:set_keepalive(60000, 512)
end

-- GET /o/PAYLOAD.SIG.gif: always the GIF; one open event when the signature holds.
function M.open()
  local payload, sig = match(ngx.var.uri, "^/o/([%w_-]+)%.([%w_-]+)%.gif$")
  local fields = verify(payload, sig)
  if fields then
    record("open", fields)
  end
  ngx.header["Content-Type"] = "image/gif"
  ngx.header["Content-Length"] = #GIF
  ngx.header["Cache-Control"] = "no-store, no-cache, must-revalidate, max-age=0"
  ngx.header["Pragma"] = "no-cache"
  ngx.header["Expires"] = "0"
  ngx.print(GIF)
end

-- GET /c/PAYLOAD.SIG: 302 to the signed destination and one click event; 404 otherwise.
function M.click()
  local payload, sig = match(ngx.var.uri, "^/c/([%w_-]+)%.([%w_-]+)$")
  local fields = verify(payload, sig)
  if not fields or fields.url == "" then
    ngx.header["Content-Type"] = "text/plain"
    ngx.header["Content-Length"] = 10
    ngx.status = 404
    ngx.print("not found\n")
    return
  end
  record("click", fields)
  ngx.header["Cache-Control"] = "no-store"
  return ngx.redirect(fields.url, 302)
end

return M
