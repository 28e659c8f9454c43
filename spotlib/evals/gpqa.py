"""GPQA-Diamond: four options shuffled with a recorded seed; the answer is a letter.

The dataset is gated on the Hub (terms to accept, a token to send): `check_access` says
before any compute whether stage 05 will be able to read it.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

from spotlib.evals.base import Benchmark, column, load_rows
from spotlib.grading import extract_boxed

NAME = "gpqa_diamond"
DATASET, CONFIG, SPLIT = "Idavidrein/gpqa", "gpqa_diamond", "train"
LETTERS = "ABCD"
FINAL_LINE = "Therefore, the final answer is: $\\boxed{LETTER}$."
PROMPT = (
    "Answer the following multiple choice question. Think step by step. The last line of your "
    "response should be of the form \"" + FINAL_LINE + "\" (without quotes) where LETTER is one "
    "of A, B, C, D.\n\n{question}\n\n{options}"
)


def shuffled_options(correct: str, wrong: list[str], seed: int, key: str) -> tuple[list[str], int]:
    """The options in a seeded order (per item, so adding items never reorders others)."""
    options = [correct] + list(wrong)
    order = list(range(len(options)))
    random.Random(f"{seed}:{key}").shuffle(order)
    return [options[i] for i in order], order.index(0)


def gpqa_records(rows: list[dict], n: int, seed: int, source: str) -> list[dict]:
    records = []
    for i, row in enumerate(rows[:n]):
        question = str(column(row, "Question", NAME, DATASET, source, i, "the question")).strip()
        correct = str(column(row, "Correct Answer", NAME, DATASET, source, i, "the gold answer")).strip()
        wrong = [str(column(row, f"Incorrect Answer {j}", NAME, DATASET, source, i, "a wrong option")).strip()
                 for j in (1, 2, 3)]
        key = str(row.get("Record ID") or i)
        options, gold = shuffled_options(correct, wrong, seed, key)
        listing = "\n".join(f"{LETTERS[j]}) {text}" for j, text in enumerate(options))
        records.append({"id": f"gpqa_diamond-{key}", "family": "gpqa_diamond",
                        "prompt": PROMPT.replace("{question}", question).replace("{options}", listing),
                        "answer": LETTERS[gold],
                        "meta": {"options": options, "shuffle_seed": seed, "row": i}})
    return records


GATED_HELP = (f"accept the terms at https://huggingface.co/datasets/{DATASET} and set HF_TOKEN "
              f"(or `hf auth login`), or set eval.data_files.gpqa_diamond to a local copy")


def check_access(eval_cfg, api=None) -> str | None:
    """None when GPQA-Diamond can be read (or is not asked for), else the problem in one line.

    A local `eval.data_files` entry must exist; otherwise a Hub token is needed and one
    cheap auth-check call tells whether it may read the gated dataset. Offline
    (`HF_HUB_OFFLINE`), only an earlier download in the Hub cache will do.
    """
    cfg = eval_cfg
    if NAME not in cfg.benchmarks:
        return None
    local = (cfg.data_files or {}).get(NAME)
    if local:
        from spotlib.config import REPO_ROOT

        path = Path(local)
        if path.exists() or (not path.is_absolute() and (REPO_ROOT / path).exists()):
            return None
        return f"GPQA-Diamond: eval.data_files.gpqa_diamond: {local} not found"
    if _offline():
        from huggingface_hub import constants

        cached = Path(constants.HF_HUB_CACHE) / f"datasets--{DATASET.replace('/', '--')}"
        return None if cached.is_dir() else (f"GPQA-Diamond ({DATASET}) is gated and HF_HUB_OFFLINE is set with "
                                             f"no cached copy: {GATED_HELP}")
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    token = get_token()
    if not token:
        return f"GPQA-Diamond ({DATASET}) is gated and no Hugging Face token is set: {GATED_HELP}"
    try:
        (api or HfApi()).auth_check(DATASET, repo_type="dataset", token=token)
    except GatedRepoError:
        return f"GPQA-Diamond ({DATASET}): this token has not accepted the dataset's terms: {GATED_HELP}"
    except RepositoryNotFoundError:
        return f"GPQA-Diamond ({DATASET}): not visible with this token (invalid token?): {GATED_HELP}"
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", "?")
        return f"GPQA-Diamond ({DATASET}): the Hub refused the access check (HTTP {status}): {GATED_HELP}"
    except Exception as exc:  # noqa: BLE001 - connection errors (httpx's, OSError): one line, not a trace
        return f"GPQA-Diamond ({DATASET}): the Hub access check failed ({type(exc).__name__}: {str(exc)[:80]})"
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def load_gpqa(eval_cfg, n: int, world_cfg=None) -> list[dict]:
    local = (eval_cfg.data_files or {}).get("gpqa_diamond")
    rows = load_rows(DATASET, CONFIG, SPLIT, local)
    return gpqa_records(rows, n, eval_cfg.gpqa_shuffle_seed, local or DATASET)


_ANSWER_LINE = re.compile(r"(?:answer|choice)\s*(?:is|:)?\s*[:\s]*\(?\**([ABCD])\b", re.IGNORECASE)


def extract_letter(response: str | None) -> str | None:
    """The chosen letter: the last box (`\\boxed{B}`, `\\boxed{\\text{(B)}}`), else an 'answer: B' line."""
    if not response:
        return None
    boxed = extract_boxed(response)
    if boxed is not None:
        found = re.findall(r"(?<![A-Za-z\\])([ABCD])(?![A-Za-z])", boxed)
        return found[0] if len(set(found)) == 1 else None
    found = _ANSWER_LINE.findall(response)
    return found[-1].upper() if found else None


def score_gpqa(item: dict, response: str) -> dict:
    return {"score": float(extract_letter(response) == item["answer"])}


def gpqa_benchmark() -> Benchmark:
    return Benchmark(name="gpqa_diamond", group="ood", load=load_gpqa, score=score_gpqa, k=5,
                     dataset=f"{DATASET} ({CONFIG})")
