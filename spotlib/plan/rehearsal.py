"""The paper path rehearsed on a CPU: the paper profile's code, a small model, public-format files.

The `rehearsal` profile differs from `paper` only where the hardware forces it. What it loads
must therefore look like the real inputs, and `prepare(profile)` builds them (stage 01 calls it
when `profile.assets == "rehearsal"`):

- a small base model, saved with `save_pretrained` and then loaded by path like any HF model: the
  tiny world's recipe, with arithmetic prompts written in the paper's math template
  (`world.prompt_template: paper`), so the student answers some DAPO-style prompts;
- data files in the public datasets' own formats, whose rows are tiny-world problems:
  DAPO-Math-17k-Processed (parquet), MATH-500 / AIME / AMC / Minerva / OlympiadBench (jsonl),
  GPQA-Diamond (csv), IFEval (jsonl), Connect4 (jsonl, positions from random legal play).

Every file is rebuilt only when the world settings change (a stamp with their hash).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import random
from pathlib import Path

from spotlib.io import params_hash, write_json_atomic

PUBLIC_DIR = "public_data"

# The files the rehearsal profile's `sample.data_files` and `eval.data_files` name.
FILES = {
    "dapo": "dapo_math_17k_en.parquet",
    "math500": "math500_test.jsonl",
    "aime24": "aime_2024_train.jsonl",
    "aime25": "aime_2025_train.jsonl",
    "amc23": "amc23_train.jsonl",
    "minerva": "minerva_math_train.jsonl",
    "olympiadbench": "olympiadbench_train.jsonl",
    "gpqa_diamond": "gpqa_diamond.csv",
    "ifeval": "ifeval_input_data.jsonl",
    "connect4": "connect4_eval.jsonl",
}


def prepare(profile, progress: bool = True) -> Path:
    """Build (or reuse) the rehearsal's base model and public-format files; returns the data folder."""
    from spotlib import world

    world_profile = profile.replace(model=dataclasses.replace(profile.model, name_or_path="world"))
    model_dir = world.ensure_base_model(world_profile)
    target = Path(profile.model.name_or_path)
    if target.resolve() != Path(model_dir).resolve():
        raise ValueError(f"rehearsal: model.name_or_path is {target}, but the rehearsal builds its model in "
                         f"{model_dir}; set model.name_or_path: \"{{output_dir}}/base_model\"")
    folder = profile.out / PUBLIC_DIR
    stamp = folder / "stamp.json"
    key = params_hash({"world": dataclasses.asdict(profile.world), "seed": profile.seed,
                       "n": train_rows(profile), "files": FILES})
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    write_public_files(folder, profile.world, train_rows(profile), seed=profile.seed)
    write_json_atomic(stamp, {"key": key})
    if progress:
        print(f"rehearsal: model {model_dir}, public-format files in {folder}")
    return folder


def train_rows(profile) -> int:
    """Rows of the DAPO-format file: stage 01's problems, then GRPO's held-out ones after them."""
    return profile.sample.num_problems + profile.rl.heldout_items


def write_public_files(folder: Path, world_cfg, n_train: int, seed: int = 0, n_eval: int = 32) -> dict[str, Path]:
    """Every public-format file, from tiny-world items; returns name -> path."""
    from spotlib import world

    train = world.make_items("arith", n_train, split="train", seed=seed, world_cfg=world_cfg)
    test = world.make_items("arith", n_eval * 6, split="eval", seed=seed, world_cfg=world_cfg)
    ood = world.make_items("arith_ood", n_eval, split="eval", seed=seed, world_cfg=world_cfg)
    fmt = world.make_items("format", n_eval, split="eval", seed=seed, world_cfg=world_cfg)
    paths = {name: folder / fname for name, fname in FILES.items()}
    write_dapo(paths["dapo"], train)
    math_sets = ("math500", "aime24", "aime25", "amc23", "minerva", "olympiadbench")
    for k, name in enumerate(math_sets):
        items = test[k * n_eval:(k + 1) * n_eval]
        _write_jsonl(paths[name], [MATH_ROWS[name](i, item) for i, item in enumerate(items)])
    write_gpqa(paths["gpqa_diamond"], ood, seed)
    _write_jsonl(paths["ifeval"], [ifeval_row(i, item) for i, item in enumerate(fmt)])
    _write_jsonl(paths["connect4"], connect4_rows(n_eval, seed))
    return paths


def problem_text(item: dict) -> str:
    """The bare problem (the loaders add the paper's template, as for the real datasets)."""
    return item["meta"].get("problem", item["prompt"])


# ------------------------------------------------------------------ training problems
def write_dapo(path: Path, items: list[dict]) -> None:
    """open-r1/DAPO-Math-17k-Processed (`en`): prompt, solution, data_source, source_prompt,
    ability, reward_model, extra_info."""
    import pandas as pd

    rows = []
    for i, item in enumerate(items):
        problem = problem_text(item)
        rows.append({
            "prompt": problem,
            "solution": item["answer"],
            "data_source": "math_dapo",
            "source_prompt": [{"content": problem, "role": "user"}],
            "ability": "MATH",
            "reward_model": {"ground_truth": item["answer"], "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": f"{i:08d}-{item['id']}"},
        })
    tmp = path.with_name(f".{path.name}.tmp")
    pd.DataFrame(rows).to_parquet(tmp, index=False)
    tmp.replace(path)


