"""One thread per process that shuts a socket down when its deadline passes.

Used where a blocking read cannot be bounded by socket timeouts alone: http.client reads a
chunked body's size lines with ``readline``, which keeps calling ``recv`` as long as bytes
trickle in, each call with a fresh timeout.
"""

import contextlib
import heapq
import itertools
import os
import socket
import threading
from collections.abc import Iterator

from resilience.clock import clock


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._pid: int | None = None

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a fresh thread after fork
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="resilience-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def guard(self, sock: socket.socket, until: float) -> Iterator[None]:
        """Shut ``sock`` down if the block is still running at ``until`` (a ``clock`` time)."""
        with self._cond:
            self._ensure_thread()
            token = next(self._ids)
            self._live.add(token)
            heapq.heappush(self._heap, (until, token, sock))
            if self._heap[0][1] == token:
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._live.discard(token)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                until, token, sock = self._heap[0]
                left = until - clock.now()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(token)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


watchdog = Watchdog()
