"""IFEval (google/IFEval): prompt- and instruction-level accuracy, strict and loose.

The instruction checkers are Google's, as maintained in lm-evaluation-harness
(`lm_eval.tasks.ifeval`), not a rewrite. Sentence-count checks split sentences with
NLTK's trained Punkt model (`punkt_tab`), so before the checkers load:

- installed: used;
- missing and the network allowed (no `HF_HUB_OFFLINE`): downloaded (`nltk.download`);
- missing and no way to get it: an untrained Punkt model (no abbreviation list, so "e.g."
  ends a sentence) with a warning, and every IFEval score records the splitter it used
  (`sentence_splitter`; `trained_sentence_splitter` in the summary, 1.0 = the reference).
  Failing stage 05 after all training for the few instructions that count sentences would
  cost more than a recorded, slightly different splitter: install the data beforehand with
  `python -m nltk.downloader punkt_tab` on an offline machine.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import warnings
from pathlib import Path

from spotlib.evals.base import Benchmark, column, load_rows

DATASET, SPLIT = "google/IFEval", "train"
PUNKT = "tokenizers/punkt_tab/english/"
_STATE: dict = {}


def sentence_splitter() -> str:
    """`punkt_tab` (the reference) or `punkt_untrained` (the offline fallback)."""
    _checkers()
    return _STATE["splitter"]


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def ensure_punkt(find=None, download=None, is_offline=None, timeout_s: float = 30.0) -> tuple[str, str | None]:
    """(splitter, warning): make NLTK's trained `punkt_tab` available if at all possible.

    `find`, `download` and `is_offline` default to NLTK's and the environment's (tests pass fakes).
    """
    import nltk

    find = find or nltk.data.find
    download = download or nltk.download
    is_offline = offline() if is_offline is None else is_offline
    try:
        find(PUNKT)
        return "punkt_tab", None
    except LookupError:
        pass
    if is_offline:
        why = "HF_HUB_OFFLINE is set"
    else:
        why = _download(download, timeout_s)
        if why is None:
            try:
                find(PUNKT)
                return "punkt_tab", None
            except LookupError:
                why = "downloaded, yet not on nltk.data.path"
    return "punkt_untrained", (f"IFEval: NLTK's punkt_tab is not installed and could not be fetched ({why}); "
                               f"sentence counts use an untrained Punkt splitter. Install it with "
                               f"`python -m nltk.downloader punkt_tab`.")


def _download(download, timeout_s: float) -> str | None:
    """None when `nltk.download` says it fetched punkt_tab, else why not."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)   # an unreachable server fails in seconds, not minutes
    try:
        with contextlib.redirect_stdout(None):
            return None if download("punkt_tab", quiet=True) else "download failed (no network?)"
    except Exception as exc:  # noqa: BLE001 - any failure means: not available
        return f"download failed ({type(exc).__name__})"
    finally:
        socket.setdefaulttimeout(previous)


def _install_untrained_punkt() -> None:
    """An empty parameter set is a valid, untrained Punkt model (no abbreviation list)."""
    import nltk

    root = Path(tempfile.gettempdir()) / "spotlib_nltk_data"
    lang = root / PUNKT
    lang.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (lang / name).touch()
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))


def _checkers():
    """lm-eval's IFEval module, imported once the sentence splitter is settled."""
    if "utils" in _STATE:
        return _STATE["utils"]
    splitter, warning = ensure_punkt()
    if warning:
        warnings.warn(warning, stacklevel=2)
        _install_untrained_punkt()   # so lm-eval's import-time check finds data and downloads nothing
    with contextlib.redirect_stdout(None):
        from lm_eval.tasks.ifeval import utils
    _STATE.update(utils=utils, splitter=splitter, warning=warning)
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


def load_ifeval(eval_cfg, n: int, world_cfg=None) -> list[dict]:
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
            "inst_count": n, "sentence_splitter": _STATE["splitter"]}


def aggregate_ifeval(metrics: list[dict]) -> dict:
    """Prompt-level: mean over prompts; instruction-level: followed / all instructions."""
    if not metrics:
        return {}
    total = sum(m["inst_count"] for m in metrics) or 1
    return {"score": sum(m["prompt_level_strict"] for m in metrics) / len(metrics),
            "prompt_level_strict": sum(m["prompt_level_strict"] for m in metrics) / len(metrics),
            "prompt_level_loose": sum(m["prompt_level_loose"] for m in metrics) / len(metrics),
            "inst_level_strict": sum(m["inst_strict_followed"] for m in metrics) / total,
            "inst_level_loose": sum(m["inst_loose_followed"] for m in metrics) / total,
            "trained_sentence_splitter": sum(m.get("sentence_splitter") == "punkt_tab" for m in metrics)
            / len(metrics)}


def ifeval_benchmark() -> Benchmark:
    return Benchmark(name="ifeval", group="general", load=load_ifeval, score=score_ifeval, k=5,
                     dataset=DATASET, aggregate=aggregate_ifeval)
