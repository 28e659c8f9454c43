"""vLLM's CPU build, the engine the rehearsal samples with (`make test-engines`):

- the engine pool on the real engine: every request keeps its own seed, so the completions do
  not depend on how many workers share the requests, and the profile's CPU settings start it;
- GRPO's weight push: after a push into a running engine, its greedy outputs equal those of a
  fresh engine built from the pushed weights (and without packing the tied head again they do not:
  the CPU build keeps a packed copy of the old embeddings in the LM head's GEMM).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spotlib.config import REPO_ROOT, load_profile

pytest.importorskip("vllm", reason="vLLM's CPU build is not installed (make setup-engines)")
pytestmark = [pytest.mark.slow, pytest.mark.engines]

WORKER = Path(__file__).with_name("vllm_push_worker.py")
PROMPTS = [f"What is {a} + {b}?" for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 1), (2, 2), (4, 5), (6, 3)]]
GREEDY = dict(temperature=0.0, top_p=1.0, top_k=-1, max_tokens=16)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from spotlib.world.pretrain import build_model
    from spotlib.world.tokenizer import build_tokenizer

    cfg = load_profile("test").world
    tokenizer = build_tokenizer(cfg)
    folder = tmp_path_factory.mktemp("micro_model")
    build_model(cfg, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _engine_options(workers: int) -> dict:
    from spotlib.engines.settings import pool_options

    profile = load_profile("rehearsal", overrides={"engine.workers": workers, "engine.max_model_len": 384})
    return pool_options(profile)


def _greedy(pool, model: Path) -> list[str]:
    from spotlib.models import chat_prompt, load_tokenizer

    tokenizer = load_tokenizer(model)
    return pool.generate([(chat_prompt(tokenizer, p), 0) for p in PROMPTS], GREEDY)


def test_the_pool_on_vllms_cpu_build_gives_each_request_its_own_seed(model_dir, tmp_path):
    from spotlib.engines.sampling import generate, open_generator

    settings = dict(n=2, temperature=1.0, top_p=0.95, top_k=-1, max_new_tokens=12, seed=5,
                    keys=[f"item{i}" for i in range(len(PROMPTS))], backend="vllm", progress=False)
    results = {}
    for workers in (2, 1):
        with open_generator("vllm", model_dir, seed=0, log_dir=tmp_path / f"w{workers}",
                            engine_options=_engine_options(workers)) as (pool, tokenizer):
            assert len(pool.info()) == workers
            results[workers] = generate(pool, tokenizer, PROMPTS, **settings)
            again = generate(pool, tokenizer, PROMPTS[::-1], **{**settings, "keys": settings["keys"][::-1]})
            assert again[::-1] == results[workers]  # order and batch do not matter, the seed does
    assert results[1] == results[2]
    assert len({t for row in results[1] for t in row}) > 4  # really sampled
    log = (tmp_path / "w2" / "engine-0.log").read_text()
    assert "'enable_chunked_prefill': False" in log and "VLLM_CPU_OMP_THREADS_BIND" in log


def _push(model_dir: Path, out: Path, *flags: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    log = out.with_suffix(".log")
    with log.open("w") as handle:
        done = subprocess.run([sys.executable, str(WORKER), "--base", str(model_dir), "--out", str(out), *flags],
                              stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=900)
    assert done.returncode == 0, f"push worker failed; its log: {log}\n{log.read_text()[-3000:]}"
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def pushes(model_dir, tmp_path_factory):
    """The same pushed weights, with and without the tied head packed again; a fresh engine built from
    the pushed weights, then switched back to the original model (`EnginePool.load`)."""
    from spotlib.engines.pool import EnginePool

    root = tmp_path_factory.mktemp("pushes")
    pushed, stale = _push(model_dir, root / "push"), _push(model_dir, root / "stale", "--no-repack")
    with EnginePool("vllm", str(root / "push" / "pushed"), seed=0, log_dir=root / "fresh",
                    **_engine_options(1)) as pool:
        fresh = _greedy(pool, root / "push" / "pushed")
        assert pool.load(model_dir) == "reloaded"
        original = _greedy(pool, model_dir)
    return {"pushed": pushed, "stale": stale, "fresh": fresh, "original": original}


def test_after_a_push_greedy_outputs_equal_a_fresh_engine_with_the_pushed_weights(pushes):
    assert pushes["pushed"]["repacked"] and pushes["pushed"]["repacked"][0] >= 1  # the tied LM head
    assert pushes["pushed"]["sleeps"] is False  # the CPU build has no sleep mode: the engine stays awake
    assert sum(len(t) >= 8 for t in pushes["fresh"]) >= 6  # text to compare, not empty answers
    assert pushes["pushed"]["texts"] == pushes["fresh"]
    assert pushes["original"] != pushes["fresh"]  # the push changed what the engine computes


def test_without_packing_the_tied_head_again_the_push_is_wrong(pushes):
    """The diagnosis: vLLM's reload updates the embeddings, but the CPU build's LM-head GEMM still
    multiplies by the packed copy of the old ones."""
    assert pushes["stale"]["texts"] != pushes["fresh"]
