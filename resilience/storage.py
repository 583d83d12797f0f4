"""Where a circuit breaker keeps its state: in this process, and optionally shared through Redis.

Every breaker keeps its state in this process (``LocalState``). A call through a closed
breaker reads ``view``, one tuple, and nothing else: no lock, no I/O.

With ``STORAGE: "redis://..."`` the state is also shared by every process that names the same
Redis and breaker (``SharedState``). Redis is the breakers' shared memory, never their hot
path and never a single point of failure:

- **Transitions, modes and half-open trial permits** are changed in Redis by small Lua
  scripts, so two processes never make the same transition or take the same trial permit.
  Each change is published; every process applies it at once (pub/sub) or at the next poll
  (``SYNC_INTERVAL``), whichever comes first. **Outcomes** of closed-state calls stay in each
  process's sliding window.
- **Epochs.** Every shared change bumps an epoch, and each process remembers the last epoch it
  applied. A Redis whose epoch is missing or behind a process (restarted empty, flushed,
  evicted, failed over to a stale replica) is *re-seeded* from that process's state, never
  obeyed. Permits carry this process's own *generation* (bumped on every change of its view),
  so a late outcome can never land in a later state period, whatever Redis forgot.
- **Incarnations.** Epochs count within one life of the breaker's hash in Redis. A hash that
  is created (the first time, or after Redis lost it) gets a new *incarnation* id, stored
  beside the epoch and sent with every change. A process that sees another incarnation than
  the one it knows adopts that state whatever its epoch, and compare-and-sets match the
  incarnation as well as the epoch: after a flush, a fresh process's change at epoch 1 is
  never taken for the epoch 1 another process applied before the flush.
- **A breaker around Redis itself** (``RedisLink``): short socket timeouts and no client-side
  retries. The first Redis command that fails marks the link down; until the link's own
  thread reaches Redis again (every ``PROBE_INTERVAL``) no call waits on Redis at all, and
  every breaker runs on its local state. Changes made meanwhile are pushed back, and the
  shared state re-read, before the link is marked up again.
"""

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilience import metrics
from resilience.clock import Clock

logger = logging.getLogger("resilience.storage")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"
STATES = (CLOSED, OPEN, HALF_OPEN)

NORMAL = "normal"
FORCED_OPEN = "forced-open"
DISABLED = "disabled"
MODES = (NORMAL, FORCED_OPEN, DISABLED)

# Decoded strings from Redis mapped back to the constants above.
_CANONICAL = {name: name for name in (*STATES, *MODES)}

# ``on_change(old_state, new_state)``: the view of this process moved to another state.
OnChange = Callable[[str, str], None]


class Round:
    """One half-open round of trial calls, as this process counts it."""

    __slots__ = ("done", "failed", "refused_at", "slow", "started")

    def __init__(self) -> None:
        self.started = 0  # permits out (memory storage; with Redis, Redis counts them)
        self.done = 0
        self.failed = 0
        self.slow = 0
        # Redis storage: when Redis last refused a permit of this round (this process's clock),
        # so that it is not asked again at every call; ``None`` while it may have one.
        self.refused_at: float | None = None


# With Redis storage, how long a refused trial permit is taken as refused before Redis is asked
# again: a permit given back by another process (its trial's outcome was ignored) reaches
# this process within this time, and a half-open breaker costs at most one round trip per
# this time per process.
TRIAL_RECHECK = 0.05


