"""Lua shared by the Redis stores of the handlers (cases, incidents)."""

from __future__ import annotations

__all__ = ["page_query"]


def page_query(all_index: str, hash_prefix: str) -> str:
    """A script returning `{total, hash, hash, ...}`: one page, newest first, of the ids in the
    intersection of the sorted-set indexes given as ARGV[4:] (`all_index` when none), each id
    read from the hash `<prefix><hash_prefix><id>`. ARGV[1..3]: key prefix, offset, limit."""
    return r"""
local P, offset, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local keys = {}
for i = 4, #ARGV do keys[#keys + 1] = ARGV[i] end
if #keys == 0 then keys = {P .. '__ALL__'} end
local ids, total
if #keys == 1 then
  total = redis.call('ZCARD', keys[1])
  if limit <= 0 then return {total} end
  ids = redis.call('ZREVRANGE', keys[1], offset, offset + limit - 1)
else
  local all = redis.call('ZINTER', #keys, unpack(keys))
  total = #all
  ids = {}
  local i = #all - offset
  while i >= 1 and #ids < limit do
    ids[#ids + 1] = all[i]
    i = i - 1
  end
end
local out = {total}
for _, id in ipairs(ids) do out[#out + 1] = redis.call('HGETALL', P .. '__HASH__' .. id) end
return out
""".replace("__ALL__", all_index).replace("__HASH__", hash_prefix)
