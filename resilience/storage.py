"""Where a circuit breaker keeps the state that must be the same for everyone who calls through it.

Both storages extend pybreaker's (``CircuitMemoryStorage``, ``CircuitRedisStorage``) with the
few atomic operations a correct breaker needs and pybreaker lacks: a compare-and-set state
transition, a bounded count of half-open trial permits, and the tally of trial outcomes.

The sliding window of the closed state is not stored here: it stays in each process, so a
call through a closed breaker costs one read of shared state and no write.
"""

import logging
import threading
import time
from functools import cache

import pybreaker
from redis import Redis, RedisError

from resilience.clock import Clock

logger = logging.getLogger("resilience.storage")

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN

NORMAL = "normal"
FORCED_OPEN = "forced-open"
DISABLED = "disabled"
MODES = (NORMAL, FORCED_OPEN, DISABLED)


class MemoryStorage(pybreaker.CircuitMemoryStorage):
    """State of one process. The open-state wait is timed with the injected clock.

    Every transition bumps an epoch. Permits carry the epoch they were given in, and a trial
    outcome or release from another epoch is dropped, so a late call from an earlier state
    period can never be counted in the current one.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__(CLOSED)
        self._clock = clock
        self._lock = threading.Lock()
        self._mode = NORMAL
        self._epoch = 0
        self._since = clock.now()
        self._trials_started = 0
        self._trials = [0, 0, 0]  # done, failed, slow

    def snapshot(self) -> tuple[str, str, int]:
        """(state, mode, epoch), read together."""
        return self.state, self._mode, self._epoch

    def set_mode(self, mode: str) -> None:
        self._mode = mode

    def transition(self, expected: str | None, new: str, *, wait: float = 0.0) -> int:
        """Move from ``expected`` (any other state if ``None``) to ``new``: the new epoch, or 0.

        Entering half-open (from open, or restarting a half-open round whose trials never
        reported back) succeeds only once ``wait`` seconds have passed in the current state.
        """
        with self._lock:
            current = self.state
            if (expected is not None and current != expected) or (
                expected is None and current == new
            ):
                return 0
            now = self._clock.now()
            if new == HALF_OPEN:
                if now - self._since < wait:
                    return 0
                self._trials_started, self._trials = 0, [0, 0, 0]
            self._since = now
            self._epoch += 1
            self.state = new
            return self._epoch

    def acquire_trial(self, permitted: int, epoch: int) -> bool:
        with self._lock:
            if self.state != HALF_OPEN or epoch != self._epoch or self._trials_started >= permitted:
                return False
            self._trials_started += 1
            return True

    def release_trial(self, epoch: int) -> None:
        with self._lock:
            if epoch == self._epoch:
                self._trials_started = max(0, self._trials_started - 1)

    def record_trial(self, failed: bool, slow: bool, epoch: int) -> tuple[int, int, int] | None:
        """Count one finished trial; the tally so far, or ``None`` if its half-open round is over."""
        with self._lock:
            if self.state != HALF_OPEN or epoch != self._epoch:
                return None
            self._trials[0] += 1
            self._trials[1] += int(failed)
            self._trials[2] += int(slow)
            return tuple(self._trials)

    def clear(self) -> None:
        with self._lock:
            self.state = CLOSED
            self._mode = NORMAL
            self._epoch += 1
            self._since = self._clock.now()
            self._trials_started, self._trials = 0, [0, 0, 0]


_TRANSITION = """
local current = redis.call('GET', KEYS[1]) or 'closed'
if ARGV[1] ~= '' and current ~= ARGV[1] then return 0 end
if ARGV[1] == '' and current == ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] == 'half-open' then
  if now - tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[3]) then return 0 end
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
end
redis.call('SET', KEYS[2], now)
redis.call('SET', KEYS[1], ARGV[2])
return redis.call('INCR', KEYS[7])
"""

_ACQUIRE_TRIAL = """
if (redis.call('GET', KEYS[1]) or 'closed') ~= 'half-open' then return 0 end
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[2] then return 0 end
if redis.call('INCR', KEYS[2]) > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[2])
  return 0
end
return 1
"""

_RELEASE_TRIAL = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
return 1
"""

_RECORD_TRIAL = """
if (redis.call('GET', KEYS[1]) or 'closed') ~= 'half-open' then return {-1, 0, 0} end
if (redis.call('GET', KEYS[5]) or '0') ~= ARGV[3] then return {-1, 0, 0} end
local done = redis.call('INCR', KEYS[2])
local failed = redis.call('INCRBY', KEYS[3], ARGV[1])
local slow = redis.call('INCRBY', KEYS[4], ARGV[2])
return {done, failed, slow}
"""

_CLEAR = """
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('SET', KEYS[1], 'closed')
return redis.call('INCR', KEYS[8])
"""


@cache
def redis_client(url: str) -> Redis:
    """One connection pool per URL and process; short timeouts so a slow Redis cannot stall calls."""
    return Redis.from_url(url, socket_connect_timeout=0.25, socket_timeout=0.25)


