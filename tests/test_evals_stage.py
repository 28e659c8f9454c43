import json
import shutil

import pytest


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """An untrained micro student as base plus three stage-04 checkpoints (copies of it), evaluated."""
    from spotlib.config import load_profile
    from spotlib.stages import evaluate
    from spotlib.world.pretrain import build_model
    from spotlib.world.tokenizer import build_tokenizer

    out = tmp_path_factory.mktemp("out")
    profile = load_profile("test", overrides={"output_dir": str(out), "seeds": [0, 1], "train.methods": ["spot_bco", "sft"],
                                              "eval.n_items": {"default": 3}, "eval.max_new_tokens": 8})
    base = profile.base_model_path()  # pre-training is not what this test is about
    tokenizer = build_tokenizer(profile.world)
    build_model(profile.world, tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    for run, seed, kl in (("spot_bco", 0, 0.01), ("spot_bco", 1, 0.02), ("sft", 0, 0.3), ("sft", 1, 0.3)):
        ckpt = out / "04_train_spot" / run / f"seed{seed}"
        shutil.copytree(base, ckpt)
        (ckpt / "summary.json").write_text(json.dumps({
            "run": run, "method": run, "data": "rectified" if run == "spot_bco" else "direct",
            "delta_mode": "running_mean" if run == "spot_bco" else None, "seed": seed,
            "final_probe": {"kl/probe": kl}, "complete": True}))
    summary = evaluate.run(profile, progress=False)
    return profile, summary


def test_stage_writes_per_item_results_tables_figures_and_reading(evaluated):
    profile, summary = evaluated
    stage = profile.out / "05_eval_forgetting"
    records = [json.loads(line) for line in (stage / "results.jsonl").read_text().splitlines()]
    # base × 2 seeds + 4 checkpoints, 4 families × 3 items
    assert len(records) == 6 * 4 * 3
    assert {r["model"] for r in records} == {"base/seed0", "base/seed1", "spot_bco/seed0", "spot_bco/seed1",
                                             "sft/seed0", "sft/seed1"}
    for name in ("table.csv", "table_models.csv", "table.md", "reading.md", "results.json", "manifest.json",
                 "scores_bar.png", "kl_vs_retention.png"):
        assert (stage / name).is_file(), name
    runs = {t["run"]: t for t in summary["runs"]}
    assert runs["spot_bco"]["seeds"] == 2 and runs["base"]["seeds"] == 2
    assert runs["spot_bco"]["kl"] == pytest.approx(0.015)
    for t in summary["runs"]:
        assert 0.0 <= t["overall"] <= 100.0
        assert t["overall"] == pytest.approx((t["arith"] + t["arith_ood"] + t["facts"] + t["format"]) / 4)
        assert t["general"] == pytest.approx((t["facts"] + t["format"]) / 2)
    # identical weights: any difference from base is sampling noise
    reading = (stage / "reading.md").read_text()
    assert "Against the paper's main table" in reading and "spot_bco" in reading


def test_stage_is_resumable_and_skips_when_fresh(evaluated):
    from spotlib.stages import evaluate

    profile, summary = evaluated
    stage = profile.out / "05_eval_forgetting"
    before = (stage / "results.jsonl").read_text()
    assert evaluate.run(profile, progress=False)["runs"] == json.loads((stage / "results.json").read_text())["runs"]
    # a lost manifest: the run resumes from results.jsonl without generating again
    (stage / "manifest.json").unlink()
    evaluate.run(profile, progress=False)
    assert (stage / "results.jsonl").read_text() == before


def test_report_collects_stages_and_tolerates_missing_ones(evaluated):
    from spotlib.report.build import build_report

    profile, _ = evaluated
    (profile.out / "01_sample").mkdir(exist_ok=True)
    (profile.out / "01_sample" / "manifest.json").write_text(json.dumps(
        {"complete": True, "wall_time_s": 12.5, "counts": {"errors": 3}}))
    # stage 04 run by earlier per-seed workers: short wall time, the work sits in its timings
    (profile.out / "04_train_spot").mkdir(exist_ok=True)
    (profile.out / "04_train_spot" / "manifest.json").write_text(json.dumps(
        {"complete": True, "wall_time_s": 6.0, "timings": {"reference_s": 10, "train_s_by_run": {"a": 200, "b": 150}}}))
    path = build_report(profile)
    text = path.read_text()
    assert path == profile.out / "report.md"
    assert "| 01_sample | 12 s | – | complete |" in text
    assert "| 02_rectify | – | – | not run: `make reproduce PROFILE=test STAGES=02` |" in text
    assert "| 04_train_spot | 6 s | 6.0 min | complete |" in text
    assert "## 05_eval_forgetting" in text and "05_eval_forgetting/scores_bar.png" in text
    assert "Against the paper's main table" in text


def _distinct_checkpoints(out, workers: int, copy_of=None):
    """The test profile with a base model and four checkpoints of different weights under `out`
    (copied from `copy_of`'s output folder when given)."""
    import torch

    from spotlib.config import load_profile
    from spotlib.world.pretrain import build_model
    from spotlib.world.tokenizer import build_tokenizer

    profile = load_profile("test", overrides={
        "output_dir": str(out), "seeds": [0, 1], "train.methods": ["spot_bco", "sft"], "train.cpu_workers": workers,
        "eval.n_items": {"default": 3}, "eval.max_new_tokens": 8})
    if copy_of is not None:
        for folder in ("base_model", "04_train_spot"):
            shutil.copytree(copy_of.out / folder, out / folder)
        return profile
    tokenizer = build_tokenizer(profile.world)
    torch.manual_seed(0)
    model = build_model(profile.world, tokenizer)
    model.save_pretrained(profile.base_model_path())
    tokenizer.save_pretrained(profile.base_model_path())
    for k, (run, seed) in enumerate((("spot_bco", 0), ("spot_bco", 1), ("sft", 0), ("sft", 1))):
        ckpt = out / "04_train_spot" / run / f"seed{seed}"
        with torch.no_grad():  # each its own weights: a model scored as another would show
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(k)))
        model.save_pretrained(ckpt)
        tokenizer.save_pretrained(ckpt)
        (ckpt / "summary.json").write_text(json.dumps({"run": run, "method": run, "seed": seed,
                                                       "final_probe": {"kl/probe": 0.1}, "complete": True}))
    return profile


