"""An engine pool serves model after model (stages 05 and 06 start their engines once):
`EnginePool.load` puts another model of the same architecture into the running workers, and
restarts them for a different architecture; the completions equal a pool started on that model."""

import pytest

from spotlib.engines.pool import EnginePool, same_architecture
from spotlib.models import chat_prompt, load_tokenizer

PROMPTS = [f"What is {a} + {b}?" for a, b in [(1, 2), (3, 4), (5, 6)]]
SETTINGS = dict(temperature=1.0, top_p=0.95, top_k=-1, max_tokens=8)


def _model(folder, seed: int, hidden: int = 64):
    from spotlib.config import load_profile
    from spotlib.world.pretrain import build_model
    from spotlib.world.tokenizer import build_tokenizer

    cfg = load_profile("test", overrides={"world.seed": seed, "world.hidden_size": hidden}).world
    tokenizer = build_tokenizer(cfg)
    build_model(cfg, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _requests(folder):
    tokenizer = load_tokenizer(folder)
    return [(chat_prompt(tokenizer, p), 7 + i) for i, p in enumerate(PROMPTS)]


@pytest.mark.slow
def test_a_pool_switched_to_another_model_answers_as_one_started_on_it(tmp_path):
    a, b = _model(tmp_path / "a", seed=0), _model(tmp_path / "b", seed=1)
    c = _model(tmp_path / "c", seed=0, hidden=32)
    assert same_architecture(a, b) and not same_architecture(a, c)
    with EnginePool("vllm_standin", str(b), devices=["0"], log_dir=tmp_path / "fresh") as pool:
        fresh_b = pool.generate(_requests(b), SETTINGS)
    with EnginePool("vllm_standin", str(c), devices=["0"], log_dir=tmp_path / "fresh_c") as pool:
        fresh_c = pool.generate(_requests(c), SETTINGS)
    with EnginePool("vllm_standin", str(a), devices=["0"], log_dir=tmp_path / "swap") as pool:
        first = pool.generate(_requests(a), SETTINGS)
        pid = pool.info()[0]["pid"]
        assert pool.load(b) == "reloaded" and pool.info()[0]["pid"] == pid  # the same worker
        assert pool.generate(_requests(b), SETTINGS) == fresh_b != first
        assert pool.load(c) == "restarted"
        assert pool.generate(_requests(c), SETTINGS) == fresh_c


def test_a_trained_checkpoint_has_its_start_models_architecture(tmp_path):
    """Training turns `use_cache` off in the saved config (gradient checkpointing): still the same weights' shape."""
    import json

    base = {"model_type": "qwen3", "hidden_size": 64, "use_cache": True, "dtype": "float32"}
    for name, changes in (("base", {}), ("trained", {"use_cache": False, "dtype": "bfloat16"}),
                          ("wider", {"hidden_size": 128})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({**base, **changes}))
    assert same_architecture(tmp_path / "base", tmp_path / "trained")
    assert not same_architecture(tmp_path / "base", tmp_path / "wider")
