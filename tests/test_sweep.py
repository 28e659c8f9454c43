"""The learning-rate sweep on a micro model: outputs, the selection rule, resume, the val split."""
import json
import random

import pytest
import yaml

from pairs_helpers import change_one_result, save_untrained_student
from spotlib import world
from spotlib.config import load_profile
from spotlib.io import read_jsonl, write_jsonl
from spotlib.stages import sweep

METHODS = ["sft_plus", "spot_bco"]
GRID = [1e-4, 3e-3]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """An untrained micro student as base and stage-03 files written directly (as in test_train)."""
    out = tmp_path_factory.mktemp("sweep")
    test = load_profile("test")
    base = out / "student"
    save_untrained_student(base, test.world)
    rng = random.Random(0)
    pairs, direct = [], []
    for it in world.make_items("arith", 8, "train", world_cfg=test.world):
        good = world.student_solution(it, rng)
        pairs.append({"id": it["id"], "prompt": it["prompt"], "rejected": change_one_result(good, rng), "chosen": good,
                      "answer": it["answer"], "source": "rectified"})
        direct.append({"id": it["id"], "prompt": it["prompt"], "rejected": None,
                       "chosen": world.oracle_solution(it, rng), "answer": it["answer"], "source": "direct"})
    filter_dir = out / "03_filter"
    write_jsonl(filter_dir / "pairs.jsonl", pairs)
    write_jsonl(filter_dir / "sft_plus.jsonl", pairs)
    write_jsonl(filter_dir / "sft_direct.jsonl", direct)
    return load_profile("test", overrides={
        "output_dir": str(out), "model.name_or_path": str(base), "train.methods": METHODS,
        "train.lr_grid": GRID, "train.max_steps": 2, "train.kl_probe_every": 0, "train.edit_diag_pairs": 0,
        "eval.n_items": {"default": 3}, "eval.max_new_tokens": 8})


@pytest.fixture(scope="module")
def swept(profile):
    return sweep.run(profile, progress=False)


def test_sweep_writes_points_choices_table_and_frontier(profile, swept):
    out = profile.out / "sweep"
    for name in ("points.jsonl", "chosen_lr.json", "chosen_lr.yaml", "frontier.png", "sweep.md", "manifest.json",
                 "base/seed0/results.jsonl", "frontier.jsonl", "matched_lr.json"):
        assert (out / name).is_file(), name
    assert (out / "frontier.png").stat().st_size > 1000
    points = read_jsonl(out / "points.jsonl")
    assert sorted((p["run"], p["lr"]) for p in points) == sorted((m, lr) for m in METHODS for lr in GRID)
    base = swept["base"]
    for p in points:
        assert p["overall"] == pytest.approx((p["arith"] + p["arith_ood"] + p["facts"] + p["format"]) / 4)
        assert p["retention_loss"] == pytest.approx(base["general"] - p["general"])
        assert p["in_domain_gain"] == pytest.approx(p["arith"] - base["arith"])
        assert p["steps"] == 2
        point_dir = sweep.point_dir(out, p["run"], p["lr"], p["seed"])
        records = read_jsonl(point_dir / "results.jsonl")
        assert len(records) == 4 * 3 and all("-val-" in r["id"] for r in records)  # never the test items
        assert (point_dir / "summary.json").is_file() and not (point_dir / "model").exists()
        assert json.loads((point_dir / "point.json").read_text())["key"] == p["key"]
    assert not list(out.rglob("*.safetensors"))  # only metrics are kept
    chosen = json.loads((out / "chosen_lr.json").read_text())
    assert set(chosen) == set(METHODS) and chosen == swept["chosen"]
    pasted = yaml.safe_load((out / "chosen_lr.yaml").read_text())
    assert pasted["train"]["lr"] == {"default": 1e-4, **chosen}
    reloaded = load_profile("test", overrides={"train.lr": pasted["train"]["lr"]})
    assert reloaded.train.lr["spot_bco"] == chosen["spot_bco"]
    table = (out / "sweep.md").read_text()
    assert sweep.RULE in table and table.count("**spot_bco**") == 1 and table.count("**sft_plus**") == 1