class LocalState:
    """The state of one breaker in this process.

    ``view`` is ``(state, mode, generation)``, replaced as a whole, so that a reader always
    sees the three together. The generation grows by one at every change of the view; permits
    carry it, and an outcome or a trial release from another generation is dropped.
    """

    shared = False

    def __init__(self, clock: Clock, on_change: OnChange | None = None) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.view: tuple[str, str, int] = (CLOSED, NORMAL, 1)
        self.since = clock.now()  # when the current state was entered (self.clock)
        self.round = Round()  # this generation's half-open trial calls
        self.on_change = on_change or (lambda old, new: None)

    def describe(self) -> str:
        return "memory"

    # -- under self.lock --------------------------------------------------------------------------

    def _enter(self, state: str, mode: str, since: float) -> tuple[int, str | None]:
        """Replace the view: (new generation, the old state if the state changed else None)."""
        old_state, _, generation = self.view
        generation += 1
        self.view = (state, mode, generation)
        self.since = since
        self.round = Round()
        return generation, (old_state if old_state != state else None)

    def _local_transition(
        self, expected: str | None, generation: int | None, new: str, mode: str, wait: float
    ) -> tuple[int, str | None]:
        state, current_mode, current_generation = self.view
        now = self.clock.now()
        if expected is None:  # an operator's command: applies whatever the state is
            if (state, current_mode) == (new, mode):
                return 0, None
        else:
            if current_generation != generation or state != expected or current_mode != NORMAL:
                return 0, None
            if new == HALF_OPEN and now - self.since < wait:
                return 0, None
        return self._enter(new, mode, now)

    # -- the breaker's operations -----------------------------------------------------------------

    def _changed(self, old_state: str | None) -> None:
        if old_state is not None:
            self.on_change(old_state, self.view[0])

    def transition(
        self,
        expected: str | None,
        generation: int | None,
        new: str,
        *,
        mode: str = NORMAL,
        wait: float = 0.0,
    ) -> int:
        """Move to ``new``: the new generation, or 0 if the transition did not happen.

        ``expected`` and ``generation`` name the view it must start from (a compare-and-set);
        ``expected=None`` is an operator's command, applied from any state. Entering half-open
        needs ``wait`` seconds in the current state.
        """
        with self.lock:
            moved, old_state = self._local_transition(expected, generation, new, mode, wait)
        self._changed(old_state)
        return moved

    def acquire_trial(self, generation: int, permitted: int) -> int | None:
        """A half-open trial permit: the epoch to hand back with it (0 here), or ``None``."""
        with self.lock:
            if self.view[2] != generation or self.view[0] != HALF_OPEN:
                return None
            if self.round.started >= permitted:
                return None
            self.round.started += 1
            return 0

    def release_trial(self, generation: int, epoch: int) -> None:
        with self.lock:
            if self.view[2] == generation and self.round.started > 0:
                self.round.started -= 1

    def record_trial(
        self, generation: int, epoch: int, failed: bool, slow: bool
    ) -> tuple[int, int, int] | None:
        """Count one finished trial: (done, failed, slow) so far, or ``None`` if its round is over."""
        with self.lock:
            if self.view[2] != generation or self.view[0] != HALF_OPEN:
                return None
            trials = self.round
            trials.done += 1
            trials.failed += failed
            trials.slow += slow
            return trials.done, trials.failed, trials.slow

    def sync(self) -> None:
        """Bring this process's view up to date with the shared state (nothing to do here)."""

    def close(self) -> None:
        """Stop sharing (nothing to do here)."""


# -- shared state ----------------------------------------------------------------------------------

