"""The six in-domain math benchmarks, graded by math-verify on the last box."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from spotlib.problems import math_prompt
from spotlib.evals.base import Benchmark, column, load_rows
from spotlib.grading import extract_boxed, grade_many, verify_answer
from spotlib.io import DataError


@dataclass(frozen=True)
class MathSet:
    """Where a benchmark's rows live and which of their columns hold the problem and the gold answer.

    Columns are the dataset's own on the Hub, named per benchmark (never guessed from a list):
    a local file in `eval.data_files` must carry the same ones.
    """
    dataset: str
    split: str
    k: int                          # the paper's avg@k
    problem: str
    answer: str
    id: str | None = None
    answer_in_box: bool = False     # the gold answer is the last \boxed{} of that column (a full solution)


MATH_SETS = {
    "aime24": MathSet("HuggingFaceH4/aime_2024", "train", 16, "problem", "answer", "id"),
    "aime25": MathSet("yentinglin/aime_2025", "train", 16, "problem", "answer", "id"),
    "amc23": MathSet("knoveleng/AMC-23", "train", 16, "problem", "answer", "id"),   # answers are floats
    "math500": MathSet("HuggingFaceH4/MATH-500", "test", 5, "problem", "answer", "unique_id"),
    # Minerva has no answer column: {problem, solution, type, idx}; the answer is the solution's last box.
    "minerva": MathSet("knoveleng/Minerva-Math", "train", 5, "problem", "solution", "idx", answer_in_box=True),
    # OlympiadBench: `answer` is the final answer as text; `final_answer` is the same as a list.
    "olympiadbench": MathSet("knoveleng/OlympiadBench", "train", 5, "question", "answer", "id"),
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
    spec = MATH_SETS[name]
    records = []
    for i, row in enumerate(rows[:n]):
        problem = str(column(row, spec.problem, name, spec.dataset, source, i, "the problem")).strip()
        gold = column(row, spec.answer, name, spec.dataset, source, i, "the gold answer")
        if spec.answer_in_box:
            boxed = extract_boxed(str(gold))
            if boxed is None:
                raise DataError(f"{source}: benchmark {name}: row {i}: column {spec.answer!r} has no \\boxed{{}} "
                                f"answer")
            gold = boxed
        ident = row.get(spec.id) if spec.id else None
        ident = i if ident in (None, "") else ident
        records.append({"id": f"{name}-{ident}", "family": name, "prompt": math_prompt(problem),
                        "answer": gold_text(gold), "meta": {"problem": problem, "row": i}})
    return records


def load_math(name: str, eval_cfg, n: int, world_cfg=None) -> list[dict]:
    spec = MATH_SETS[name]
    local = (eval_cfg.data_files or {}).get(name) if eval_cfg is not None else None
    rows = load_rows(spec.dataset, None, spec.split, local)
    return math_records(name, rows, n, local or spec.dataset)


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
                      score_many=score_math_many, k=spec.k, dataset=spec.dataset,
                      extra={"problem_column": spec.problem, "answer_column": spec.answer})
            for name, spec in MATH_SETS.items()]
