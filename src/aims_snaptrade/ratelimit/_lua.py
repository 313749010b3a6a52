"""The composed budget check as one Redis server-side script (registered once, run by EVALSHA).

``limits`` takes one key per call and has no multi-key transaction, so the check that takes a
slot from every budget of a call (plan minute/hour/day, customer, account, user) is this one
script: it runs atomically on the Redis server, in one round trip, and takes every budget or
none. It keeps ``limits``' key layout and entry format, so ``limits``' strategies read what it
writes (``get_window_stats``, ``test``):

* moving window: a list of request timestamps under ``LIMITS:<item key>``, newest first, trimmed
  to the limit. A slot counts as taken while its timestamp is within ``window + margin`` seconds,
  and the key expires only ``window + margin`` after its newest entry (``limits`` sets the plain
  window on every hit, so a key written by ``limits`` alone vanishes before the margin passed);
* sliding-window counter: ``limits``' two counters ``LIMITS:{<item key>}`` (current window) and
  ``LIMITS:{<item key>}/-1`` (previous one), shifted as ``limits``' own script shifts them.

Before taking, the script records what SnapTrade reported on earlier answers
(``X-RateLimit-Remaining`` lower than ours): that costs ``observe`` no round trip of its own.

``ARGV``: ``now``, one string of :data:`FIELDS` space-separated values per budget, and one
string of re-stamps (``budget old new`` triples; see
:func:`aims_snaptrade.ratelimit._take.script_call`). Result: ``taken`` (1/0), then per budget its
status (``""`` room, ``"h"`` held by SnapTrade's report, else seconds until room) and then per
budget the slots recorded from a report, and the stamp the slots were taken with.
"""

from __future__ import annotations

FIELDS = 9
"""ARGV values per budget: sliding, limit, span, amount, depth, since, used, noise, hold."""

