package redisstore

import "github.com/redis/go-redis/v9"

// pickScript is routing.Choose in Lua, plus the mark checks, the session binding and the
// reservation: the whole pick in one atomic round trip. It reads the clock with TIME, so every
// replica compares marks against the same clock. Keep it equal to routing.Choose and the
// memory store's Pick: the storetest contract runs against both.
//
// KEYS[1] round-robin counter, KEYS[2] set of known accounts, KEYS[3] the session's binding
// (not touched without a session), then for candidate i: KEYS[2+2i] its counters hash and
// KEYS[3+2i] its marks hash.
//
// ARGV[1] strategy (0 least-used, 1 round-robin, 2 priority), ARGV[2] candidate count n,
// ARGV[3] "1" with a session, ARGV[4] binding TTL in ms (0: do not bind), ARGV[5] TTL in ms of
// the counters, ARGV[6] scope count s, ARGV[7..6+s] scopes, then per candidate: name, weight,
// priority, credential scope.
//
// Returns {account, why}, or {"", "", retry_at_ms, reason} when every candidate is blocked
// (retry_at_ms is -1 without candidates).
var pickScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local strategy = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local hasSession = ARGV[3] == '1'
local bindTTL = tonumber(ARGV[4])
local keepTTL = tonumber(ARGV[5])
local ns = tonumber(ARGV[6])

-- Mark fields that apply to every candidate: scope "" and the request's scopes, hard and soft.
local fields = {'h:', 's:'}
for j = 1, ns do
  fields[#fields + 1] = 'h:' .. ARGV[6 + j]
  fields[#fields + 1] = 's:' .. ARGV[6 + j]
end
local common = #fields
local base = 6 + ns

local name, weight, prio, req, last, hard, soft = {}, {}, {}, {}, {}, {}, {}
local retry, retryReason = -1, ''
for i = 1, n do
  local a = base + (i - 1) * 4
  name[i] = ARGV[a + 1]
  weight[i] = math.max(tonumber(ARGV[a + 2]) or 1, 1)
  prio[i] = tonumber(ARGV[a + 3]) or 0
  local cred = ARGV[a + 4]
  local c = redis.call('HMGET', KEYS[2 + 2 * i], 'requests', 'last_used')
  req[i] = tonumber(c[1]) or 0
  last[i] = tonumber(c[2]) or 0
  fields[common + 1], fields[common + 2] = nil, nil
  if cred ~= '' then
    fields[common + 1], fields[common + 2] = 'h:' .. cred, 's:' .. cred
  end
  local m = redis.call('HMGET', KEYS[3 + 2 * i], unpack(fields))
  hard[i], soft[i] = false, false
  -- A hard-marked candidate becomes free when its latest blocking mark ends.
  local free, why = 0, ''
  for k = 1, #fields do
    local v = m[k]
    if v then
      local sep = string.find(v, '|', 1, true)
      local u = sep and tonumber(string.sub(v, 1, sep - 1))
      if u and u > now then
        if string.byte(fields[k], 1) == 104 then -- 'h'
          hard[i] = true
          if u > free then free, why = u, string.sub(v, sep + 1) end
        else
          soft[i] = true
        end
      end
    end
  end
  if hard[i] and (retry < 0 or free < retry) then retry, retryReason = free, why end
end

local win, why = -1, ''
if hasSession then
  local bound = redis.call('GET', KEYS[3])
  if bound then
    for i = 1, n do
      if name[i] == bound and not hard[i] then
        win, why = i, 'affinity'
        break
      end
    end
  end
end

if win < 0 then
  -- routing.Choose.
  local avail, allSoft = 0, false
  for i = 1, n do
    if not hard[i] then
      avail = avail + 1
      if not soft[i] then
        allSoft = false
        break
      end
      allSoft = true
    end
  end
  if avail == 0 then
    return {'', '', retry, retryReason}
  end
  local function usable(i) return not hard[i] and (allSoft or not soft[i]) end
  local function less(i, j)
    if strategy == 2 and prio[i] ~= prio[j] then return prio[i] < prio[j] end
    local x, y = req[i] * weight[j], req[j] * weight[i]
    if x ~= y then return x < y end
    return last[i] < last[j]
  end
  if strategy == 1 then why = 'round-robin' elseif strategy == 2 then why = 'priority' else why = 'least-used' end
  if allSoft then why = 'only-soft' end
  if strategy == 1 then
    local k = 0
    for i = 1, n do
      if usable(i) then k = k + 1 end
    end
    local want = (tonumber(redis.call('GET', KEYS[1])) or 0) % k
    for i = 1, n do
      if usable(i) then
        if want == 0 then
          win = i
          break
        end
        want = want - 1
      end
    end
    redis.call('INCR', KEYS[1])
    redis.call('PEXPIRE', KEYS[1], keepTTL)
  else
    for i = 1, n do
      if usable(i) and (win < 0 or less(i, win)) then win = i end
    end
  end
end

local w = name[win]
local ck = KEYS[2 + 2 * win]
redis.call('HINCRBY', ck, 'requests', 1)
redis.call('HSET', ck, 'last_used', now)
redis.call('PEXPIRE', ck, keepTTL)
redis.call('SADD', KEYS[2], w)
redis.call('PEXPIRE', KEYS[2], keepTTL)
if hasSession and bindTTL > 0 then
  redis.call('SET', KEYS[3], w, 'PX', bindTTL)
end
return {w, why}
`)

// markScript sets (or, with an expiry not after now, clears) one mark field, drops expired
// fields and makes the hash expire with its latest mark.
//
// KEYS[1] the account's marks hash, KEYS[2] the set of known accounts.
// ARGV[1] account, ARGV[2] field ("h:SCOPE" or "s:SCOPE"), ARGV[3] until in ms, ARGV[4] reason,
// ARGV[5] TTL in ms of the set of known accounts.
var markScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untilMs = tonumber(ARGV[3])
if untilMs > now then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|' .. ARGV[4])
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
local all = redis.call('HGETALL', KEYS[1])
local latest = 0
for i = 1, #all, 2 do
  local u = tonumber(string.match(all[i + 1], '^(%d+)|')) or 0
  if u <= now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif u > latest then
    latest = u
  end
end
if latest > 0 then
  redis.call('PEXPIREAT', KEYS[1], latest)
end
return 1
`)
