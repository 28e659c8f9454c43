"""How `reproduce` runs a stage's notebook so that a stop request or a full disk ends in one line.

- Signals: papermill's client, when it runs in the main thread, takes SIGINT/SIGTERM for itself
  and only shuts the kernel down, while what the kernel started (stage 01's pre-training child)
  runs on. Here the notebook runs in a worker thread; the runner keeps the signals and passes a
  stop on as SIGINT to the kernel and every process under it, so the stage stops as after
  Ctrl-C (finished work kept), whoever sent the signal: a terminal, a script or a scheduler.
- Kernels talk to the runner over IPC sockets, not TCP: nothing to eavesdrop on, and ipykernel
  has no "running over TCP without encryption" warning to print.
- A full disk (ENOSPC) is recognised in an exception or an executed notebook's error.
"""
from __future__ import annotations

import errno
import signal
import threading
import time
from typing import Any, Callable

GRACE_S = 2.0      # a terminal's Ctrl-C reaches the kernel itself: let it stop on its own first
STOP_WAIT_S = 30.0  # then SIGINT to every process under the runner; past this, they are killed

_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class Stopped(Exception):
    """The run was asked to stop (SIGINT or SIGTERM to the runner or its group)."""

    def __init__(self, signame: str):
        super().__init__(signame)
        self.signame = signame


def descendants() -> list:
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def signal_descendants(signum: int) -> int:
    """Send `signum` to every process under this one (the kernel, its workers and children)."""
    import psutil

    sent = 0
    for child in descendants():
        try:
            child.send_signal(signum)
            sent += 1
        except psutil.Error:
            pass
    return sent


class StopRequests:
    """While entered, SIGINT and SIGTERM only record a request (`requested` names the signal)."""

    def __init__(self):
        self.requested: str | None = None
        self._before: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.requested = self.requested or _NAMES.get(signum, str(signum))

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signum in _NAMES:
                self._before[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._before.items():
            signal.signal(signum, handler)


def run_stoppable(work: Callable[[], Any], stops: StopRequests, poll_s: float = 0.2) -> Any:
    """Run `work` in a thread; on a stop request pass SIGINT on to the processes under the runner
    (then SIGKILL after `STOP_WAIT_S`) and raise `Stopped` once `work` has ended."""
    result: dict[str, Any] = {}

    def target():
        try:
            result["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="stage", daemon=True)
    thread.start()
    asked_at = forwarded_at = None
    while thread.is_alive():
        thread.join(poll_s)
        if stops.requested is None:
            continue
        now = time.monotonic()
        asked_at = asked_at or now
        if forwarded_at is None and now - asked_at >= GRACE_S:
            signal_descendants(signal.SIGINT)
            forwarded_at = now
        elif forwarded_at is not None and now - forwarded_at >= STOP_WAIT_S:
            signal_descendants(signal.SIGKILL)
            forwarded_at = float("inf")
    if stops.requested is not None:
        raise Stopped(stops.requested)
    if "error" in result:
        raise result["error"]
    return result.get("value")


def disk_full(exc: BaseException | None = None, text: str = "") -> bool:
    """Whether `exc` (or any exception it was raised from) or an error text says the disk is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        text += " " + str(exc)
        exc = exc.__cause__ or exc.__context__
    return "No space left on device" in text or f"[Errno {errno.ENOSPC}]" in text


def ipc_kernel_manager():
    """An AsyncKernelManager whose kernel listens on IPC sockets beside its connection file."""
    from jupyter_client.manager import AsyncKernelManager

    class IpcKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs.setdefault("transport", "ipc")
            super().__init__(**kwargs)

    return IpcKernelManager


def execute_notebook(source: str, output: str, **kwargs) -> None:
    """papermill's `execute_notebook` with the kernel on IPC sockets (a quiet console)."""
    import papermill

    papermill.execute_notebook(source, output, kernel_manager_class=ipc_kernel_manager(), **kwargs)
