"""The fault currently injected into this service, shared by all its worker processes.

Kept in one small JSON file per service (``VAR_DIR/chaos/<service>.json``), replaced
atomically. Each process re-reads it when its modification time changes, so a fault set
through any worker applies in every worker at once. ``fail_next`` is decremented under an
exclusive lock on the file, so "fail the next 3" means 3 for the whole service.
"""

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path

from django.conf import settings

_cache: dict[str, tuple[float, dict]] = {}
_lock = threading.Lock()


def path() -> Path:
    return Path(settings.VAR_DIR) / "chaos" / f"{settings.SERVICE_NAME}.json"


def current() -> dict:
    """The fault in force (an empty dict when none)."""
    file = path()
    try:
        mtime = file.stat().st_mtime_ns
    except FileNotFoundError:
        return {}
    key = str(file)
    cached = _cache.get(key)
    if cached and cached[0] == mtime:
        return cached[1]
    try:
        fault = json.loads(file.read_text() or "{}")
    except (FileNotFoundError, ValueError):
        return {}
    with _lock:
        _cache[key] = (mtime, fault)
    return fault


def _write(fault: dict) -> None:
    file = path()
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".chaos-")
    with os.fdopen(fd, "w") as out:
        json.dump(fault, out)
    os.replace(tmp, file)


@contextlib.contextmanager
def _locked():
    lock_file = path().with_suffix(".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def replace(fault: dict) -> dict:
    with _locked():
        _write(fault)
    return fault


def clear() -> None:
    with _locked():
        _write({})


def take_fail_next() -> bool:
    """Use up one of ``fail_next``; ``False`` when none are left."""
    with _locked():
        fault = current()
        left = fault.get("fail_next") or 0
        if left <= 0:
            return False
        _write({**fault, "fail_next": left - 1})
        return True
