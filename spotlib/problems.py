"""The paper's math prompt and the DAPO-Math (English) training problems.

Which set a profile trains on (the tiny world's arithmetic or DAPO-Math) is chosen by
`spotlib.stages.sample.load_train_problems`; this module knows nothing of the world.
"""
from __future__ import annotations

from pathlib import Path

from spotlib.io import DataError, load_data_file

FINAL_LINE = "Therefore, the final answer is: $\\boxed{ANSWER}$."

MATH_PROMPT = (
    "Solve the following math problem step by step. The last line of your response should be "
    "of the form \"" + FINAL_LINE + "\" (without quotes) where ANSWER is the final answer.\n\n"
    "{problem}"
)


def math_prompt(problem: str) -> str:
    """The paper's prompt for math, in training and evaluation alike (docs/method.md §3)."""
    return MATH_PROMPT.replace("{problem}", problem.strip())


def load_dapo_rows(dataset: str, config: str | None, split: str, data_files: str | None):
    import datasets

    if data_files:
        path = Path(data_files)
        if not path.exists():
            raise DataError(f"{path}: data file not found (sample.data_files)")
        return load_data_file(path, "sample.data_files")
    return datasets.load_dataset(dataset, config, split=split)


def dapo_records(rows, limit: int, source: str = "") -> list[dict]:
    """DAPO-Math-17k-Processed rows (`prompt`, `solution`, `data_source`, `extra_info.index`)."""
    records = []
    for i, row in enumerate(rows):
        if len(records) >= limit:
            break
        for key in ("prompt", "solution"):
            if key not in row or row[key] in (None, ""):
                raise DataError(f"{source}: row {i}: missing field {key!r} (DAPO-Math format)")
        extra = row.get("extra_info") or {}
        index = extra.get("index", i) if isinstance(extra, dict) else i
        records.append({
            "id": f"dapo-{index}",
            "family": "math",
            "prompt": math_prompt(str(row["prompt"])),
            "answer": str(row["solution"]).strip(),
            "meta": {"data_source": row.get("data_source"), "problem": str(row["prompt"])},
        })
    return records
