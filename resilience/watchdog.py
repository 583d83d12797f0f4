"""One thread per process that shuts sockets down when their attempt's time is up.

Socket timeouts bound one ``recv`` each, not an answer: a server that trickles its status line
and headers, a chunked body's size lines or a gzip body of empty deflate blocks keeps every
``recv`` short and the call going for as long as it likes. A ``Watch`` covers one whole attempt:
every socket the attempt uses is attached to it (when it connects, or when a pooled connection
is reused), and at the attempt's ``until`` the watchdog shuts them down. The blocked read then
ends at once, and the watch says it ``fired``, so that the caller reports a timeout rather
than the connection error the shutdown looks like.
"""

import contextlib
import heapq
import itertools
import os
import socket
import threading

from resilience.clock import clock


class Watch:
    """One attempt's watch: the sockets attached to it are shut down at ``until``."""

    __slots__ = ("_dog", "_sockets", "_token", "fired", "until")

    def __init__(self, dog: "Watchdog", until: float) -> None:
        self.until = until
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._dog = dog
        self._token = 0

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc_info) -> None:
        self._dog._end(self)

    def attach(self, sock: socket.socket) -> None:
        """Cover ``sock`` too; shut it down at once if the time is already up."""
        with self._dog._cond:
            if not self.fired:
                self._sockets.append(sock)
                return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _fire(self) -> None:  # called with the watchdog's lock held
        self.fired = True
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._sockets.clear()


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._pid: int | None = None

    def after_fork(self) -> None:
        """In a child process: the parent's watches are not ours, and its thread held the lock
        perhaps at the very moment of the fork."""
        self._heap, self._live = [], set()
        self._cond = threading.Condition()
        self._pid = None

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a fresh thread after fork
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="resilience-watchdog", daemon=True).start()

    def watch(self, until: float) -> Watch:
        """A ``Watch``, for a ``with`` block: what is attached to it is shut down at ``until``.
        (A class with ``__exit__`` rather than a generator: it is on every call's path.)"""
        watch = Watch(self, until)
        with self._cond:
            if self._pid != os.getpid():
                self._ensure_thread()
            watch._token = token = next(self._ids)
            self._live.add(token)
            heapq.heappush(self._heap, (until, token, watch))
            if self._heap[0][1] == token:
                self._cond.notify()
        return watch

    def _end(self, watch: Watch) -> None:
        with self._cond:
            self._live.discard(watch._token)
            watch._sockets.clear()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                until, token, watch = self._heap[0]
                left = until - clock.now()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(token)
                watch._fire()


watchdog = Watchdog()
os.register_at_fork(after_in_child=watchdog.after_fork)
