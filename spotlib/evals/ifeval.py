"""IFEval (google/IFEval): prompt- and instruction-level accuracy, strict and loose.

The instruction checkers are Google's, as maintained in lm-evaluation-harness
(`lm_eval.tasks.ifeval`), not a rewrite. Two of them split sentences with NLTK's Punkt
model (`punkt_tab`), which NLTK downloads on first use. Without network access (or
without the data installed: `python -m nltk.downloader punkt_tab`) an untrained Punkt
tokenizer is used instead, which splits at every period (so "e.g." ends a sentence);
the results record which splitter was used.
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from spotlib.evals.base import Benchmark, column, load_rows

DATASET, SPLIT = "google/IFEval", "train"
_STATE: dict = {}


def sentence_splitter() -> str:
    """`punkt_tab` (the reference) or `punkt_untrained` (offline fallback)."""
    _checkers()
    return _STATE["splitter"]


def _checkers():
    """lm-eval's IFEval module, imported once without letting it reach the network."""
    if "utils" in _STATE:
        return _STATE["utils"]
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        splitter = "punkt_tab"
    except LookupError:
        # An empty parameter set is a valid, untrained Punkt model (no abbreviation list).
        root = Path(tempfile.gettempdir()) / "spotlib_nltk_data"
        lang = root / "tokenizers" / "punkt_tab" / "english"
        lang.mkdir(parents=True, exist_ok=True)
        for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
            (lang / name).touch()
        if str(root) not in nltk.data.path:
            nltk.data.path.append(str(root))
        splitter = "punkt_untrained"
    download = nltk.download
    nltk.download = lambda *a, **k: False  # the import-time download would try the network
    try:
        with contextlib.redirect_stdout(None):
            from lm_eval.tasks.ifeval import utils
    finally:
        nltk.download = download
    _STATE.update(utils=utils, splitter=splitter)
    return utils


def ifeval_records(rows: list[dict], n: int, source: str) -> list[dict]:
    records = []
    for i, row in enumerate(rows[:n]):
        prompt = str(column(row, "prompt", "ifeval", DATASET, source, i, "the prompt"))
        ids = list(column(row, "instruction_id_list", "ifeval", DATASET, source, i, "the instructions"))
        kwargs = row.get("kwargs")
        if not isinstance(kwargs, list) or len(kwargs) != len(ids):
            from spotlib.io import DataError
            raise DataError(f"{source}: row {i}: 'kwargs' must be a list with one mapping per instruction")
        key = row.get("key", i)
        records.append({"id": f"ifeval-{key}", "family": "ifeval", "prompt": prompt, "answer": "",
                        "meta": {"key": key, "instruction_id_list": ids,
                                 "kwargs": [dict(k or {}) for k in kwargs]}})
    return records


def load_ifeval(eval_cfg, n: int, profile=None) -> list[dict]:
    local = (eval_cfg.data_files or {}).get("ifeval")
    rows = load_rows(DATASET, None, SPLIT, local)
    return ifeval_records(rows, n, local or DATASET)


def score_ifeval(item: dict, response: str) -> dict:
    """Prompt-level (all instructions followed) and per-instruction counts, strict and loose."""
    utils = _checkers()
    meta = item["meta"]
    doc = {"key": meta["key"], "instruction_id_list": meta["instruction_id_list"],
           "prompt": item["prompt"], "kwargs": meta["kwargs"]}
    out = utils.process_results(doc, [response or ""])
    n = len(out["inst_level_strict_acc"])
    return {"score": float(out["prompt_level_strict_acc"]),
            "prompt_level_strict": float(out["prompt_level_strict_acc"]),
            "prompt_level_loose": float(out["prompt_level_loose_acc"]),
            "inst_strict_followed": int(sum(out["inst_level_strict_acc"])),
            "inst_loose_followed": int(sum(out["inst_level_loose_acc"])),
            "inst_count": n}


def aggregate_ifeval(metrics: list[dict]) -> dict:
    """Prompt-level: mean over prompts; instruction-level: followed / all instructions."""
    if not metrics:
        return {}
    total = sum(m["inst_count"] for m in metrics) or 1
    return {"score": sum(m["prompt_level_strict"] for m in metrics) / len(metrics),
            "prompt_level_strict": sum(m["prompt_level_strict"] for m in metrics) / len(metrics),
            "prompt_level_loose": sum(m["prompt_level_loose"] for m in metrics) / len(metrics),
            "inst_level_strict": sum(m["inst_strict_followed"] for m in metrics) / total,
            "inst_level_loose": sum(m["inst_loose_followed"] for m in metrics) / total}


def ifeval_benchmark() -> Benchmark:
    return Benchmark(name="ifeval", group="general", load=load_ifeval, score=score_ifeval, k=5,
                     dataset=DATASET, aggregate=aggregate_ifeval)