# ------------------------------------------------------------------ math benchmarks (their own columns)
def _math500(i, item):
    return {"problem": problem_text(item), "solution": item["meta"].get("solution", ""), "answer": item["answer"],
            "subject": "Prealgebra", "level": 1, "unique_id": f"test/prealgebra/{i}.json"}


def _aime24(i, item):
    return {"id": 60 + i, "problem": problem_text(item), "solution": "", "answer": item["answer"],
            "url": "", "year": "2024"}


def _aime25(i, item):
    return {"id": str(i), "problem": problem_text(item), "answer": item["answer"], "url": "", "year": "2025"}


def _amc23(i, item):
    return {"id": i, "problem": problem_text(item), "answer": float(item["answer"]), "url": ""}


def _minerva(i, item):
    """knoveleng/Minerva-Math has no answer column: the gold answer is the solution's last box."""
    return {"problem": problem_text(item), "solution": f"The total is $\\boxed{{{item['answer']}}}$.",
            "type": "Arithmetic", "idx": i}


def _olympiadbench(i, item):
    return {"id": 1600 + i, "question": problem_text(item), "solution": [""], "final_answer": [item["answer"]],
            "context": None, "image_1": None, "modality": "Text-only", "difficulty": "Competition",
            "is_multiple_answer": False, "unit": None, "answer_type": "Numerical", "error": None,
            "question_type": "Open-ended", "subfield": "Algebra", "subject": "Math", "language": "English",
            "answer": item["answer"]}


MATH_ROWS = {"math500": _math500, "aime24": _aime24, "aime25": _aime25, "amc23": _amc23,
             "minerva": _minerva, "olympiadbench": _olympiadbench}


# ------------------------------------------------------------------ GPQA-Diamond (csv, gated on the Hub)
GPQA_COLUMNS = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                "Incorrect Answer 3", "High-level domain", "Subdomain"]


def write_gpqa(path: Path, items: list[dict], seed: int) -> None:
    rng = random.Random(f"gpqa-{seed}")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=GPQA_COLUMNS)
        writer.writeheader()
        for item in items:
            value = int(item["answer"])
            wrong = rng.sample([d for d in range(-9, 10) if d], 3)
            writer.writerow({"Record ID": f"rec{item['id']}", "Question": problem_text(item),
                             "Correct Answer": str(value),
                             **{f"Incorrect Answer {j + 1}": str(value + d) for j, d in enumerate(wrong)},
                             "High-level domain": "Arithmetic", "Subdomain": "Word problems"})


# ------------------------------------------------------------------ IFEval (Google's instruction ids)
_CASE_IDS = {"upper": "change_case:english_capital", "lower": "change_case:english_lowercase"}


def ifeval_row(i: int, item: dict) -> dict:
    meta = item["meta"]
    ids, kwargs = [], []
    if meta.get("case") in _CASE_IDS:
        ids.append(_CASE_IDS[meta["case"]])
        kwargs.append({})
    if meta.get("wrap") == "quotes":
        ids.append("startend:quotation")
        kwargs.append({})
    if not ids:  # every IFEval prompt carries at least one instruction
        ids.append("punctuation:no_comma")
        kwargs.append({})
    return {"key": 1000 + i, "prompt": item["prompt"], "instruction_id_list": ids, "kwargs": kwargs}


# ------------------------------------------------------------------ Connect4 (linius/connect4's format)
ROWS, COLS = 6, 7


def _wins(board, row, col, piece) -> bool:
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        count = 1
        for sign in (1, -1):
            r, c = row + sign * dr, col + sign * dc
            while 0 <= r < ROWS and 0 <= c < COLS and board[r][c] == piece:
                count += 1
                r, c = r + sign * dr, c + sign * dc
        if count >= 4:
            return True
    return False


def _drop_row(board, col):
    for r in range(ROWS):
        if board[r][col] == "_":
            return r
    return None


def connect4_rows(n: int, seed: int) -> list[dict]:
    """Positions from random legal play (no finished game), with each side's immediate wins."""
    rng = random.Random(f"connect4-{seed}")
    rows = []
    while len(rows) < n:
        board = [["_"] * COLS for _ in range(ROWS)]
        to_move = "X"
        for _ in range(rng.randint(4, 16)):
            col = rng.choice([c for c in range(COLS) if _drop_row(board, c) is not None])
            r = _drop_row(board, col)
            if _wins(board, r, col, to_move):  # never hand over a finished game
                break
            board[r][col] = to_move
            to_move = "O" if to_move == "X" else "X"
        me, other = to_move, ("O" if to_move == "X" else "X")
        moves = [(_drop_row(board, c), c) for c in range(COLS) if _drop_row(board, c) is not None]
        own = [[r, c] for r, c in moves if _wins(board, r, c, me)]
        opp = [[r, c] for r, c in moves if _wins(board, r, c, other)]
        lines = ["", "Current Game Board: "]
        for r in range(ROWS - 1, -1, -1):
            lines.append("".join(f"({r},{c}):{board[r][c]} " for c in range(COLS)))
        valid = ", ".join(f"'({r},{c})'" for r, c in moves)
        state = "\n".join(lines) + f"\n\nCurrent valid moves for player {me}: [{valid}]\n" \
            f"You are player {me}, please choose the best move considering the current board state.\n"
        rows.append({"state": state, "answer": [own, opp]})
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)
