import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from spotlib.io import DataError, JsonlAppender, Manifest, read_jsonl, write_json_atomic, write_jsonl


def test_read_jsonl_reports_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": 1}\n{"id": 2,\n{"id": 3}\n')
    with pytest.raises(DataError, match=r"a\.jsonl:2: malformed JSON line"):
        read_jsonl(path)


def test_read_jsonl_non_object_and_missing_field(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('[1, 2]\n')
    with pytest.raises(DataError, match=r"b\.jsonl:1: expected a JSON object"):
        read_jsonl(path)
    path.write_text('{"id": 1}\n')
    with pytest.raises(DataError, match="missing field"):
        read_jsonl(path, required=["id", "prompt"])
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "none.jsonl")


def test_appender_skips_done_keys_and_repairs_torn_tail(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path, key_fn=lambda r: r["id"]) as sink:
        assert sink.append({"id": "a", "v": 1})
        assert not sink.append({"id": "a", "v": 2})
    with path.open("a") as handle:
        handle.write('{"id": "b", "v"')  # a write cut short by a crash
    with JsonlAppender(path, key_fn=lambda r: r["id"]) as sink:
        assert "a" in sink and "b" not in sink
        assert sink.append({"id": "b", "v": 3})
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]


def test_appender_survives_sigkill_without_loss_or_duplicates(tmp_path):
    path = tmp_path / "killed.jsonl"
    script = textwrap.dedent(f"""
        import time
        from spotlib.io import JsonlAppender
        with JsonlAppender({str(path)!r}, key_fn=lambda r: r["i"]) as sink:
            for i in range(100000):
                sink.append({{"i": i, "pad": "x" * 200}})
                if i == 50:
                    print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with JsonlAppender(path, key_fn=lambda r: r["i"]) as sink:
        written = len(sink.records)
        for i in range(written + 20):
            sink.append({"i": i, "pad": "x" * 200})
    ids = [r["i"] for r in read_jsonl(path)]
    assert written > 50
    assert ids == list(range(written + 20))


def test_write_jsonl_is_atomic_replace(tmp_path):
    path = tmp_path / "w.jsonl"
    write_jsonl(path, [{"a": 1}])
    write_jsonl(path, [{"a": 2}, {"a": 3}])
    assert read_jsonl(path) == [{"a": 2}, {"a": 3}]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    def records():
        yield {"a": 2}
        raise RuntimeError("interrupted")

    path = tmp_path / "w.jsonl"
    write_jsonl(path, [{"a": 1}])
    with pytest.raises(RuntimeError, match="interrupted"):
        write_jsonl(path, records())
    assert read_jsonl(path) == [{"a": 1}]
    write_json_atomic(tmp_path / "m.json", {"k": 1})
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "m.json", {1j: 0})  # a complex key is not JSON
    assert json.loads((tmp_path / "m.json").read_text()) == {"k": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "w.jsonl"]


def test_manifest_freshness(tmp_path):
    m = Manifest(tmp_path, params={"x": 1}, inputs={"data": "h1"})
    assert not m.is_fresh()
    m.write(complete=False)
    assert not m.is_fresh()
    m.counts["n"] = 3
    m.write(complete=True)
    assert m.is_fresh()
    assert json.loads((tmp_path / "manifest.json").read_text())["counts"] == {"n": 3}
    assert not Manifest(tmp_path, params={"x": 2}, inputs={"data": "h1"}).is_fresh()
    assert not Manifest(tmp_path, params={"x": 1}, inputs={"data": "h2"}).is_fresh()
