"""The completed-offset store of skip_duplicates in Redis, shared by every listener and worker of an app.

Completed offsets are bits in bitmaps, one per 65,536 offsets of a partition, so a
million remembered offsets take about 128 KB; each bitmap expires `ttl` seconds after
its last write. Claims are plain keys with a lease. Both operations are one Lua script:
check-and-claim, and record-and-release, each atomic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

BUCKET = 65536

_CLAIM = """
local prefix, owner, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local done, rest = {}, {}
for i = 4, #ARGV do
  local o = tonumber(ARGV[i])
  if redis.call('GETBIT', prefix .. '.done.' .. math.floor(o / 65536), o % 65536) == 1 then
    table.insert(done, ARGV[i])
  else
    local holder = redis.call('GET', prefix .. '.claim.' .. ARGV[i])
    if holder and holder ~= owner then return {1, done} end
    table.insert(rest, ARGV[i])
  end
end
for _, o in ipairs(rest) do redis.call('SET', prefix .. '.claim.' .. o, owner, 'PX', lease) end
return {0, done}
"""

_RECORD = """
local prefix, owner, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV do
  local o = tonumber(ARGV[i])
  local bucket = prefix .. '.done.' .. math.floor(o / 65536)
  redis.call('SETBIT', bucket, o % 65536, 1)
  redis.call('EXPIRE', bucket, ttl)
  local claim = prefix .. '.claim.' .. ARGV[i]
  if redis.call('GET', claim) == owner then redis.call('DEL', claim) end
end
return #ARGV - 3
"""


def prefix(group_id: str, topic: str, partition: int) -> str:
    return f"kbridge.dup.{group_id}.{topic}.{partition}"


class RedisCompletedStore:
    def __init__(self, url: str, ttl: float) -> None:
        self.client = redis.Redis.from_url(url)
        self.ttl = max(1, int(ttl))
        self._claim: Any = self.client.register_script(_CLAIM)
        self._record: Any = self.client.register_script(_RECORD)

    def claim(self, group_id: str, topic: str, partition: int, offsets: Sequence[int], owner: str,
              lease: float) -> tuple[set[int], bool]:
        busy, done = self._claim(args=[prefix(group_id, topic, partition), owner, int(lease * 1000), *offsets])
        return {int(o) for o in done}, bool(busy)

    def record(self, group_id: str, topic: str, partition: int, offsets: Sequence[int], owner: str) -> None:
        self._record(args=[prefix(group_id, topic, partition), owner, self.ttl, *offsets])
