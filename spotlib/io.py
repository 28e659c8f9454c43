"""JSONL and manifests: append atomically, resume safely, fail loudly on bad lines.

Finished work is never lost or duplicated: each record is one `write` of one full
line followed by fsync, so a `kill -9` can at worst leave a torn *last* line, which
`JsonlAppender` detects and truncates on open before appending again.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


class DataError(ValueError):
    """A data file is missing or holds a malformed record."""


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open("r", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield record


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    """Read every record; `required` names fields each record must have."""
    required = tuple(required)
    records = []
    for lineno, record in enumerate(iter_jsonl(path), start=1):
        missing = [key for key in required if key not in record]
        if missing:
            raise DataError(f"{path}: record {lineno}: missing field(s) {', '.join(missing)}")
        records.append(record)
    return records


def read_stage_output(path: str | os.PathLike, stage: str, required: Iterable[str] = ()) -> list[dict]:
    """`read_jsonl` for a file an earlier stage wrote: a bad line names the file, the line, and the stage
    whose re-run writes the file again (it sees its output was changed and makes it anew)."""
    try:
        return read_jsonl(path, required)
    except DataError as exc:
        raise DataError(f"{exc}: run stage {stage} again, it writes this file anew") from None


DATA_FILE_KINDS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def load_data_file(path: Path, key: str):
    """A local data file as a `datasets.Dataset`; a file it cannot read is named with the profile key
    (a torn JSONL line with its line number) instead of the library's generation error."""
    import datasets

    kind = DATA_FILE_KINDS.get(path.suffix)
    if kind is None:
        raise DataError(f"{path}: unsupported data file type {path.suffix!r} (parquet, jsonl, json, csv) ({key})")
    if path.suffix == ".jsonl":
        try:
            for _ in iter_jsonl(path):   # names the first bad line
                pass
        except DataError as exc:
            raise DataError(f"{exc} ({key}): fix or remove that line") from None
    try:
        return datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as exc:  # noqa: BLE001 - the library's errors do not name the file
        cause = exc.__cause__ or exc
        raise DataError(f"{path}: cannot be read as {kind} ({key}): {type(cause).__name__}: "
                        f"{' '.join(str(cause).split())[:200]}") from None


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=False)