def test_chosen_lr_is_the_argmax_of_the_rule(profile, swept):
    points = read_jsonl(profile.out / "sweep" / "points.jsonl")
    for method, lr in swept["chosen"].items():
        mine = [p for p in points if p["run"] == method]
        best = max(p["overall"] for p in mine)
        winner = next(p for p in mine if p["lr"] == lr)
        assert winner["overall"] == best
        tied = [p for p in mine if p["overall"] == best]
        assert winner["retention_loss"] == min(p["retention_loss"] for p in tied)
    rows = [{"run": "a", "lr": 1e-4, "overall": 40.0, "retention_loss": 0.0},
            {"run": "a", "lr": 3e-4, "overall": 45.0, "retention_loss": 5.0},
            {"run": "a", "lr": 1e-3, "overall": 30.0, "retention_loss": 20.0},
            {"run": "b", "lr": 1e-4, "overall": 50.0, "retention_loss": 2.0},
            {"run": "b", "lr": 3e-4, "overall": 50.0, "retention_loss": 1.0},
            {"run": "b", "lr": 1e-3, "overall": 50.0, "retention_loss": 1.0},
            {"run": "c", "lr": 1e-4, "overall": float("nan"), "retention_loss": float("nan")},
            {"run": "c", "lr": 3e-4, "overall": 10.0, "retention_loss": 0.0}]
    assert sweep.choose(rows) == {"a": 3e-4, "b": 3e-4, "c": 3e-4}


def test_a_fresh_sweep_derives_its_summary_again_and_keeps_its_timings(profile, swept, monkeypatch):
    out = profile.out / "sweep"
    manifest = json.loads((out / "manifest.json").read_text())
    stale = dict(manifest, main_table=[], wall_time_s=123.0)  # a summary from older code, a real run's time
    (out / "manifest.json").write_text(json.dumps(stale))
    (out / "frontier.png").unlink()
    monkeypatch.setattr(sweep, "train_run", lambda *a, **k: pytest.fail("a fresh sweep trained a point"))
    again = sweep.run(profile, progress=False)
    same = lambda a, b: json.dumps(a) == json.dumps(b)  # noqa: E731  (NaN SEs with one seed)
    assert same(again["main_table"], manifest["main_table"]) and again["main_table"]
    assert {t["at"] for t in again["main_table"]} == {"chosen", "matched", "best"}
    written = json.loads((out / "manifest.json").read_text())
    assert same(written["main_table"], manifest["main_table"]) and written["wall_time_s"] == 123.0
    assert (out / "frontier.png").is_file()


def test_resume_skips_finished_points(profile, swept, monkeypatch):
    out = profile.out / "sweep"
    assert sweep.run(profile, progress=False)["chosen"] == swept["chosen"]  # fresh: nothing runs
    redo = sweep.point_dir(out, "spot_bco", GRID[1], 0)
    (redo / "point.json").unlink()
    (redo / "results.jsonl").unlink()
    (out / "manifest.json").unlink()
    kept = {p: p.read_text() for p in out.rglob("results.jsonl")}
    calls = []
    real = sweep.train_run

    def counting(train_cfg, model_cfg, run_spec, seed, inputs, run_dir, **kw):
        calls.append((run_spec.name, train_cfg.lr[run_spec.method]))
        return real(train_cfg, model_cfg, run_spec, seed, inputs, run_dir, **kw)

    monkeypatch.setattr(sweep, "train_run", counting)
    again = sweep.run(profile, progress=False)
    assert calls == [("spot_bco", GRID[1])]
    assert {p: p.read_text() for p in kept} == kept  # finished points and the base are not re-evaluated
    assert (redo / "point.json").is_file() and not (redo / "model").exists()
    assert len(again["points"]) == len(METHODS) * len(GRID)


def test_empty_grid_and_foreign_benchmarks_fail_clearly(profile):
    from spotlib import evals

    with pytest.raises(ValueError, match="lr_grid is empty"):
        sweep.run(profile.replace(train=profile.train.__class__(**{**profile.train.__dict__, "lr_grid": []})))
    with pytest.raises(ValueError, match="no 'val' split"):
        evals.load_items("aime24", profile.eval, profile.world, split="val")


@pytest.mark.slow
def test_workers_give_the_same_points_as_one_process(profile, swept, tmp_path):
    import shutil
    shutil.copytree(profile.out / "03_filter", tmp_path / "03_filter")
    parallel = profile.replace(output_dir=str(tmp_path),
                               train=profile.train.__class__(**{**profile.train.__dict__, "cpu_workers": 2}))
    result = sweep.run(parallel, progress=False)
    logs = sorted(p.name for p in (tmp_path / "sweep").glob("worker-sweep*.log"))
    assert logs == ["worker-sweep0.log", "worker-sweep1.log"]  # one worker per method here
    by_point = lambda rows: {(r["run"], r["lr"]): r["overall"] for r in rows}  # noqa: E731
    assert by_point(result["points"]) == by_point(swept["points"])
    assert result["chosen"] == swept["chosen"]


