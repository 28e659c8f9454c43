"""The study's figures, stage by stage: which drawing function of `spotlib.report.plots` each is,
its caption, and how to draw it from the stage's stored files (so the report draws exactly what
the notebook showed).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spotlib.report.plots import (POINTS_FILE, accuracy_by_group, base_general, delta_curves, edit_probes,
                                  first_error_positions, gradient_weights, heldout_kl, kl_scatter, load_evaluation,
                                  load_training_metrics, oracle_outcomes, proximity, retention_noise, reward_curves,
                                  rewards_against_kl, rl_distance, rl_heldout, rl_reward, score_bars, student_nll,
                                  tether_lesson, tether_weights, training_data)

@dataclass(frozen=True)
class StageFigure:
    name: str          # the drawing function's name in spotlib.report.plots
    caption: str
    draw: Callable     # stage folder -> Figure | None (None: the data is not there)
    file: str | None = None  # the PNG the stage itself saves with this function, if any


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _manifest_summary(stage_dir: Path) -> dict | None:
    manifest = _json(stage_dir / "manifest.json") or {}
    return manifest.get("summary")


def _01_by_group(d: Path):
    summary = _manifest_summary(d)
    return accuracy_by_group(summary["by_group"]) if summary and summary.get("by_group") else None


def _01_positions(d: Path):
    from spotlib.io import read_jsonl
    from spotlib.world import first_error_positions as positions_of

    path = d / "errors.jsonl"
    positions = positions_of(read_jsonl(path)) if path.is_file() else []
    return first_error_positions(positions) if positions else None


def _02_outcomes(d: Path):
    summary = _manifest_summary(d)
    return oracle_outcomes(summary) if summary else None


def _03_report(d: Path):
    return _json(d / "proximity_report.json")


def _03_proximity(d: Path):
    from spotlib.io import read_jsonl

    report = _03_report(d)
    summary = _manifest_summary(d) or {}
    if not report or not (d / POINTS_FILE).is_file():
        return None
    return proximity(read_jsonl(d / POINTS_FILE), report["kept_by_gamma"], summary.get("gamma", float("nan")),
                     report.get("unit", "tokens"))


def _03_nll(d: Path):
    report = _03_report(d)
    return student_nll(report["nll"]) if report and report.get("nll") else None


def _03_data(d: Path):
    report = _03_report(d)
    if not report or "counts" not in report:
        return None
    return training_data(report["counts"]["available"], report["counts"]["per_method"])


def _04(fn, which: int):
    def draw(d: Path):
        frames = load_training_metrics(d)
        df = frames[which]
        return fn(df) if len(df) else None
    return draw


def _04_lesson(fn):
    def draw(d: Path):
        from spotlib.analysis import tether

        lesson = tether.lesson_from_stage(d)
        if lesson is None:
            return None
        curve = tether.tether_curve(lesson["dir"] / "metrics.jsonl", beta=lesson["beta"], objective="bco")
        return fn(curve, lr=lesson["lr"]) if fn is tether_lesson else fn(curve)
    return draw


def _05(fn):
    def draw(d: Path):
        results = load_evaluation(d)
        if not results:
            return None
        if fn is kl_scatter:
            noise = retention_noise(results["runs"], results.get("tie_sigmas", 2.0))
            return kl_scatter(results["models"], base_general(results["runs"]), noise)
        return score_bars(results["runs"])
    return draw


def _06(fn):
    def draw(d: Path):
        import pandas as pd

        path = d / "curves.csv"
        return fn(pd.read_csv(path)) if path.is_file() else None
    return draw


FIGURES: dict[str, list[StageFigure]] = {
    "01_sample": [
        StageFigure("accuracy_by_group", "Student accuracy by difficulty group.", _01_by_group),
        StageFigure("first_error_positions", "Where the first wrong step falls in each wrong answer.",
                    _01_positions),
    ],
    "02_rectify": [StageFigure("oracle_outcomes", "What the Oracle returned for each student error.",
                               _02_outcomes)],
    "03_filter": [
        StageFigure("proximity", "Change ratio, pairs kept by γ, token edit distance.", _03_proximity, "proximity.png"),
        StageFigure("student_nll", "The student's NLL per token on each kind of target.", _03_nll, "nll.png"),
        StageFigure("training_data", "Examples available per method and the equal count used.", _03_data),
    ],
    "04_train_spot": [
        StageFigure("gradient_weights", "Gradient weights of the reward-based objectives (β = 1, δ = 1).",
                    lambda d: gradient_weights()),
        StageFigure("reward_curves", "Implicit rewards along training (mean over seeds).",
                    _04(reward_curves, 0)),
        StageFigure("delta_curves", "δ along training, SPoT-BCO runs.", _04(delta_curves, 0)),
        StageFigure("tether_weights", "Mean tether weights along training.", _04(tether_weights, 0)),
        StageFigure("heldout_kl", "Held-out KL to the start model along training.", _04(heldout_kl, 1)),
        StageFigure("edit_probes", "Where in y⁻ each objective pushes; margins on fixed pairs.",
                    _04(edit_probes, 1)),
        StageFigure("tether_lesson", "The tether lesson's SPoT-BCO run: rewards and δ (left), the weights λ⁺, "
                    "λ⁻ each step received (right).", _04_lesson(tether_lesson)),
        StageFigure("rewards_against_kl", "The lesson's run: rewards on the fixed pairs against the held-out KL, "
                    "at each probe step.", _04_lesson(rewards_against_kl)),
    ],
    "05_eval_forgetting": [
        StageFigure("score_bars", "Scores by method; whiskers: std across seeds.", _05(score_bars), "scores_bar.png"),
        StageFigure("kl_scatter", "Held-out KL at the end of training against the general-skill loss.",
                    _05(kl_scatter), "kl_vs_retention.png"),
    ],
    "06_rl_init": [
        StageFigure("rl_reward", "GRPO training reward.", _06(rl_reward)),
        StageFigure("rl_heldout", "GRPO held-out accuracy.", _06(rl_heldout)),
        StageFigure("rl_distance", "KL to the start model and policy entropy along GRPO.", _06(rl_distance)),
    ],
}


def figure_names() -> list[str]:
    return [f.name for figs in FIGURES.values() for f in figs]
