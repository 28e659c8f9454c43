"""Stage 03: verify y⁺, keep proximal pairs, measure proximity, write every method's data.

Reads 02_rectify/{rectified,direct}.jsonl and 01_sample/correct.jsonl. Writes under
outputs/<profile>/03_filter/:
  pairs.jsonl       (x, y⁻, y⁺) with R ≤ γ and a verified y⁺   — SPoT, DPO
  sft_plus.jsonl    the same y⁺ as SFT targets                  — SFT+
  pairs_unfiltered.jsonl, sft_plus_unfiltered.jsonl: as many verified pairs drawn without
                    the proximity filter (γ = 1)                — the γ ablation (`@unfiltered`)
  sft_direct.jsonl  verified direct Oracle solutions            — SFT
  rft.jsonl         the student's own correct samples           — RFT
  proximity_report.json, proximity.png, nll.png, manifest.json
Every file holds the same number of examples (the smallest available, at most
`filter.max_examples`), chosen with `filter.seed`: methods differ only in their data.
"""
from __future__ import annotations

import random
import time
from collections import Counter

from spotlib import proximity
from spotlib.io import Manifest, dir_sha256, file_sha256, read_jsonl, read_stage_output, write_json_atomic, write_jsonl
from spotlib.oracle.verify import verify_many

STAGE = "03_filter"
OUTPUTS = ("pairs", "sft_plus", "sft_direct", "rft", "pairs_unfiltered", "sft_plus_unfiltered")


def _inputs(profile) -> dict:
    return {"rectified": profile.stage_dir("02_rectify") / "rectified.jsonl",
            "direct": profile.stage_dir("02_rectify") / "direct.jsonl",
            "correct": profile.stage_dir("01_sample") / "correct.jsonl"}


def _student_hash(profile) -> str:
    path = profile.base_model_path()
    return dir_sha256(path) if profile.model.name_or_path == "world" else str(path)


def run(profile, progress: bool = True) -> dict:
    out_dir = profile.stage_dir(STAGE)
    paths = _inputs(profile)
    inputs = {name: file_sha256(path) if path.is_file() else "missing" for name, path in paths.items()}
    inputs["student"] = _student_hash(profile)
    manifest = Manifest(out_dir, params={"filter": profile.to_dict()["filter"], "grading": profile.sample.grading,
                                         "max_len": profile.model.max_len, "outputs": list(OUTPUTS)}, inputs=inputs)
    if manifest.is_fresh():
        return manifest.load()["summary"]
    manifest.write(complete=False)
    started = time.perf_counter()
    cfg = profile.filter

    rectified = read_stage_output(paths["rectified"], "02_rectify",
                                  required=("id", "prompt", "rejected", "chosen", "answer", "ok"))
    direct = read_stage_output(paths["direct"], "02_rectify", required=("id", "prompt", "text", "answer", "correct"))
    correct = read_stage_output(paths["correct"], "01_sample", required=("id", "prompt", "response", "answer"))

    from spotlib.models import load_tokenizer

    tokenizer = load_tokenizer(profile.base_model_path())
    verified = verify_many(profile, rectified, [r["chosen"] if r["ok"] else None for r in rectified])
    scored = []
    for r, ok in zip(rectified, verified):
        if not ok:
            continue
        tok_minus, tok_plus = (proximity.to_units(t, "tokens", tokenizer) for t in (r["rejected"], r["chosen"]))
        ratio_tokens = proximity.change_ratio(tok_minus, tok_plus)
        ratio_chars = proximity.change_ratio(r["rejected"], r["chosen"])
        scored.append({**r, "change_ratio": ratio_tokens if cfg.unit == "tokens" else ratio_chars,
                       "change_ratio_tokens": ratio_tokens, "change_ratio_chars": ratio_chars,
                       "edit_distance_tokens": proximity.edit_distance(tok_minus, tok_plus),
                       "len_tokens": len(tok_plus)})
    candidates = [s for s in scored if proximity.keep(s["change_ratio"], cfg.gamma)]
    direct_ok = _first_correct(direct)

    sources = {"pairs": candidates, "sft_direct": direct_ok, "rft": correct}
    available = {k: len(v) for k, v in sources.items()}
    nonempty = [n for n in available.values() if n]
    count = min([cfg.max_examples, *nonempty]) if nonempty else 0
    data = _select(sources, count, cfg.seed)
    data.update(_unfiltered(scored, len(data["pairs"]), cfg.seed))
    for name in OUTPUTS:
        write_jsonl(out_dir / f"{name}.jsonl", data[name])

    report = build_report(profile, rectified, verified, scored, direct, direct_ok, progress)
    report["counts"] = {"per_method": count, "available": available,
                        "limited_by": (["max_examples"] if count == cfg.max_examples else
                                       [k for k, n in available.items() if n == count]),
                        "empty_sources": [k for k, n in available.items() if not n]}
    write_json_atomic(out_dir / "proximity_report.json", report)
    from spotlib.report import plots
    figures = plots.save_filter_figures(report, scored, out_dir, cfg.gamma)

    summary = {"pairs": count, "available": available, "gamma": cfg.gamma, "unit": cfg.unit,
               "median_change_ratio": report["change_ratio"]["median"],
               "oracle_success_rate": report["oracle"]["success_rate"],
               "oracle_wrong_step_rate": report["error_introduction"].get("pairs_with_a_wrong_step"),
               "within_0.5": report["kept_by_gamma"].get("0.50"), "within_0.7": report["kept_by_gamma"].get("0.70"),
               "nll_per_token": {k: v["nll_per_token"] for k, v in report.get("nll", {}).items()
                                 if isinstance(v, dict) and "nll_per_token" in v},
               "figures": [str(f) for f in figures], "wall_time_s": round(time.perf_counter() - started, 2)}
    manifest.counts = {name: len(data[name]) for name in OUTPUTS} | {"verified": len(scored),
                                                                     "within_gamma": len(candidates)}
    manifest.timings = {"total_s": summary["wall_time_s"]}
    manifest.write(complete=True, summary=summary, outputs=[f"{name}.jsonl" for name in OUTPUTS])
    return summary