def test_several_seeds_replicate_the_run_and_give_mean_and_se(profile, swept, tmp_path):
    """`train.sweep_seeds`: every LR trained and evaluated under each seed; seed 0 is the same
    replicate as the one-seed sweep's; the frontier holds mean ± SE over the seeds."""
    import math
    import shutil

    from spotlib.analysis import frontier

    shutil.copytree(profile.out / "03_filter", tmp_path / "03_filter")
    cfg = profile.train.__class__(**{**profile.train.__dict__, "methods": ["sft_plus"], "sweep_seeds": [0, 1]})
    result = sweep.run(profile.replace(output_dir=str(tmp_path), train=cfg), progress=False)
    out = tmp_path / "sweep"
    assert sorted((p["lr"], p["seed"]) for p in result["points"]) == sorted((lr, s) for lr in GRID for s in (0, 1))
    assert (out / "base" / "seed1" / "results.jsonl").is_file()
    one_seed = {(p["run"], p["lr"]): p["overall"] for p in swept["points"]}
    for p in result["points"]:
        if p["seed"] == 0:
            assert p["overall"] == one_seed[(p["run"], p["lr"])]
        base = result["bases"][str(p["seed"])]
        assert p["retention_loss"] == pytest.approx(base["general"] - p["general"])
    rows = read_jsonl(out / "frontier.jsonl")
    assert [r["n_seeds"] for r in rows] == [2, 2]
    for row in rows:
        mine = [p["in_domain_gain"] for p in result["points"] if p["lr"] == row["lr"]]
        assert row["in_domain_gain"] == pytest.approx(sum(mine) / 2)
        assert row["in_domain_gain_se"] == pytest.approx(abs(mine[0] - mine[1]) / 2)
    assert not math.isnan(rows[0]["overall_se"])
    assert result["chosen"] == {"sft_plus": sweep.choose(rows)["sft_plus"]}
    matched = frontier.matched_lrs(rows)["sft_plus"]
    assert json.loads((out / "matched_lr.json").read_text()) == {"sft_plus": matched}
    pasted = yaml.safe_load((out / "matched_lr.yaml").read_text())["train"]["lr"]
    assert pasted["sft_plus"] == (matched if matched is not None else result["chosen"]["sft_plus"])
    assert "2 seed(s)" in (out / "sweep.md").read_text()


def test_variants_are_swept_and_drawn_but_never_chosen_into_train_lr(profile, swept, tmp_path):
    import shutil

    shutil.copytree(profile.out / "03_filter", tmp_path / "03_filter")
    cfg = profile.train.__class__(**{**profile.train.__dict__, "methods": ["spot_bco"], "lr_grid": [GRID[0]],
                                     "sweep_variants": ["spot_bco+edit_only"]})
    result = sweep.run(profile.replace(output_dir=str(tmp_path), train=cfg), progress=False)
    out = tmp_path / "sweep"
    assert [p["run"] for p in result["points"]] == ["spot_bco", "spot_bco+edit_only"]
    assert json.loads((out / "chosen_lr.json").read_text()) == {"spot_bco": GRID[0]}
    assert set(json.loads((out / "matched_lr.json").read_text())) == {"spot_bco", "spot_bco+edit_only"}
    plain, variant = (read_jsonl(sweep.point_dir(out, run, GRID[0], 0) / "metrics.jsonl")
                      for run in ("spot_bco", "spot_bco+edit_only"))
    last = lambda rows: [r for r in rows if r["kind"] == "train"][-1]  # noqa: E731
    assert last(plain)["logps/rejected"] != pytest.approx(last(variant)["logps/rejected"])  # y⁻ scored on its edit
    assert "spot_bco+edit_only" in (out / "sweep.md").read_text()
    with pytest.raises(ValueError, match="not in train.methods or train.sweep_variants"):
        sweep.run(profile.replace(output_dir=str(tmp_path), train=cfg), progress=False, methods=["dpo"])


def test_points_only_returns_points_and_leaves_the_summary_alone(profile, swept):
    out = profile.out / "sweep"
    summary = {name: (out / name).read_bytes() for name in ("points.jsonl", "frontier.jsonl", "manifest.json",
                                                              "chosen_lr.json", "sweep.md")}
    first = METHODS[0]
    result = sweep.run(profile, progress=False, methods=[first], points_only=True)
    assert {p["run"] for p in result["points"]} == {first} and len(result["points"]) == len(GRID)
    assert {name: (out / name).read_bytes() for name in summary} == summary  # the full sweep's summary is kept
    full = {(p["run"], p["lr"]): p["overall"] for p in swept["points"] if p["run"] == first}
    assert {(p["run"], p["lr"]): p["overall"] for p in result["points"]} == full  # finished points reused


