"""A lock file that holds on shared storage (NFS, Lustre), where `flock` may not.

The holder creates the file with O_CREAT | O_EXCL (atomic on NFS v3+ and every local file
system) and writes its host, PID and start time; a thread refreshes the file's mtime (the
heartbeat) while the lock is held. Another process sees a holder and is refused, unless the
lock is stale: no heartbeat for `stale_after_s`, or a holder on this host whose PID is gone.
A stale lock is renamed away first (one rename wins), so two processes never both take it over.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path


class SharedLockHeld(RuntimeError):
    def __init__(self, path: Path, holder: dict):
        self.holder = holder
        super().__init__(f"{path} is held by PID {holder.get('pid', '?')} on {holder.get('host', '?')} "
                         f"(started {holder.get('started', '?')})")


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def is_stale(path: Path, stale_after_s: float) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    holder = _holder(path)
    if holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid")):
        return True
    return age > stale_after_s


def _create(path: Path, record: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(record))
        out.flush()
        os.fsync(out.fileno())
    return True


@contextlib.contextmanager
def shared_lock(path: str | os.PathLike, stale_after_s: float = 120.0, beat_every_s: float = 15.0):
    """Hold `path` for the block; `SharedLockHeld` if a live holder has it."""
    path = Path(path)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "token": os.urandom(8).hex(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if not _create(path, record):
        if not is_stale(path, stale_after_s):
            raise SharedLockHeld(path, _holder(path))
        aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{time.time_ns()}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, aside)   # the one rename that wins clears it; a loser finds it gone
            aside.unlink()
        if not _create(path, record):
            raise SharedLockHeld(path, _holder(path))
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(beat_every_s):
            with contextlib.suppress(OSError):
                os.utime(path)

    beat = threading.Thread(target=heartbeat, name="shared-lock-heartbeat", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        if _holder(path).get("token") == record["token"]:  # never remove a lock another process took over
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
