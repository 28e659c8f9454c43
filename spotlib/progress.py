"""Progress you can see from the console while a notebook runs under `make reproduce`.

Inside a stage, code makes its bars with `bar(...)` (tqdm's arguments). In JupyterLab or a
terminal that is a tqdm bar. Under the runner (`spotlib.reproduce`), which sets
SPOTLIB_PROGRESS to a file, it is a `Reporter`: no widget is stored in the executed notebook;
instead one JSON line per bar goes to that file every few seconds (step k/N, its postfix such
as loss and tokens/s, elapsed, estimated time left). Worker processes inherit the variable and
append to the same file (small O_APPEND writes do not interleave). `follow` runs in the runner
and prints the newest line of every active bar at least every `print_every_s`, and a heartbeat
when nothing was reported, so a stage is never silent for long.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

ENV_FILE = "SPOTLIB_PROGRESS"          # the JSONL file the runner follows
ENV_EVERY = "SPOTLIB_PROGRESS_EVERY_S"  # seconds between two lines of one bar (default 5)


def reporting_to() -> Path | None:
    path = os.environ.get(ENV_FILE)
    return Path(path) if path else None


def bar(iterable=None, total=None, desc: str = "", disable: bool = False, initial: int = 0, unit: str = "it",
        **tqdm_kwargs):
    """A progress bar: tqdm when interactive, a `Reporter` under the runner, silent when disabled."""
    if disable:
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, desc=desc, disable=True)
    path = reporting_to()
    if path is None:
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, **tqdm_kwargs)
    return Reporter(path, iterable=iterable, total=total, desc=desc, initial=initial, unit=unit)


class Reporter:
    """The tqdm calls the study uses (update, set_postfix, set_description, close, iteration),
    written as JSON lines to `path` at most every SPOTLIB_PROGRESS_EVERY_S seconds."""

    def __init__(self, path: Path, iterable=None, total=None, desc: str = "", initial: int = 0, unit: str = "it"):
        self.path, self.iterable, self.desc, self.unit = Path(path), iterable, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.initial = total, initial, initial
        self.postfix: dict = {}
        self.every_s = float(os.environ.get(ENV_EVERY, "5"))
        self.start = time.time()
        self.last_emit = 0.0
        self.closed = False
        self._emit(force=True)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self):
        return self.total or 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1):
        self.n += n
        self._emit()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs):
        self.postfix = {**(ordered_dict or {}), **kwargs}
        self._emit()

    def set_postfix_str(self, text: str = "", refresh: bool = True):
        self.postfix = {"": text}
        self._emit()

    def set_description(self, desc: str = "", refresh: bool = True):
        self.desc = desc
        self._emit()

    def refresh(self):
        self._emit()

    def write(self, text: str, *args, **kwargs):
        print(text, flush=True)

    def close(self):
        if not self.closed:
            self.closed = True
            self._emit(force=True)

    def _emit(self, force: bool = False):
        now = time.time()
        if not force and now - self.last_emit < self.every_s:
            return
        self.last_emit = now
        elapsed = now - self.start
        done = self.n - self.initial
        eta = None
        if self.total and done > 0 and not self.closed:
            eta = round((self.total - self.n) * elapsed / done, 1)
        record = {"t": round(now, 2), "pid": os.getpid(), "desc": self.desc, "n": self.n, "total": self.total,
                  "unit": self.unit, "postfix": {k: str(v) for k, v in self.postfix.items()},
                  "elapsed_s": round(elapsed, 1), "eta_s": eta, "closed": self.closed}
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def describe(record: dict) -> str:
    """One console line for a bar's record: what, k/N, postfix, elapsed, time left."""
    total = record.get("total")
    count = f"{record['n']}/{total}" if total else f"{record['n']}"
    pct = f" ({100 * record['n'] / total:.0f}%)" if total else ""
    post = " ".join(f"{k}={v}" if k else v for k, v in record.get("postfix", {}).items())
    state = "done" if record.get("closed") else f"left ~{clock(record.get('eta_s'))}"
    return (f"{record.get('desc') or 'work'}: {count} {record.get('unit', 'it')}{pct}"
            + (f" {post}" if post else "") + f" | {clock(record.get('elapsed_s'))} elapsed, {state}")


class Follower:
    """Tails a progress file in a thread and prints each bar's newest state (`follow`)."""

    def __init__(self, path: Path, stage: str, print_every_s: float = 10.0, heartbeat_s: float = 30.0,
                 out=None):
        self.path, self.stage = Path(path), stage
        self.out = out or (lambda line: print(line, flush=True))
        self.print_every_s, self.heartbeat_s = print_every_s, heartbeat_s
        self.latest: dict[tuple, dict] = {}
        self.offset = 0
        self.start = time.time()
        self.last_print = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.poll(final=True)

    def _run(self):
        while not self._stop.wait(min(1.0, self.print_every_s / 2)):
            self.poll()

    def _read_new(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self.offset += end
        records = []
        for line in chunk[:end].splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def poll(self, final: bool = False):
        fresh = self._read_new()
        for record in fresh:
            self.latest[(record.get("pid"), record.get("desc"))] = {**record, "_new": True}
        now = time.time()
        changed = [r for r in self.latest.values() if r.get("_new")]
        due = now - self.last_print >= self.print_every_s
        if changed and (due or final or any(r.get("closed") for r in changed)):
            for key, record in list(self.latest.items()):
                if record.get("_new"):
                    self.out(f"  [{self.stage} {clock(now - self.start)}] {describe(record)}")
                    record["_new"] = False
                if record.get("closed"):
                    del self.latest[key]
            self.last_print = now
        elif not final and now - self.last_print >= self.heartbeat_s:
            running = [describe(r) for r in self.latest.values()]
            self.out(f"  [{self.stage} {clock(now - self.start)}] running"
                     + (f"; last: {running[-1]}" if running else ""))
            self.last_print = now


def follow(path: Path, stage: str, **kwargs) -> Follower:
    """`with follow(path, stage): ...` prints the progress others write to `path` meanwhile."""
    return Follower(path, stage, **kwargs)