class RedisStorage(pybreaker.CircuitRedisStorage):
    """State shared by every process that names the same Redis and policy.

    The open-state wait is timed by the Redis server's clock, so processes on different hosts
    agree on it. While Redis cannot be reached, the breaker falls back to this process's own
    memory storage, so it keeps protecting the caller, and logs the outage.
    """

    def __init__(self, url: str, namespace: str, clock: Clock) -> None:
        self._local = MemoryStorage(clock)
        self._down_since: float | None = None
        client = redis_client(url)
        try:
            super().__init__(CLOSED, client, namespace=namespace)
        except RedisError:
            # pybreaker initialises keys eagerly; without Redis, start on the local state.
            pybreaker.CircuitBreakerStorage.__init__(self, "redis")
            self._redis = client
            self._namespace_name = namespace
            self._fallback_circuit_state = CLOSED
            self._cluster_mode = False
            self._unavailable("initialise")
        names = (
            "state",
            "since_ms",
            "trials_started",
            "trials_done",
            "trials_failed",
            "trials_slow",
            "epoch",
            "mode",
        )
        self._keys = {name: self._namespace(name) for name in names}
        self._transition = client.register_script(_TRANSITION)
        self._acquire = client.register_script(_ACQUIRE_TRIAL)
        self._release = client.register_script(_RELEASE_TRIAL)
        self._record = client.register_script(_RECORD_TRIAL)
        self._clear = client.register_script(_CLEAR)

    def _unavailable(self, operation: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.error(
                "Redis unreachable for circuit-breaker state (%s, %s): using this "
                "process's own state until it is back.",
                self._namespace_name,
                operation,
            )

    def _recovered(self) -> None:
        if self._down_since is not None:
            self._down_since = None
            logger.warning(
                "Redis reachable again for circuit-breaker state (%s).", self._namespace_name
            )

    def snapshot(self) -> tuple[str, str, int]:
        k = self._keys
        try:
            state, mode, epoch = self._redis.mget(k["state"], k["mode"], k["epoch"])
        except RedisError:
            self._unavailable("read")
            return self._local.snapshot()
        self._recovered()
        return (
            state.decode() if state else CLOSED,
            mode.decode() if mode else NORMAL,
            int(epoch) if epoch else 0,
        )

    @property
    def state(self) -> str:
        return self.snapshot()[0]

    @state.setter
    def state(self, state: str) -> None:
        # pybreaker's own writes go through ``transition``; keep a plain setter for its API.
        self.transition(None, state)

    def set_mode(self, mode: str) -> None:
        try:
            self._redis.set(self._keys["mode"], mode)
        except RedisError:
            self._unavailable("mode")
        self._local.set_mode(mode)

    def transition(self, expected: str | None, new: str, *, wait: float = 0.0) -> int:
        k = self._keys
        keys = [
            k["state"],
            k["since_ms"],
            k["trials_started"],
            k["trials_done"],
            k["trials_failed"],
            k["trials_slow"],
            k["epoch"],
        ]
        try:
            epoch = int(self._transition(keys=keys, args=[expected or "", new, int(wait * 1000)]))
        except RedisError:
            self._unavailable("transition")
            return self._local.transition(expected, new, wait=wait)
        if epoch:
            self._local.transition(None, new)
        return epoch

    def acquire_trial(self, permitted: int, epoch: int) -> bool:
        k = self._keys
        try:
            return bool(
                self._acquire(
                    keys=[k["state"], k["trials_started"], k["epoch"]], args=[permitted, epoch]
                )
            )
        except RedisError:
            self._unavailable("acquire_trial")
            return self._local.acquire_trial(permitted, self._local.snapshot()[2])

    def release_trial(self, epoch: int) -> None:
        try:
            self._release(keys=[self._keys["trials_started"], self._keys["epoch"]], args=[epoch])
        except RedisError:
            self._unavailable("release_trial")

    def record_trial(self, failed: bool, slow: bool, epoch: int) -> tuple[int, int, int] | None:
        k = self._keys
        try:
            done, failures, slows = self._record(
                keys=[
                    k["state"],
                    k["trials_done"],
                    k["trials_failed"],
                    k["trials_slow"],
                    k["epoch"],
                ],
                args=[int(failed), int(slow), epoch],
            )
        except RedisError:
            self._unavailable("record_trial")
            return None
        return None if done < 0 else (int(done), int(failures), int(slows))

    def clear(self) -> None:
        k = self._keys
        try:
            self._clear(
                keys=[
                    k["state"],
                    k["since_ms"],
                    k["trials_started"],
                    k["trials_done"],
                    k["trials_failed"],
                    k["trials_slow"],
                    k["mode"],
                    k["epoch"],
                ]
            )
        except RedisError:
            self._unavailable("clear")
        self._local.clear()


def build_storage(url: str | None, *, namespace: str, clock: Clock):
    if url is None:
        return MemoryStorage(clock)
    return RedisStorage(url, namespace, clock)
