"""One writer per output folder: `reproduce` and notebooks take the same lock.

`out/.reproduce.lock` is held with `fcntl.flock` and names the holder's PID, host and start
time; the OS releases it when its process dies (`kill -9` included), so a stale lock is
taken over at once and two writers can never both believe they hold it.

`reproduce` holds it for the run and tells the notebook kernels it starts (`HELD_ENV`);
a notebook opened by hand (JupyterLab, papermill) takes it for its kernel's life.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".reproduce.lock"
HELD_ENV = "SPOTLIB_OUTPUT_LOCK_HELD"   # the folder whose lock the parent run holds for its kernels
_held_here: dict[str, object] = {}      # folder -> open lock file of this process (notebook kernels)


class OutputLocked(RuntimeError):
    pass


def acquire(out: Path, who: str = "run", name: str = LOCK_NAME):
    """Take the lock `out/<name>` (an open file that holds it); `OutputLocked` when another process has it.

    On shared storage flock may hold nothing across machines, so an O_EXCL lock file beside it
    (`<name>.owner`, spotlib.launch.shared_lock: host, PID, heartbeat) holds there too. Several nodes of
    one run each take their own (`.reproduce-node<k>.lock`)."""
    import fcntl

    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / name, "a+", encoding="utf-8")
    except OSError as exc:  # a read-only or unreachable output folder
        raise OutputLocked(f"{out}: cannot write the output folder ({exc.strerror or exc}); "
                           f"set output_dir in the profile to a folder you can write") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        try:
            holder = json.loads(handle.read() or "{}")
        except json.JSONDecodeError:
            holder = {}
        handle.close()
        raise OutputLocked(f"{out} is in use by another {holder.get('who', 'run')} (PID {holder.get('pid', '?')} on "
                           f"{holder.get('host', '?')}, started {holder.get('started', '?')}): wait for it to "
                           f"finish or stop it, or set another output_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "who": who,
                             "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
    handle.flush()
    from spotlib.launch.shared_lock import SharedLockHeld, shared_lock

    owner = shared_lock(Path(out) / f"{name}.owner")
    try:
        owner.__enter__()
    except SharedLockHeld as exc:
        _unlock(handle)
        raise OutputLocked(f"{out} is in use by another run ({exc}): wait for it to finish or stop it, "
                           f"or set another output_dir") from None
    handle.owner = owner
    return handle


def release(handle) -> None:
    handle.owner.__exit__(None, None, None)
    _unlock(handle)


def _unlock(handle) -> None:
    import fcntl

    handle.truncate(0)
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


@contextlib.contextmanager
def output_lock(out: Path, name: str = LOCK_NAME):
    """Hold `out`'s lock for a run; kernels started meanwhile know it is held for them (`HELD_ENV`)."""
    handle = acquire(out, name=name)
    before = os.environ.get(HELD_ENV)
    os.environ[HELD_ENV] = str(Path(out).resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HELD_ENV, None)
        else:
            os.environ[HELD_ENV] = before
        release(handle)


def hold_for_kernel(out: Path) -> None:
    """A notebook's kernel writes into `out`: hold its lock until the kernel ends, unless the run that
    started the kernel holds it already (or this kernel does)."""
    folder = str(Path(out).resolve())
    if os.environ.get(HELD_ENV) == folder or folder in _held_here:
        return
    _held_here[folder] = acquire(Path(folder), who="notebook kernel")