def _first_correct(direct: list[dict]) -> list[dict]:
    best: dict[str, dict] = {}
    for r in sorted(direct, key=lambda r: (r["id"], r.get("attempt", 0))):
        if r["correct"] and r["id"] not in best:
            best[r["id"]] = r
    return list(best.values())


def _pair(r: dict, source: str, chosen: str, rejected: str | None, **extra) -> dict:
    return {"id": r["id"], "prompt": r["prompt"], "rejected": rejected, "chosen": chosen, "answer": r["answer"],
            "source": source, "family": r.get("family"), "meta": r.get("meta"), **extra}


def _select(sources: dict, count: int, seed: int) -> dict[str, list[dict]]:
    """Seeded equal-size selection; direct solutions prefer the problems the pairs use."""
    rng = random.Random(seed)
    pool = sorted(sources["pairs"], key=lambda r: (r["id"], r["sample_id"]))
    # An empty source (no pair within gamma, no correct sample) stays empty; stage 04 names it.
    chosen_pairs = sorted(rng.sample(pool, min(count, len(pool))), key=lambda r: (r["id"], r["sample_id"]))
    pair_ids = {r["id"] for r in chosen_pairs}
    direct = sorted(sources["sft_direct"], key=lambda r: r["id"])
    rng.shuffle(direct)
    direct.sort(key=lambda r: r["id"] not in pair_ids)      # stable: same-problem ones first
    rft = sorted(sources["rft"], key=lambda r: (r["id"], r.get("sample_id", 0)))
    rft_sel = sorted(rng.sample(rft, min(count, len(rft))), key=lambda r: (r["id"], r.get("sample_id", 0)))
    extra = lambda r: {"sample_id": r["sample_id"], "change_ratio": r["change_ratio"],  # noqa: E731
                       "edit_distance_tokens": r["edit_distance_tokens"], "mode": r.get("mode")}
    return {
        "pairs": [_pair(r, "rectified", r["chosen"], r["rejected"], **extra(r)) for r in chosen_pairs],
        "sft_plus": [_pair(r, "rectified", r["chosen"], None, **extra(r)) for r in chosen_pairs],
        "sft_direct": sorted((_pair(r, "direct", r["text"], None, attempt=r.get("attempt", 0))
                              for r in direct[:count]), key=lambda r: r["id"]),
        "rft": [_pair(r, "rft", r["response"], None, sample_id=r.get("sample_id", 0)) for r in rft_sel],
    }


def _unfiltered(scored: list[dict], count: int, seed: int) -> dict[str, list[dict]]:
    """The γ ablation's data: as many verified pairs as the filtered set holds, drawn with the same seed
    from all of them (γ = 1), so their change ratios are those of every verified pair."""
    rng = random.Random(seed)
    pool = sorted(scored, key=lambda r: (r["id"], r["sample_id"]))
    picked = sorted(rng.sample(pool, min(count, len(pool))), key=lambda r: (r["id"], r["sample_id"]))
    extra = lambda r: {"sample_id": r["sample_id"], "change_ratio": r["change_ratio"],  # noqa: E731
                       "edit_distance_tokens": r["edit_distance_tokens"], "mode": r.get("mode")}
    return {"pairs_unfiltered": [_pair(r, "rectified", r["chosen"], r["rejected"], **extra(r)) for r in picked],
            "sft_plus_unfiltered": [_pair(r, "rectified", r["chosen"], None, **extra(r)) for r in picked]}


