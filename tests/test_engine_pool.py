"""The vLLM process topology on CPU: engine workers with the stand-in engine (a child process each)."""
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from spotlib.engines.pool import EnginePool, EngineWorkerError
from spotlib.engines.standin import StandinLLM
from spotlib.engines.sampling import generate

PROMPTS = [f"What is {a} + {b}?" for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 1), (2, 2), (4, 5)]]
KEYS = [f"item{i}" for i in range(len(PROMPTS))]
SETTINGS = dict(n=2, temperature=1.0, top_p=0.95, top_k=-1, max_new_tokens=8, seed=11)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A micro Qwen3 model saved like any HF model, loaded by path."""
    from spotlib.config import load_profile
    from spotlib.world.pretrain import build_model
    from spotlib.world.tokenizer import build_tokenizer

    cfg = load_profile("test").world
    torch.manual_seed(0)
    tokenizer = build_tokenizer(cfg)
    folder = tmp_path_factory.mktemp("micro_model")
    build_model(cfg, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pool(model_dir, tmp_path_factory):
    with EnginePool("vllm_standin", str(model_dir), seed=0, log_dir=tmp_path_factory.mktemp("engines")) as p:
        yield p


def _gone(pid: int, within_s: float = 15.0) -> bool:
    """Whether process `pid` has exited (or is a zombie) within the delay."""
    deadline = time.time() + within_s
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.2)
    return False


def test_standin_engine_cannot_start_in_a_daemonic_pool_worker(model_dir):
    """The mistake the pool avoids: vLLM (and the stand-in) start a child in their constructor."""
    with mp.get_context("spawn").Pool(1) as daemonic:
        with pytest.raises(AssertionError, match="daemonic processes are not allowed to have children"):
            daemonic.apply(StandinLLM, (str(model_dir),))


def test_one_persistent_worker_per_device_reused_across_chunks(pool, model_dir):
    from spotlib.models import load_model

    before = pool.info()
    assert [w["cuda_visible_devices"] for w in before] == ["0", "1"]  # set in each worker before its engine
    assert len({w["pid"] for w in before}) == 2 and all(w["pid"] != os.getpid() for w in before)
    assert all(w["engine_pid"] not in (None, w["pid"]) for w in before)  # the engine's own child process
    model, tok = load_model(model_dir, device="cpu")
    chunks = [(PROMPTS[:3], KEYS[:3]), (PROMPTS[3:], KEYS[3:]), (PROMPTS[::-1], KEYS[::-1])]
    pooled = [generate(pool, tok, p, keys=k, backend="vllm_standin", **SETTINGS) for p, k in chunks]
    after = pool.info()
    # Same workers, same engines (built once each), every chunk served by both workers.
    assert [(w["pid"], w["engine_pid"]) for w in after] == [(w["pid"], w["engine_pid"]) for w in before]
    assert all(w["engines_built"] == 1 and w["chunks"] == w0["chunks"] + 3 for w, w0 in zip(after, before))
    # In input order, and the same samples as the in-process transformers backend (same per-sample seeds).
    local = [generate(model, tok, p, keys=k, backend="transformers", progress=False, **SETTINGS) for p, k in chunks]
    assert pooled == local
    assert all(len(x) == 2 for x in pooled[0])
    assert pooled[2] == (pooled[0] + pooled[1])[::-1]


def test_a_failing_worker_stops_the_call_naming_worker_and_log(pool):
    # One request goes to worker 0 alone; the engine rejects its settings (as vLLM does: top_p in (0, 1]).
    with pytest.raises(EngineWorkerError, match=r"engine worker 0 \(device 0.*failed: .*top_p must be in "
                                                r"\(0, 1\].*its log: .*engine-0\.log"):
        pool.generate([("prompt", 1)], dict(temperature=1.0, top_p=0.0, top_k=-1, max_tokens=4))
    assert "top_p must be in (0, 1]" in (pool.log_dir / "engine-0.log").read_text()
    assert len(pool.generate([("prompt", 1), ("other", 2)], dict(temperature=1.0, top_p=1.0, top_k=-1,
                                                                  max_tokens=4))) == 2  # still serving


def test_ctrl_c_is_left_to_the_parent_and_a_dead_worker_stops_the_call(pool):
    """Last user of the module's pool: it kills a worker, then closes the pool."""
    settings = dict(temperature=1.0, top_p=1.0, top_k=-1, max_tokens=4)
    workers = pool.info()
    for w in workers:  # a terminal's Ctrl-C reaches the whole process group
        os.kill(w["pid"], signal.SIGINT)
        os.kill(w["engine_pid"], signal.SIGINT)
    assert len(pool.generate([(f"p{i}", i) for i in range(4)], settings)) == 4  # ignored: the parent decides
    os.kill(workers[1]["pid"], signal.SIGKILL)
    with pytest.raises(EngineWorkerError, match=r"engine worker 1 .*died \(exit code -9\); its log: .*engine-1\.log"):
        pool.generate([(f"p{i}", i) for i in range(4)], settings)
    pool.close()  # what leaving the `with` block does, on an error or Ctrl-C alike
    assert all(_gone(w["pid"]) and _gone(w["engine_pid"]) for w in workers)


def test_an_engine_that_cannot_start_names_its_log(tmp_path):
    with pytest.raises(EngineWorkerError, match=r"engine worker 0 .*failed: .*no config.json here.*engine-0\.log"):
        with EnginePool("vllm_standin", "/nonexistent/model", devices=["0"], log_dir=tmp_path):
            pass


@pytest.mark.slow  # two more engine processes; the pool itself is covered by the fast tests above
def test_stage_01_through_the_engine_pool_equals_the_transformers_backend(sampled_profile, tmp_path):
    """The paper's sampling path (engine workers) run by stage 01, on the stand-in engine."""
    import shutil

    from spotlib.config import load_profile
    from spotlib.io import read_jsonl
    from spotlib.stages import sample

    overrides = {"sample.num_problems": 8, "sample.max_new_tokens": 24}
    runs = {}
    for backend in ("transformers", "vllm_standin"):
        profile = load_profile("test", overrides={"output_dir": str(tmp_path / backend), "sample.backend": backend,
                                                  **overrides})
        shutil.copytree(sampled_profile.base_model_path(), profile.base_model_path())
        sample.run(profile, progress=False)
        runs[backend] = read_jsonl(profile.stage_dir("01_sample") / "all.jsonl")
    assert len(runs["vllm_standin"]) == 8
    assert runs["vllm_standin"] == runs["transformers"]
    logs = sorted((tmp_path / "vllm_standin" / "01_sample" / "engines").glob("engine-*.log"))
    assert [p.name for p in logs] == ["engine-0.log", "engine-1.log"]
    assert all("chunk 1:" in p.read_text() for p in logs)