# Every script starts here. KEYS[1] is the breaker's hash; ARGV[1] the channel its changes are
# published on; ARGV[2] the caller (its link's owner id); ARGV[3..7] the caller's view: the last
# epoch it applied, its state, its mode, how long ago (ms) it entered that state, and the
# incarnation that epoch belongs to ('' if none yet). A hash that does not exist is created
# with a new incarnation. A Redis that lost what the caller knows (no epoch, or an older one)
# is re-seeded from the caller's view before anything else happens; the caller then agrees
# with it. Every change records who made it ('by').
_PRELUDE = """
local key, channel, owner = KEYS[1], ARGV[1], ARGV[2]
local caller_epoch, caller_inc = tonumber(ARGV[3]), ARGV[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', key, 'state', 'mode', 'epoch', 'since', 'by', 'inc', 'seeded')
local state, mode, epoch, since, by, inc = h[1], h[2], tonumber(h[3]), tonumber(h[4]), h[5], h[6]
local seeded = tonumber(h[7])
local reseeded = 0
if not inc then
  inc = owner .. '@' .. now
  if epoch ~= nil then redis.call('HSET', key, 'inc', inc) end
end
local function save(s, m, e, at)
  redis.call('HSET', key, 'state', s, 'mode', m, 'epoch', e, 'since', at, 'by', owner,
             'inc', inc, 'started', 0, 'done', 0, 'failed', 0, 'slow', 0)
  state, mode, epoch, since, by = s, m, e, at, owner
  redis.call('PUBLISH', channel,
             s .. '|' .. m .. '|' .. e .. '|' .. (now - at) .. '|' .. (seeded or -1) .. '|' .. inc)
  -- The format of the versions before incarnations, on their channel: during a rolling deploy
  -- they still hear of changes at once (and without incarnations, as before).
  redis.call('PUBLISH', key .. ':changes', s .. '|' .. m .. '|' .. e .. '|' .. (now - at))
end
-- A new life of the hash that has changed since it began (an operator's command, a trip) is
-- newer than anything a caller from an older life knows, whatever the epochs say.
local moved_on = inc ~= caller_inc and seeded ~= nil and epoch > seeded
if epoch == nil or (epoch < caller_epoch and not moved_on) then
  -- A breaker seen for the first time is created; one a process knows more of was lost.
  if epoch ~= nil or caller_epoch > 0 then reseeded = 1 end
  seeded = caller_epoch
  redis.call('HSET', key, 'seeded', seeded)
  save(ARGV[4], ARGV[5], caller_epoch, now - tonumber(ARGV[6]))
end
-- The caller's epoch means something only in the incarnation it came from, or at the epoch
-- this incarnation was seeded at, before any change in it: the state as of that epoch.
local current = epoch == caller_epoch and (inc == caller_inc or epoch == seeded)
local function reply(result, ...)
  return {result, state, mode, epoch, now - since, reseeded, inc, seeded or -1, ...}
end
"""

# ARGV[8]: '1' if the caller changed its view while Redis was unreachable, '2' if an operator
# did. An operator's command wins over anything. A change of the caller's wins over the epoch
# it started from, and over a later one that the caller itself wrote: a command of its own
# that Redis ran late (Redis hung, the caller gave up on it, Redis resumed and ran it), or its
# own push of an earlier change. Over anyone else's, it loses.
_SYNC = """
if ARGV[8] == '2' or (ARGV[8] == '1' and (current or by == owner)) then
  save(ARGV[4], ARGV[5], math.max(epoch, caller_epoch) + 1, now - tonumber(ARGV[6]))
  return reply(1)
end
return reply(0)
"""

# ARGV[8]: the expected state ('' for an operator's command), ARGV[9] the new state,
# ARGV[10] the new mode, ARGV[11] the wait before half-open (ms).
_TRANSITION = """
if ARGV[8] == '' then
  if state == ARGV[9] and mode == ARGV[10] then return reply(0) end
else
  if not current or state ~= ARGV[8] or mode ~= 'normal' then return reply(0) end
  if ARGV[9] == 'half-open' and now - since < tonumber(ARGV[11]) then return reply(0) end
end
save(ARGV[9], ARGV[10], epoch + 1, now)
return reply(1)
"""

# ARGV[8]: the permits of a round.
_ACQUIRE_TRIAL = """
if not current or state ~= 'half-open' or mode ~= 'normal' then return reply(0) end
if redis.call('HINCRBY', key, 'started', 1) > tonumber(ARGV[8]) then
  redis.call('HINCRBY', key, 'started', -1)
  return reply(0)
end
return reply(1)
"""

# ARGV[8]: the epoch the permit was given in (of the caller's incarnation).
_RELEASE_TRIAL = """
if epoch == tonumber(ARGV[8]) and inc == caller_inc
    and tonumber(redis.call('HGET', key, 'started') or '0') > 0 then
  redis.call('HINCRBY', key, 'started', -1)
end
return reply(1)
"""

# ARGV[8]: the permit's epoch (of the caller's incarnation); ARGV[9], ARGV[10]: 1 if the trial
# failed, was slow.
_RECORD_TRIAL = """
if epoch ~= tonumber(ARGV[8]) or inc ~= caller_inc or state ~= 'half-open' then
  return reply(-1)
end
local done = redis.call('HINCRBY', key, 'done', 1)
local failed = redis.call('HINCRBY', key, 'failed', ARGV[9])
local slow = redis.call('HINCRBY', key, 'slow', ARGV[10])
return reply(done, failed, slow)
"""