def build_report(profile, rectified, verified, scored, direct, direct_ok, progress: bool) -> dict:
    cfg = profile.filter
    n = len(rectified)
    ok = sum(r["ok"] for r in rectified)
    ratios = [s["change_ratio"] for s in scored]
    report = {
        "profile": profile.name, "gamma": cfg.gamma, "unit": cfg.unit,
        "oracle": {"errors": n, "replied": ok, "verified": len(scored),
                   "success_rate": len(scored) / n if n else None,
                   "verified_given_reply": len(scored) / ok if ok else None,
                   "failures": dict(Counter(r["failure"] for r in rectified if not r["ok"])),
                   "modes": dict(Counter(str(r.get("mode")) for r in rectified if r["ok"])),
                   "direct_problems": len({r["id"] for r in direct}), "direct_solved": len(direct_ok)},
        "change_ratio": proximity.summary(ratios),
        "change_ratio_chars": proximity.summary([s["change_ratio_chars"] for s in scored]),
        "kept_by_gamma": proximity.kept_by_gamma(ratios, cfg.report_gammas),
        "edit_distance_tokens": proximity.summary([s["edit_distance_tokens"] for s in scored]),
        "same_wording_rate": (sum(proximity.same_wording(s["rejected"], s["chosen"]) for s in scored) / len(scored)
                              if scored else None),
        "error_introduction": error_introduction(profile, scored),
    }
    if cfg.nll_max_items > 0 and scored:
        report["nll"] = student_nll_report(profile, scored, direct_ok, progress)
    return report


def error_introduction(profile, scored: list[dict]) -> dict:
    """How often the Oracle breaks what was right or leaves what was wrong.

    Tiny world: both texts are parsed into steps and checked against the problem's
    true chain, independently of what the Oracle says it did. Elsewhere only the
    final answer is checkable (a verified y⁺ is required, so what remains is the
    share of replies that failed verification, reported under `oracle`).
    """
    arith = [s for s in scored if s.get("family") in ("arith", "arith_ood") and s.get("meta")]
    if profile.sample.grading != "world" or not arith:
        return {"checkable": "final answer only", "n": len(scored)}
    from spotlib.world.edit import parse_solution, wrong_steps

    right_total = right_changed = wrong_total = wrong_left = pairs_breaking = pairs_wrong_after = 0
    for s in arith:
        before, after = parse_solution(s["rejected"]), parse_solution(s["chosen"])
        wrong_before = set(wrong_steps(s, before))
        wrong_after = set(wrong_steps(s, after))
        right = [i for i in range(len(before)) if i not in wrong_before]
        values = lambda st: (st.a, st.op, st.b, st.c)  # noqa: E731
        broken = [i for i in right if i >= len(after) or values(after[i]) != values(before[i])]
        right_total += len(right)
        right_changed += len(broken)
        pairs_breaking += bool(broken)
        pairs_wrong_after += bool(wrong_after)
        wrong_total += len(wrong_before)
        wrong_left += len(wrong_before & wrong_after)
    return {"checkable": "every step", "n": len(arith),
            "right_steps": right_total, "right_steps_changed": right_changed,
            "right_step_change_rate": right_changed / right_total if right_total else None,
            "pairs_changing_a_right_step": pairs_breaking / len(arith),
            # the Oracle's error introduction: a verified y⁺ (right answer) that still holds a wrong step
            "pairs_with_a_wrong_step": pairs_wrong_after / len(arith),
            "wrong_steps": wrong_total, "wrong_steps_left": wrong_left,
            "wrong_step_left_rate": wrong_left / wrong_total if wrong_total else None}


def student_nll_report(profile, scored: list[dict], direct_ok: list[dict], progress: bool) -> dict:
    """The student's mean per-token NLL (and perplexity) on y⁻, y⁺ and direct solutions of the same problems."""
    from spotlib.models import load_model

    cfg = profile.filter
    rng = random.Random(cfg.seed)
    items = sorted(scored, key=lambda s: (s["id"], s["sample_id"]))
    items = rng.sample(items, min(cfg.nll_max_items, len(items)))
    direct_by_id = {r["id"]: r for r in direct_ok}
    model, tokenizer = load_model(profile.base_model_path(), dtype=profile.model.dtype, device=profile.device)

    def nll(prompts, texts):
        return proximity.mean_token_nll(model, tokenizer, prompts, texts, profile.model.max_len,
                                        cfg.nll_batch_tokens, progress, max_rows=cfg.nll_batch_size)

    prompts = [s["prompt"] for s in items]
    minus, plus = nll(prompts, [s["rejected"] for s in items]), nll(prompts, [s["chosen"] for s in items])
    same = [s for s in items if s["id"] in direct_by_id]
    direct = nll([s["prompt"] for s in same], [direct_by_id[s["id"]]["text"] for s in same])
    within = [p for p, s in zip(plus, items) if s["change_ratio"] <= cfg.gamma]
    beyond = [p for p, s in zip(plus, items) if s["change_ratio"] > cfg.gamma]
    per_item = [(s["change_ratio"], p[0] / max(p[1], 1), m[0] / max(m[1], 1)) for s, p, m in zip(items, plus, minus)]
    return {"y_minus": proximity.pooled_nll(minus), "y_plus": proximity.pooled_nll(plus),
            "direct": proximity.pooled_nll(direct), "y_plus_within_gamma": proximity.pooled_nll(within),
            "y_plus_beyond_gamma": proximity.pooled_nll(beyond),
            "per_item": [{"change_ratio": r, "nll_y_plus": a, "nll_y_minus": b} for r, a, b in per_item]}


def load(profile, which: str = "pairs") -> list[dict]:
    return read_jsonl(profile.stage_dir(STAGE) / f"{which}.jsonl")
