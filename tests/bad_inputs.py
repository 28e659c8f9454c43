"""Bad inputs a user may give, and the one line each now gets.

`BAD_SETTINGS` are profile settings no run can use (checked by `reproduce --dry-run`, the key
named in the line); `bad_files()` are broken inputs met by a stage. The test
`tests/test_reliability_inputs.py` runs every row; `python tests/bad_inputs.py` prints them
as a table (input | message).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

# (what the user wrote: dotted overrides of the test profile, the key the line must name)
BAD_SETTINGS: list[tuple[dict, str]] = [
    ({"sample.temperature": -0.5}, "sample.temperature"),
    ({"sample.top_p": 1.5}, "sample.top_p"),
    ({"sample.top_k": 0}, "sample.top_k"),
    ({"eval.temperature": -0.7}, "eval.temperature"),
    ({"eval.top_p": 0.0}, "eval.top_p"),
    ({"eval.top_k": -5}, "eval.top_k"),
    ({"rl.temperature": -1.0}, "rl.temperature"),
    ({"rl.top_k": 0}, "rl.top_k"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"seed": -1}, "seed"),
    ({"train.methods": ["sft_plus", "spot_bco", "sft_plus"]}, "train.methods"),
    ({"eval.benchmarks": ["arith", "arith"]}, "eval.benchmarks"),
    ({"rl.init_methods": ["base", "base"]}, "rl.init_methods"),
    ({"train.lr": {"default": 1.0e-4, "spot_bc0": 5.0e-5}}, "train.lr.spot_bc0"),
    ({"train.lr": {"spot_bco": 5.0e-5}}, "train.lr"),
    ({"train.beta": -0.1}, "train.beta"),
    ({"train.warmup_ratio": -0.05}, "train.warmup_ratio"),
    ({"train.warmup_ratio": 1.5}, "train.warmup_ratio"),
    ({"train.kl_coef": -0.1}, "train.kl_coef"),
    ({"train.delta_ema_decay": 1.0}, "train.delta_ema_decay"),
    ({"train.adam_betas": [0.9]}, "train.adam_betas"),
    ({"train.max_grad_norm": 0.0}, "train.max_grad_norm"),
    ({"train.max_prompt_len": 512}, "train.max_prompt_len"),
    ({"oracle.max_cost_usd": -5.0}, "oracle.max_cost_usd"),
    ({"oracle.max_retries": -1}, "oracle.max_retries"),
    ({"oracle.price_output_per_mtok": -1.0}, "oracle.price_output_per_mtok"),
    ({"oracle.temperature": -0.2}, "oracle.temperature"),
    ({"oracle.kind": "openai", "oracle.base_url": "not a url"}, "oracle.base_url"),
    ({"oracle.kind": "local_server", "oracle.server_faults": {"http_5000": 0.1}}, "oracle.server_faults.http_5000"),
    ({"oracle.kind": "local_server", "oracle.server_faults": {"http_500": 1.5}}, "oracle.server_faults.http_500"),
    ({"world.hidden_size": 65}, "world.hidden_size"),
    ({"world.num_kv_heads": 3, "world.num_heads": 2}, "world.num_kv_heads"),
    ({"world.vocab_size": 5}, "world.vocab_size"),
    ({"world.operand_min": 100}, "world.operand_min"),
    ({"world.arith_min_ops": 4}, "world.arith_min_ops"),
    ({"world.warmup_steps": 100}, "world.warmup_steps"),
    ({"world.pretrain_min_lr": 1.0}, "world.pretrain_min_lr"),
    ({"world.mix": {"arith": -1.0, "facts": 1.0}}, "world.mix.arith"),
    ({"model.max_len": 1000, "train.max_len": 1000}, "model.max_len"),
    ({"filter.nll_batch_tokens": 10}, "filter.nll_batch_tokens"),
    ({"filter.report_gammas": [0.0, 0.5]}, "filter.report_gammas[0]"),
    ({"eval.tie_sigmas": 0.0}, "eval.tie_sigmas"),
    ({"rl.clip_eps": 1.5}, "rl.clip_eps"),
    ({"rl.rollouts_per_prompt": 1}, "rl.rollouts_per_prompt"),
    ({"rl.vllm_gpu_memory": 1.5}, "rl.vllm_gpu_memory"),
    ({"hardware.mfu": 2.0}, "hardware.mfu"),
    ({"model.name_or_path": "/no/such/model"}, "model.name_or_path"),
    ({"sample.dataset": "open-r1/DAPO-Math-17k-Processed", "sample.data_files": "/no/such/dapo.jsonl"},
     "sample.data_files"),
    ({"eval.data_files": {"arith": "/no/such/arith.jsonl"}}, "eval.data_files.arith"),
    ({"train.kl_probe_file": "/no/such/probe.jsonl"}, "train.kl_probe_file"),
    ({"train.accelerate_config": "params/no_such_config.yaml"}, "train.accelerate_config"),
]


def dry_run_message(overrides: dict, output_dir: str) -> str | None:
    """The line `reproduce --dry-run` prints for the test profile with `overrides` (None: accepted)."""
    from spotlib.config import ConfigError, load_profile
    from spotlib.plan.validate import validate

    try:
        validate(load_profile("test", overrides={"output_dir": output_dir, **overrides}))
    except ConfigError as exc:
        return str(exc)
    return None


def torn_dapo_line(folder: Path) -> str:
    from spotlib.config import load_profile
    from spotlib.io import DataError
    from spotlib.stages.sample import load_train_problems

    data = folder / "dapo.jsonl"
    data.write_text('{"prompt": "What is 1 + 1?", "solution": "2"}\n{"prompt": "What is 2 + 2?", "solu\n'
                    '{"prompt": "What is 3 + 3?", "solution": "6"}\n')
    profile = load_profile("test", overrides={"output_dir": str(folder / "out"), "sample.data_files": str(data),
                                              "sample.dataset": "open-r1/DAPO-Math-17k-Processed",
                                              "sample.grading": "math_verify"})
    try:
        load_train_problems(profile)
    except DataError as exc:
        return str(exc)
    return "accepted"


def missing_base_model_at_stage_03(folder: Path) -> str:
    from pairs_helpers import write_fake_stage01

    from spotlib.config import load_profile
    from spotlib.io import DataError, write_jsonl
    from spotlib.stages import filter as pair_filter

    profile = load_profile("test", overrides={"output_dir": str(folder / "out03")})
    write_fake_stage01(profile, 4)
    stage02 = profile.stage_dir("02_rectify")
    write_jsonl(stage02 / "rectified.jsonl", [])
    write_jsonl(stage02 / "direct.jsonl", [])
    try:
        pair_filter.run(profile, progress=False)
    except DataError as exc:
        return str(exc)
    return "accepted"


def unreachable_oracle(folder: Path) -> str:
    import socket

    from pairs_helpers import write_fake_stage01

    from spotlib.config import load_profile
    from spotlib.oracle.base import OracleUnanswered
    from spotlib.stages import rectify

    with socket.socket() as probe:   # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    profile = load_profile("test", overrides={
        "output_dir": str(folder / "out02"), "oracle.kind": "openai", "oracle.model": "m",
        "oracle.base_url": f"http://127.0.0.1:{port}/v1", "oracle.max_retries": 0, "oracle.request_retries": 0,
        "oracle.retry_base_s": 0.01})
    write_fake_stage01(profile, 6)
    try:
        rectify.run(profile, progress=False)
    except OracleUnanswered as exc:
        return str(exc)
    return "accepted"


def bad_files(folder: Path) -> list[tuple[str, str]]:
    """(input, message) of broken inputs that stages meet."""
    return [("a torn line in sample.data_files (DAPO jsonl)", torn_dapo_line(folder)),
            ("no base_model/ at stage 03", missing_base_model_at_stage_03(folder)),
            ("oracle.base_url at a closed localhost port", unreachable_oracle(folder))]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out")
        print("| bad input | message |\n|---|---|")
        for overrides, _ in BAD_SETTINGS:
            shown = ", ".join(f"{k}: {v!r}" for k, v in overrides.items())
            message = dry_run_message(overrides, out) or "ACCEPTED"
            message = message.replace(str(Path(__file__).resolve().parent.parent / "params") + "/", "")
            print(f"| `{_cell(shown)}` | {_cell(message.replace(tmp, '<tmp>'))} |")
        for what, message in bad_files(Path(tmp)):
            print(f"| {what} | {_cell(message.replace(tmp, '<tmp>'))} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