def shared_mode() -> int:
    """The mode an ordinary `open()` would give a new file (0o666 less the umask).

    `tempfile.mkstemp` creates 0600 files; outputs renamed from them would be unreadable
    to the rest of a group sharing a results folder.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def share_saved_files(folder: str | os.PathLike) -> None:
    """Give the files of a saved model the mode an ordinary `open()` gives (umask applies).

    safetensors writes each weight file to a temporary file and renames it (the `tempfile`
    crate, mode 0600), so `save_pretrained` leaves `model.safetensors` readable by its owner
    only while every other file follows the umask.
    """
    mode = shared_mode()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink() and (path.stat().st_mode & 0o777) != mode:
            os.chmod(path, mode)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside `path`; on success it becomes `path` (mode per umask), else is removed.

    For writers that take a file name (torch.save, savefig): readers see the old file or the
    whole new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, shared_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_text(path: str | os.PathLike):
    """Yield a text handle to a temp file beside `path`; on success it is fsynced and becomes `path`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write a whole file atomically (temp file + rename): readers see old or new, never half."""
    count = 0
    with atomic_text(path) as handle:
        for record in records:
            handle.write(_dumps(record) + "\n")
            count += 1
    return count


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_text(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, default=str)


class JsonlAppender:
    """Append-only JSONL keyed by `key_fn(record)`: a re-run skips keys already written.

    On open, a torn last line (a crash mid-write) is cut off; complete lines are kept.
    """

    def __init__(self, path: str | os.PathLike, key_fn: Callable[[dict], Any], fsync: bool = True):
        self.path = Path(path)
        self.key_fn = key_fn
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self.records: list[dict] = self._readable_records()
        self.done = {self.key_fn(r) for r in self.records}
        self._handle = self.path.open("a", encoding="utf-8")

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with self.path.open("r+b") as handle:
            handle.truncate(cut)

    def _readable_records(self) -> list[dict]:
        """Every whole record; lines that are not (a file cut or overwritten in the middle) are dropped
        from the file, so their work is done again rather than trusted or blocking the stage."""
        if not self.path.exists():
            return []
        kept, dropped = [], 0
        with self.path.open("r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if isinstance(record, dict):
                    kept.append(record)
                else:
                    dropped += 1
        if dropped:
            print(f"{self.path}: {dropped} unreadable line(s) dropped; their work is done again")
            write_jsonl(self.path, kept)
        return kept

    def __contains__(self, key) -> bool:
        return key in self.done

    def append(self, record: dict) -> bool:
        """Write one record unless its key is already present; returns whether it was written."""
        key = self.key_fn(record)
        if key in self.done:
            return False
        self._handle.write(_dumps(record) + "\n")
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())
        self.done.add(key)
        self.records.append(record)
        return True

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dir_sha256(path: str | os.PathLike, skip: tuple[str, ...] = ()) -> str:
    """Hash of every file's relative path and content under a folder (a saved model, say), but for
    files named in `skip`."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name not in skip):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def weights_sha256(model_dir: str | os.PathLike) -> str:
    """Identity of a saved model: its config and weight files (not logs or summaries beside them)."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.iterdir()
                   if p.is_file() and (p.name == "config.json" or p.name.endswith(WEIGHT_SUFFIXES)))
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in files):
        raise DataError(f"{model_dir}: no weight files (*.safetensors) in this saved model")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def weights_bytes(model_dir: str | os.PathLike) -> int:
    model_dir = Path(model_dir)
    return sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def weights_problem(model_dir: str | os.PathLike, expected: str | None, expected_bytes: int | None = None,
                    full: bool = True) -> str | None:
    """Why a saved model's weights cannot be trusted (None when they match what was recorded).

    `expected` is the `weights_sha256` its writer recorded (a model saved before checksums
    were recorded, None, is accepted when its weight files are present). `full=False`
    compares only the byte count (a truncated file), for checks that must stay cheap on
    large models.
    """
    try:
        if not full:
            size = weights_bytes(model_dir)
            if size == 0:
                return f"{model_dir}: no weight files (*.safetensors) in this saved model"
            if expected_bytes is not None and size != expected_bytes:
                return f"{model_dir}: weight files hold {size} bytes, {expected_bytes} were saved (partly written)"
            return None
        actual = weights_sha256(model_dir)
    except (DataError, OSError) as exc:
        return str(exc)
    if expected is not None and actual != expected:
        return (f"{model_dir}: weight files do not match the checksum recorded when they were saved "
                f"(corrupt or partly written)")
    return None


def location_free(obj: Any, root: str) -> Any:
    """`obj` with the path `root` (an outputs folder) written as `{output_dir}` in every string."""
    if isinstance(obj, str):
        return obj.replace(root, "{output_dir}") if root and root != "/" else obj
    if isinstance(obj, dict):
        return {k: location_free(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [location_free(v, root) for v in obj]
    return obj


def params_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _machine() -> dict:
    """Where a manifest was written (CPU, cores, native bf16): informative, never a cache key."""
    from spotlib.precision import machine
    return machine()


class Manifest:
    """A stage's `manifest.json`: params, input hashes, counts, wall time.

    A stage is fresh (skippable) when its manifest is complete and records the same
    params hash and input hashes as the run about to start.
    """

    def __init__(self, stage_dir: str | os.PathLike, params: Any, inputs: dict[str, str] | None = None):
        self.path = Path(stage_dir) / "manifest.json"
        self.params = params
        self.inputs = dict(inputs or {})
        self.counts: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def key(self) -> dict:
        """Params and inputs, with the output folder's own path written as `{output_dir}`: a moved or
        copied outputs folder is the same study, not a new one."""
        out = self.path.parent.parent
        roots = sorted({str(out), str(out.resolve())}, key=len, reverse=True)

        def free(obj):
            for root in roots:
                obj = location_free(obj, root)
            return obj
        return free({"params_hash": params_hash(free(self.params)), "inputs": self.inputs})

    def is_fresh(self) -> bool:
        if not self.path.is_file():
            return False
        try:
            old = json.loads(self.path.read_text())
        except json.JSONDecodeError:
            return False
        return bool(old.get("complete")) and old.get("key") == self.key() and self.outputs_whole(old)

    def outputs_whole(self, old: dict) -> bool:
        """The outputs the manifest lists still hold what was written (a cut or edited file is made again)."""
        for name, digest in (old.get("outputs") or {}).items():
            path = self.path.parent / name
            if not path.is_file() or file_sha256(path) != digest:
                print(f"{path}: changed or cut since the stage wrote it; the stage runs again")
                return False
        return True

    def load(self) -> dict:
        return json.loads(self.path.read_text())

    def write(self, complete: bool = True, outputs: Iterable[str] = (), **extra) -> dict:
        """`outputs`: files of the stage folder (names) whose checksums a fresh manifest must still match."""
        body = {
            "key": self.key(),
            "params": self.params,
            "inputs": self.inputs,
            "counts": self.counts,
            "timings": self.timings,
            "wall_time_s": round(time.perf_counter() - self._start, 3),
            "complete": complete,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": _machine(),
            **({"outputs": {name: file_sha256(self.path.parent / name) for name in outputs}} if outputs else {}),
            **extra,
        }
        write_json_atomic(self.path, body)
        return body