SCRIPTS = {
    "sync": _SYNC,
    "transition": _TRANSITION,
    "acquire_trial": _ACQUIRE_TRIAL,
    "release_trial": _RELEASE_TRIAL,
    "record_trial": _RECORD_TRIAL,
}


@dataclass(frozen=True, kw_only=True)
class LinkOptions:
    """How a process talks to the Redis that holds breaker state (``RESILIENCE_REDIS``)."""

    socket_timeout: float = 0.05  # the longest any call waits on Redis, once
    probe_interval: float = 0.2  # while Redis is unreachable, how often the link tries again
    sync_interval: float = 0.5  # how often every shared state is re-read (pub/sub's backup)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def describe_url(url: str) -> str:
    """``host:port/db`` of a Redis URL: a label without the password."""
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        return parsed.path
    db = parsed.path.lstrip("/") or "0"
    return f"{parsed.hostname}:{parsed.port or 6379}/{db}"


class RedisLink:
    """This process's link to one Redis for breaker state: a circuit breaker around Redis itself.

    ``up`` is read by every shared operation before it touches Redis. While it is ``False``,
    breakers run on their local state and nothing waits on Redis. One thread per link keeps
    every registered state in step with Redis (pub/sub plus a poll) and, while Redis is
    unreachable, probes it; only that thread marks the link up again, after pushing the
    changes made meanwhile.
    """

    def __init__(self, url: str, options: LinkOptions) -> None:
        self.url = url
        self.label = describe_url(url)
        self.options = options
        self.client = Redis.from_url(
            url,
            socket_connect_timeout=options.socket_timeout,
            socket_timeout=options.socket_timeout,
            retry=Retry(NoBackoff(), 0),  # never a retry loop on a caller's thread
            health_check_interval=0,
        )
        self.scripts = {
            name: self.client.register_script(_PRELUDE + body) for name, body in SCRIPTS.items()
        }
        self.up = False  # until the link's thread has reached Redis
        self.down_reported = False  # this spell of unreachability is logged and counted
        self.closed = False
        self.owner = _owner()  # who this process is, in the 'by' of the changes it makes
        self.states: list[SharedState] = []
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._wake = threading.Event()
        metrics.storage_up.labels(self.label).set(0)

    # -- called from any thread ------------------------------------------------------------------

    def register(self, state: "SharedState") -> None:
        with self._lock:
            self.states.append(state)
            self._ensure_thread()
        self._wake.set()

    def wait_up(self, timeout: float) -> bool:
        """Wait until the link's thread has reached Redis (tests, and processes that must not
        start on local state); whether it has."""
        end = time.monotonic() + timeout
        while not self.up and time.monotonic() < end:
            time.sleep(0.01)
        return self.up

    def unregister(self, state: "SharedState") -> None:
        with self._lock:
            if state in self.states:
                self.states.remove(state)

    def close(self) -> None:
        """Stop the link's thread and forget its states (a Redis that is gone for good)."""
        with self._lock:
            self.states.clear()
            self.closed = True
            self.up = False
        self._wake.set()

    def failed(self, operation: str, exc: BaseException) -> None:
        """A Redis command failed: run on local state until the link's thread reaches Redis.

        Said once per spell (an ERROR line, an ``unreachable`` event, the gauge at 0), also
        when the link never came up at all: a Redis slower than ``SOCKET_TIMEOUT`` is one.
        """
        with self._lock:
            was_up, self.up = self.up, False
            if self.down_reported:
                return
            self.down_reported = True
        metrics.storage_up.labels(self.label).set(0)
        metrics.storage_events.labels(self.label, "unreachable").inc()
        logger.error(
            "Redis at %s %s for circuit-breaker state (%s: %s): every breaker runs on this "
            "process's own state until it answers within RESILIENCE_REDIS['SOCKET_TIMEOUT'] "
            "(%g s).",
            self.label,
            "unreachable" if was_up else "not reached",
            operation,
            exc,
            self.options.socket_timeout,
        )
        self._wake.set()

    def after_fork(self) -> None:
        """In a child process: a new owner, fresh locks, and a thread of its own."""
        self.owner = _owner()
        self.up = False
        self.down_reported = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = None
        if self.states and not self.closed:
            self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # first use, or a child process after fork: a fresh thread
            self._pid = os.getpid()
            self.up = False
            threading.Thread(
                target=self._run, name=f"resilience-redis-{self.label}", daemon=True
            ).start()

    # -- the link's own thread ---------------------------------------------------------------------

    def _run(self) -> None:
        pubsub = None
        subscribed: set[str] = set()
        next_sync = 0.0
        while not self.closed:
            try:
                if not self.up:
                    if pubsub is not None:
                        pubsub.close()
                        pubsub, subscribed = None, set()
                    self._reconcile(dirty_only_first=True)
                    pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                    with self._lock:
                        self.up = True
                        self.down_reported = False
                    metrics.storage_up.labels(self.label).set(1)
                    metrics.storage_events.labels(self.label, "reachable").inc()
                    logger.warning(
                        "Redis at %s reachable for circuit-breaker state: sharing %d breaker(s).",
                        self.label,
                        len(self.states),
                    )
                    next_sync = 0.0
                channels = {state.channel: state for state in list(self.states)}
                new = set(channels) - subscribed
                if new:
                    pubsub.subscribe(*new)
                    subscribed |= new
                    next_sync = 0.0  # read what changed before the subscription
                now = time.monotonic()
                if now >= next_sync:
                    self._reconcile()
                    next_sync = now + self.options.sync_interval
                message = pubsub.get_message(timeout=min(0.1, max(0.0, next_sync - now)))
                while message is not None:
                    state = channels.get(message["channel"].decode())
                    if state is not None:
                        state.apply_message(message["data"].decode())
                    message = pubsub.get_message(timeout=0)
                self._wake.clear()
            except RedisError as exc:
                self.failed("sync", exc)
                self._wake.wait(self.options.probe_interval)
                self._wake.clear()
            except Exception:  # never let the link's thread die: breakers would stop sharing
                logger.exception("resilience: Redis link thread for %s failed", self.label)
                time.sleep(self.options.probe_interval)
        if pubsub is not None:
            pubsub.close()

    def _reconcile(self, dirty_only_first: bool = False) -> None:
        """Push what changed here while Redis was away, then read every shared state."""
        states = list(self.states)
        if dirty_only_first:
            for state in states:
                while state.dirty:  # a local change made while we push: push again
                    state.sync_now(require_link=False)
        if not states:
            self.client.ping()
            return
        pipe = self.client.pipeline(transaction=False)
        requests = [(state, state.sync_args()) for state in states]
        for _, (keys, args, _) in requests:
            self.scripts["sync"](keys=keys, args=args, client=pipe)
        for (state, (_, _, generation)), reply in zip(
            requests, pipe.execute(raise_on_error=True), strict=True
        ):
            state.apply_reply(reply, generation=generation)