def test_bracketing_extends_each_runs_grid_beyond_an_edge_until_interior_or_tied(profile, tmp_path, monkeypatch):
    """Synthetic scores per (run, lr): spot_bco loses in-domain less the lower its LR and ties with the base
    at 1e-5; sft_plus gains most at the top of the grid and peaks half a decade above it."""
    import math
    import shutil

    shutil.copytree(profile.out / "03_filter", tmp_path / "03_filter")
    base = {"in_domain": 50.0, "ood": 20.0, "general": 90.0, "overall": 60.0, "n_items": 3}

    def gain(run, lr):
        if run == "spot_bco":
            return -3e4 * lr                                   # 1e-4: −3; 3.2e-5: −0.96; 1e-5: −0.3 (a tie)
        return 10.0 - 4.0 * (math.log10(lr / 3e-3)) ** 2      # sft_plus: peaks at 3e-3 ... 1e-2 is lower

    trained = []

    def fake_point(profile, run_spec, lr, seed, point_dir, items, steps, shared, progress, key):
        trained.append((run_spec.name, lr))
        g = gain(run_spec.name, lr)
        return {"run": run_spec.name, "method": run_spec.method, "lr": lr, "seed": seed, "in_domain": 50.0 + g,
                "ood": 20.0, "general": 90.0, "overall": 60.0 + g / 4}

    jobs = []
    monkeypatch.setattr(sweep, "_point", fake_point)
    monkeypatch.setattr(sweep, "_scores", lambda *a, **k: dict(base))
    monkeypatch.setattr(sweep.train_methods, "shared_inputs", lambda *a, **k: {})
    monkeypatch.setattr(sweep, "run_in_workers", lambda j, *a, **k: jobs.extend(j))
    cfg = profile.train.__class__(**{**profile.train.__dict__, "sweep_bracket": 3, "cpu_workers": 2})
    result = sweep.run(profile.replace(output_dir=str(tmp_path), train=cfg), progress=False)
    lrs = lambda run: sorted({lr for r, lr in trained if r == run})  # noqa: E731
    assert lrs("spot_bco") == [1e-5, 3.2e-5, 1e-4, 3e-3]     # down two half-decades: tied at 1e-5, stop
    assert lrs("sft_plus") == [1e-4, 3e-3, 9.5e-3]           # up one: 3e-3 now interior
    assert result["counts"]["lrs_beyond_grid"] == {"spot_bco": [1e-5, 3.2e-5], "sft_plus": [9.5e-3]}
    assert result["chosen"]["sft_plus"] == 3e-3
    # a worker of a bracketing round is told its runs' extra LRs
    assert any("--extra-lrs" in args and "spot_bco=3.2e-05" in args for _, args in jobs)
    assert sweep.parse_extra_lrs(["a+edit_only=1e-06,3.2e-06"]) == {"a+edit_only": [1e-6, 3.2e-6]}
    text = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "spot_bco chosen/matched/best at 1e-05 (low edge, ties with the base there)" in text
    # off (the default): the grid as given
    trained.clear()
    shutil.copytree(profile.out / "03_filter", tmp_path / "off" / "03_filter")
    sweep.run(profile.replace(output_dir=str(tmp_path / "off"), train=profile.train), progress=False)
    assert sorted({lr for _, lr in trained}) == GRID


def test_a_workers_command_line_trains_its_extra_lrs(profile, swept):
    """What a bracketing round hands a worker: `--extra-lrs run=lr` trains that point beside the grid's."""
    from spotlib.launch.workers import worker_profile

    spec = worker_profile(profile, profile.out / "sweep")
    sweep.main(["--profile", str(spec), "--points-only", "--methods", "sft_plus", "--extra-lrs", "sft_plus=5e-4"])
    out = profile.out / "sweep"
    assert (sweep.point_dir(out, "sft_plus", 5e-4, 0) / "point.json").is_file()
    assert not (sweep.point_dir(out, "spot_bco", 5e-4, 0) / "point.json").exists()
    with pytest.raises(ValueError, match="expected run=lr"):
        sweep.parse_extra_lrs(["sft_plus"])