def test_workers_share_the_models_and_give_the_table_of_one_process(tmp_path, monkeypatch):
    """Two single-thread workers against one single-thread process: the same records, the same
    table; a worker file left by an interrupted run is merged (torn line dropped, none twice)."""
    import torch

    from spotlib.stages import evaluate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a worker runs
    try:
        alone = _distinct_checkpoints(tmp_path / "alone", workers=1)
        evaluate.run(alone, progress=False)
    finally:
        torch.set_num_threads(threads)
    shared = _distinct_checkpoints(tmp_path / "shared", workers=2, copy_of=alone)
    monkeypatch.setenv("SPOTLIB_PROGRESS", str(tmp_path / "progress.jsonl"))
    evaluate.run(shared, progress=True)

    def records(profile):
        path = profile.out / "05_eval_forgetting" / "results.jsonl"
        return {(r["model"], r["identity"], r["benchmark"], r["id"]): r["responses"]
                for r in map(json.loads, path.read_text().splitlines())}

    stage = shared.out / "05_eval_forgetting"
    got, want = records(shared), records(alone)
    assert len(got) == len(stage.joinpath("results.jsonl").read_text().splitlines()) == 6 * 4 * 3  # none twice
    assert got == want and len({k[1] for k in got}) == 5  # base + four distinct checkpoints
    for name in ("table.md", "table_models.csv"):
        assert (stage / name).read_text() == (alone.out / "05_eval_forgetting" / name).read_text()
    logs = [(stage / f"worker-share{k}.log").read_text() for k in (0, 1)]
    assert all("Traceback" not in log for log in logs) and not list(stage.glob("results.worker-*"))
    bars = [r for r in map(json.loads, (tmp_path / "progress.jsonl").read_text().splitlines())
            if r["desc"] == "models evaluated"]
    assert len({r["pid"] for r in bars}) == 3  # a bar in each worker, and the stage's own
    assert sum(r["total"] for r in bars if r["closed"] and r["pid"] != bars[-1]["pid"]) == 6
    assert bars[-1]["n"] == bars[-1]["total"] == 6 and bars[-1]["closed"]

    # Interrupted: a worker had written sft/seed1's last records (one torn) when the stage stopped.
    lines = (stage / "results.jsonl").read_text().splitlines()
    moved = [i for i, line in enumerate(lines) if json.loads(line)["model"] == "sft/seed1"][-3:]
    (stage / "results.jsonl").write_text("".join(lines[i] + "\n" for i in range(len(lines)) if i not in moved))
    (stage / "results.worker-999.jsonl").write_text(lines[moved[0]] + "\n" + lines[moved[1]] + "\n"
                                                    + lines[moved[2]][:20])
    (stage / "manifest.json").unlink()
    evaluate.run(shared, progress=False)  # one item left to sample: in this process
    assert records(shared) == want and not list(stage.glob("results.worker-*"))
    assert len((stage / "results.jsonl").read_text().splitlines()) == 6 * 4 * 3
