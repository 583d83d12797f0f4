"""The metric files of processes that share one ``PROMETHEUS_MULTIPROC_DIR``, and of dead ones.

prometheus_client keeps a file per process and kind (``counter_<pid>.db``,
``gauge_livesum_<pid>.db``, ...) and ``/metrics`` reads them all. Counters of a dead process
still count (its calls happened); gauges of the ``live*`` modes must leave with it, which
``multiprocess.mark_process_dead`` does: gunicorn's master for its workers (``child_exit``), a
process for itself at a clean exit (``mark_dead_at_exit``). A SIGKILLed process does neither,
and its last values would stay forever: its free bulkhead slots in a ``livesum``, its Redis
link's 0 in a ``livemin``, its breaker's series in a ``liveall``.

So whoever shares the directory sweeps: the gauge files of a pid that no longer runs belong to a
dead process (``mark_dead_processes``). That holds while every process writing to the directory
runs in one PID namespace: one host (the local stack) or one container (compose, Kubernetes).
A dead pid taken again by an unrelated process keeps its files until that one ends.

No Django here: gunicorn's master calls this before any app is loaded.
"""

import atexit
import contextlib
import os
import re

from prometheus_client import multiprocess

# gauge_livesum_1234.db -> ("gauge_livesum", "1234"); counter_1234.db -> ("counter", "1234")
_FILE = re.compile(r"^(?P<kind>\w+?)_(?P<pid>\d+)\.db$")
_LIVE_GAUGE = "gauge_live"


def directory() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs (in this PID namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def files_by_pid(path: str) -> dict[int, list[str]]:
    """The metric files of ``path``, by the pid that wrote them."""
    found: dict[int, list[str]] = {}
    for name in os.listdir(path):
        match = _FILE.match(name)
        if match:
            found.setdefault(int(match["pid"]), []).append(name)
    return found


def mark_dead_processes(path: str) -> list[int]:
    """Remove the live gauges of every process of ``path`` that no longer runs; their pids."""
    dead = [
        pid
        for pid, names in files_by_pid(path).items()
        if any(name.startswith(_LIVE_GAUGE) for name in names) and not process_alive(pid)
    ]
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


def remove_files_of_dead_processes(path: str) -> None:
    """An earlier run's files, counters too (they would be summed into this run's); the files
    of processes still running stay (the task worker shares orders' directory)."""
    for pid, names in files_by_pid(path).items():
        if pid != os.getpid() and not process_alive(pid):
            for name in names:
                with contextlib.suppress(FileNotFoundError):  # swept by another process
                    os.remove(os.path.join(path, name))


def prepare(path: str) -> None:
    """Make the directory (prometheus_client fails without it) and sweep what the dead left."""
    os.makedirs(path, exist_ok=True)
    mark_dead_processes(path)


def mark_dead_at_exit(path: str, flush=None) -> None:
    """At a clean exit: ``flush`` (the last counts), then take this process's live gauges away.

    atexit runs the last registered first, so the flush is called here rather than left to
    its own hook, which would run after the gauges were marked dead.
    """
    pid = os.getpid()

    def at_exit() -> None:
        if os.getpid() != pid:  # a forked child exits with its own pid
            return
        if flush is not None:
            flush()
        multiprocess.mark_process_dead(pid, path)

    atexit.register(at_exit)