class SharedState(LocalState):
    """A breaker's state shared through Redis, with this process's local state under it."""

    shared = True

    def __init__(
        self, link: RedisLink, key: str, clock: Clock, on_change: OnChange | None = None
    ) -> None:
        super().__init__(clock, on_change)
        self.link = link
        self.key = key
        # ':v2': messages with the incarnation. ``{key}:changes`` has the older format, for
        # processes of the versions before it (see _PRELUDE).
        self.channel = f"{key}:changes:v2"
        self.epoch = 0  # the last shared epoch this process applied
        self.incarnation = ""  # the life of the Redis hash that epoch belongs to
        self._retired: set[str] = set()  # incarnations left behind: their news is stale
        # Changed here while Redis was unreachable: 1 by a call, 2 by an operator's command.
        self.dirty = 0
        link.register(self)

    def describe(self) -> str:
        return "redis"

    def close(self) -> None:
        self.link.unregister(self)

    # -- talking to Redis ---------------------------------------------------------------------------

    def _caller(self) -> list:
        """ARGV[2..7]: this process, the epoch it applied, its state, mode, ms in that state,
        and the incarnation of that epoch."""
        state, mode, _ = self.view
        age = max(0, int((self.clock.now() - self.since) * 1000))
        return [self.link.owner, self.epoch, state, mode, age, self.incarnation]

    def _run(self, script: str, operation: str, extra: list, *, require_link: bool = True):
        """Run a script: its reply, or ``None`` if Redis is unreachable (the link is then down)."""
        if require_link and not self.link.up:
            return None
        with self.lock:
            args = [self.channel, *self._caller(), *extra]
            generation = self.view[2]
        try:
            reply = self.link.scripts[script](keys=[self.key], args=args)
        except RedisError as exc:
            self.link.failed(operation, exc)
            return None
        self.apply_reply(reply, generation=None)
        return reply, generation

    def sync_args(self) -> tuple[list, list, int]:
        with self.lock:
            args = [self.channel, *self._caller(), str(self.dirty)]
            return [self.key], args, self.view[2]

    def sync_now(self, *, require_link: bool = True) -> None:
        keys, args, generation = self.sync_args()
        if require_link and not self.link.up:
            return
        reply = self.link.scripts["sync"](keys=keys, args=args)
        self.apply_reply(reply, generation=generation)

    def sync(self) -> None:
        """Read the shared state now (tests and health checks; calls never need to)."""
        try:
            self.sync_now()
        except RedisError as exc:
            self.link.failed("sync", exc)

    def apply_reply(self, reply, *, generation: int | None) -> None:
        """Adopt the shared state a script answered with, if it is newer than this view.

        ``generation``: the view the request was made from; if this process changed its view
        since (a local change while Redis was away), the answer is stale and not applied.
        """
        _, state, mode, epoch, age_ms, reseeded, incarnation, seeded = reply[:8]
        state, mode, epoch = _CANONICAL[state.decode()], _CANONICAL[mode.decode()], int(epoch)
        if reseeded:
            metrics.storage_events.labels(self.link.label, "reseeded").inc()
            logger.warning(
                "Redis at %s had lost circuit-breaker state %s (restarted empty, flushed or "
                "failed over): re-seeded it from this process (%s, epoch %d).",
                self.link.label,
                self.key,
                state,
                epoch,
            )
        life = (incarnation.decode(), int(seeded))
        self._adopt(state, mode, epoch, int(age_ms) / 1000, generation, life, news=False)

    def apply_message(self, data: str) -> None:
        state, mode, epoch, age_ms, seeded, incarnation = data.split("|", 5)
        self._adopt(
            _CANONICAL[state],
            _CANONICAL[mode],
            int(epoch),
            int(age_ms) / 1000,
            None,
            (incarnation, int(seeded)),
            news=True,
        )

    def _adopt(
        self,
        state: str,
        mode: str,
        epoch: int,
        age: float,
        generation: int | None,
        life: tuple[str, int],
        *,
        news: bool,
    ) -> None:
        """``life``: the incarnation of the hash, and the epoch it was (re)seeded at (-1 if
        unknown). ``news``: a published message, which may be read late; else a script's
        answer, which is what Redis holds now."""
        incarnation, seeded = life
        with self.lock:
            if generation is not None and self.view[2] != generation:
                return  # this process changed its view since it asked: the answer is stale
            if incarnation != self.incarnation:
                if news and incarnation in self._retired:
                    return  # news from before Redis lost the hash, read late
                # Redis's hash was made anew (or an older one came back, from a replica or a
                # snapshot): its epochs do not compare with ours. Unless it has changed since
                # it was seeded, though, it knows less than this process does if its epoch is
                # behind: then this process's next script re-seeds it (see _PRELUDE).
                moved_on = 0 <= seeded < epoch
                if epoch < self.epoch and not moved_on:
                    return
                self._retired.discard(incarnation)
                if self.incarnation:
                    self._retired.add(self.incarnation)
                self.incarnation = incarnation
                if (state, mode) == self.view[:2] and epoch == self.epoch:
                    return  # the same state period under another name (a reseed from ours)
            elif epoch <= self.epoch:
                return  # nothing newer than what this process already applied
            self.epoch = epoch
            self.dirty = 0
            # A newer epoch is a new state period even in the same state (a half-open round
            # restarted, or open -> half-open -> open between two polls): a new generation.
            _, old_state = self._enter(state, mode, self.clock.now() - age)
        self._changed(old_state)

    # -- the breaker's operations --------------------------------------------------------------------

    def transition(
        self,
        expected: str | None,
        generation: int | None,
        new: str,
        *,
        mode: str = NORMAL,
        wait: float = 0.0,
    ) -> int:
        command = expected is None
        # An operator's command goes to Redis even before the link is up (a fresh process,
        # say `manage.py shell`): it must not be lost to the first sync.
        if self.link.up or command:
            with self.lock:
                if not command and self.view[2] != generation:
                    return 0
            done = self._run(
                "transition",
                "transition",
                [expected or "", new, mode, int(wait * 1000)],
                require_link=not command,
            )
            if done is not None:
                reply, _ = done
                if reply[0] != 1:
                    return 0
                with self.lock:  # the view this transition made (or a later one already)
                    return self.view[2] if self.epoch >= int(reply[3]) else 0
        with self.lock:
            moved, old_state = self._local_transition(expected, generation, new, mode, wait)
            if moved:
                self.dirty = max(self.dirty, 2 if command else 1)
        if moved and command:
            logger.warning(
                "Redis at %s unreachable: %s -> %s holds in this process and is shared when "
                "Redis answers.",
                self.link.label,
                self.key,
                new,
            )
        self._changed(old_state)
        return moved

    def acquire_trial(self, generation: int, permitted: int) -> int | None:
        if self.link.up:
            with self.lock:
                if self.view[2] != generation or self.view[0] != HALF_OPEN:
                    return None
                refused_at = self.round.refused_at
                if refused_at is not None and self.clock.now() - refused_at < TRIAL_RECHECK:
                    return None  # Redis said just now that this round's permits are taken
                epoch = self.epoch
            done = self._run("acquire_trial", "acquire_trial", [permitted])
            if done is not None:
                reply, _ = done
                if reply[0] == 1 and int(reply[3]) == epoch:
                    return epoch
                with self.lock:
                    if self.view[2] == generation:
                        self.round.refused_at = self.clock.now()
                return None
        return super().acquire_trial(generation, permitted)

    def release_trial(self, generation: int, epoch: int) -> None:
        if self.view[2] != generation:
            return  # the round is over here, and so in Redis (its epoch has moved on)
        if epoch and self._run("release_trial", "release_trial", [epoch]) is not None:
            with self.lock:
                if self.view[2] == generation:
                    self.round.refused_at = None  # a permit is free again: ask at once
            return
        super().release_trial(generation, epoch)

    def record_trial(
        self, generation: int, epoch: int, failed: bool, slow: bool
    ) -> tuple[int, int, int] | None:
        if self.view[2] != generation:
            return None  # the round is over here, and so in Redis
        if epoch and self.link.up:
            done = self._run("record_trial", "record_trial", [epoch, int(failed), int(slow)])
            if done is not None:
                reply, _ = done
                if reply[0] < 0:
                    return None
                return int(reply[0]), int(reply[8]), int(reply[9])
        return super().record_trial(generation, epoch, failed, slow)


_links: dict[tuple[str, LinkOptions], RedisLink] = {}
_links_lock = threading.Lock()


def link_for(url: str, options: LinkOptions) -> RedisLink:
    """The link of this process to ``url``: one per URL and options, shared by its breakers."""
    with _links_lock:
        link = _links.get((url, options))
        if link is None:
            link = _links[(url, options)] = RedisLink(url, options)
        return link


def _after_fork_in_child() -> None:
    global _links_lock
    _links_lock = threading.Lock()
    for link in _links.values():
        link.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def close_links(url: str | None = None) -> None:
    """Close this process's links (to ``url``, or all): their threads end (tests)."""
    with _links_lock:
        for key in [key for key in _links if url is None or key[0] == url]:
            _links.pop(key).close()


def build_state(
    url: str | None,
    *,
    key: str,
    clock: Clock,
    on_change: OnChange | None = None,
    options: LinkOptions | None = None,
) -> LocalState:
    """A breaker's state: local only (``url=None``), or shared through the Redis at ``url``.

    Never touches the network: a shared state starts from the local view and is brought in
    line with Redis by its link's thread.
    """
    if url is None:
        return LocalState(clock, on_change)
    return SharedState(link_for(url, options or LinkOptions()), key, clock, on_change)
