"""The six in-domain math benchmarks (PAPER.md §5), graded by math-verify on the last box."""
from __future__ import annotations

from functools import partial

from spotlib.data import math_prompt
from spotlib.evals.base import Benchmark, field_of, load_rows
from spotlib.grading import grade_many, verify_answer

PROBLEM_FIELDS = ("problem", "question", "Question", "prompt")
ANSWER_FIELDS = ("answer", "final_answer", "Answer", "expected_answer")
ID_FIELDS = ("unique_id", "id", "ID", "idx")

# name -> (dataset id, config, split, avg@k)
MATH_SETS = {
    "aime24": ("HuggingFaceH4/aime_2024", None, "train", 16),
    "aime25": ("yentinglin/aime_2025", None, "train", 16),
    "amc23": ("knoveleng/AMC-23", None, "train", 16),
    "math500": ("HuggingFaceH4/MATH-500", None, "test", 5),
    "minerva": ("knoveleng/Minerva-Math", None, "train", 5),
    "olympiadbench": ("knoveleng/OlympiadBench", None, "train", 5),
}


def gold_text(value) -> str:
    """Gold answers arrive as numbers, strings, or lists of strings (OlympiadBench)."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(gold_text(v) for v in value)
    text = str(value).strip()
    if text.startswith("$") and text.endswith("$") and len(text) > 1:
        text = text.strip("$").strip()
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    return text


def math_records(name: str, rows: list[dict], n: int, source: str) -> list[dict]:
    records = []
    for i, row in enumerate(rows[:n]):
        problem = str(field_of(row, PROBLEM_FIELDS, source, i)).strip()
        answer = gold_text(field_of(row, ANSWER_FIELDS, source, i))
        ident = next((row[f] for f in ID_FIELDS if row.get(f) not in (None, "")), i)
        records.append({"id": f"{name}-{ident}", "family": name, "prompt": math_prompt(problem),
                        "answer": answer, "meta": {"problem": problem, "row": i}})
    return records


def load_math(name: str, eval_cfg, n: int, profile=None) -> list[dict]:
    dataset, config, split, _ = MATH_SETS[name]
    local = (eval_cfg.data_files or {}).get(name) if eval_cfg is not None else None
    rows = load_rows(dataset, config, split, local)
    return math_records(name, rows, n, local or dataset)


def score_math(item: dict, response: str, mode: str = "math_verify") -> dict:
    return {"score": float(verify_answer(response, item["answer"], mode))}


def score_math_many(items, responses, eval_cfg=None) -> list[dict]:
    mode = getattr(eval_cfg, "grading", "math_verify")
    processes = getattr(eval_cfg, "grading_processes", 2)
    timeout_s = getattr(eval_cfg, "grading_timeout_s", 5.0)
    ok = grade_many(list(responses), [item["answer"] for item in items], mode=mode,
                    processes=processes, timeout_s=timeout_s)
    return [{"score": float(flag)} for flag in ok]


def math_benchmarks() -> list[Benchmark]:
    return [Benchmark(name=name, group="in_domain", load=partial(load_math, name), score=score_math,
                      score_many=score_math_many, k=k, dataset=dataset)
            for name, (dataset, _, _, k) in MATH_SETS.items()]