COMPOSED_CHECK = """
local now_text = ARGV[1]
local now = tonumber(now_text)
-- One space-separated string carries every budget's fields: encoding a few dozen separate
-- arguments per call would cost the client more than the script costs the server.
local fields = {}
for word in string.gmatch(ARGV[2], '%S+') do
    fields[#fields + 1] = word
end
local F = 9
local n = #fields / F
local specs = {}
local k = 1
for i = 1, n do
    local b = (i - 1) * F
    local s = {
        sliding = fields[b + 1] == '1',
        limit = tonumber(fields[b + 2]),
        span = tonumber(fields[b + 3]),
        amount = tonumber(fields[b + 4]),
        depth = tonumber(fields[b + 5]),
        since = tonumber(fields[b + 6]),
        used = tonumber(fields[b + 7]),
        noise = tonumber(fields[b + 8]),
        hold = fields[b + 9] == '1',
    }
    s.key = KEYS[k]
    k = k + 1
    if s.sliding then
        s.prev = KEYS[k]
        k = k + 1
    end
    specs[i] = s
end

-- Re-stamps (ARGV[3]: "budget old new" triples): a slot of this process whose answer came late
-- counts from the answer, as the request may have reached SnapTrade any time before it.
local function moving_move(s, old, new)
    if redis.call('lrem', s.key, 1, old) == 0 then
        return
    end
    local at = tonumber(new)
    local low, high = 0, redis.call('llen', s.key) - 1
    local index = nil
    while low <= high do
        local mid = math.floor((low + high) / 2)
        if tonumber(redis.call('lindex', s.key, mid)) <= at then
            index = mid
            high = mid - 1
        else
            low = mid + 1
        end
    end
    if index then
        redis.call('linsert', s.key, 'BEFORE', redis.call('lindex', s.key, index), new)
    else
        redis.call('rpush', s.key, new)
    end
    -- At least 1 ms: an already expired newest entry gives ceil() of a value in (-1, 0], which is
    -- -0 in Lua and "-0" is no integer to Redis (the script would fail instead of expiring the key).
    local ttl = math.max(1, math.ceil((tonumber(redis.call('lindex', s.key, 0)) + s.span - now) * 1000))
    if ttl > redis.call('pttl', s.key) then
        redis.call('pexpire', s.key, ttl)
    end
end

local moves = {}
for word in string.gmatch(ARGV[3] or '', '%S+') do
    moves[#moves + 1] = word
end
for m = 1, #moves, 3 do
    local s = specs[tonumber(moves[m])]
    if not s.sliding then
        moving_move(s, moves[m + 1], moves[m + 2])
    end
end

-- Entries must stay sorted, newest first: a caller whose clock reading is older than the newest
-- entry (it was read just before another caller's check ran) takes its slot at that entry's time.
for _, s in ipairs(specs) do
    if not s.sliding then
        local head = redis.call('lindex', s.key, 0)
        if head and tonumber(head) > now then
            now = tonumber(head)
            now_text = head
        end
    end
end

-- moving window: limits' list of timestamps, newest first
local function moving_push(s, count)
    local entries = {}
    for i = 1, count do
        entries[i] = now_text
    end
    for i = 1, #entries, 5000 do
        redis.call('lpush', s.key, unpack(entries, i, math.min(i + 4999, #entries)))
    end
    redis.call('ltrim', s.key, 0, s.limit - 1)
    -- the margin is part of the window: the key must outlive its newest entry by window + margin
    redis.call('pexpire', s.key, math.ceil(s.span * 1000))
end

local function moving_used(s, from)
    -- entries are newest first: binary search for the last one newer than `from`
    local low, high = 0, redis.call('llen', s.key) - 1
    local count = 0
    while low <= high do
        local mid = math.floor((low + high) / 2)
        if tonumber(redis.call('lindex', s.key, mid)) > from then
            count = mid + 1
            low = mid + 1
        else
            high = mid - 1
        end
    end
    return count
end

local function moving_wait(s)
    -- Room for this call and every in-process waiter ahead of it (depth): the slot this call
    -- would get is the (depth + amount)-th to free; beyond the limit it frees a lap later.
    local need = s.amount + s.depth
    local lap = math.floor((need - 1) / s.limit)
    local index = s.limit - ((need - 1) % s.limit) - 1
    local entry = redis.call('lindex', s.key, index)
    if not entry then
        if lap == 0 then
            return nil
        end
        return lap * s.span
    end
    local frees = tonumber(entry) + s.span * (lap + 1)
    if lap == 0 and frees < now then
        return nil
    end
    return math.max(frees - now, 0.001)
end

-- sliding-window counter: limits' current and previous counters
local function sliding_state(s)
    local expiry = s.span * 1000
    local current_ttl = tonumber(redis.call('pttl', s.key))
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', s.key, s.prev)
        redis.call('set', s.key, 0, 'PX', current_ttl + expiry)
    end
    local pc = tonumber(redis.call('get', s.prev)) or 0
    local pt = tonumber(redis.call('pttl', s.prev)) or 0
    local cc = tonumber(redis.call('get', s.key)) or 0
    local ct = tonumber(redis.call('pttl', s.key)) or 0
    if pt < 0 then pt = 0 end
    if ct < 0 then ct = 0 end
    return pc, pt, cc, ct, math.floor(pc * pt / expiry) + cc
end

local function sliding_add(s, count)
    if redis.call('exists', s.key) == 1 then
        redis.call('incrby', s.key, count)
    else
        redis.call('set', s.key, count, 'PX', s.span * 2000)
    end
end

local function sliding_wait(s)
    local expiry = s.span * 1000
    local pc, pt, cc, ct, weighted = sliding_state(s)
    local need = s.amount + s.depth
    if weighted + need <= s.limit then
        return nil
    end
    local room = s.limit - cc - need
    if pc > 0 and room >= 0 then
        -- the previous window's weight decays linearly: wait until floor(pc * ttl / expiry) <= room
        return math.max((pt - (room + 1) * expiry / pc) / 1000, 0.001)
    end
    return math.max((ct - expiry) / 1000, 0.001)
end

local statuses = {}
local recorded = {}
local blocked = false
for i, s in ipairs(specs) do
    statuses[i] = ''
    recorded[i] = 0
    if s.since >= 0 then
        local used
        if s.sliding then
            local _, _, _, _, weighted = sliding_state(s)
            used = weighted
        else
            used = moving_used(s, s.since - s.span)
        end
        local missing = math.min(s.used - used, s.limit)
        if missing > s.noise then
            if s.hold then
                statuses[i] = 'h'
                blocked = true
            else
                if s.sliding then sliding_add(s, missing) else moving_push(s, missing) end
                recorded[i] = missing
            end
        end
    end
end
for i, s in ipairs(specs) do
    if s.amount > 0 and statuses[i] == '' then
        local wait
        if s.sliding then wait = sliding_wait(s) else wait = moving_wait(s) end
        if wait then
            statuses[i] = tostring(wait)
            blocked = true
        end
    end
end
local result = {0}
if not blocked then
    for _, s in ipairs(specs) do
        if s.amount > 0 then
            if s.sliding then sliding_add(s, s.amount) else moving_push(s, s.amount) end
        end
    end
    result[1] = 1
end
for i = 1, n do
    result[1 + i] = statuses[i]
end
for i = 1, n do
    result[1 + n + i] = recorded[i]
end
-- the time the slots were stamped with (later than ARGV[1] when another caller's was newer)
result[2 + 2 * n] = now_text
return result
"""
