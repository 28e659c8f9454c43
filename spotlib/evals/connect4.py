"""Connect4: name every immediate winning move, yours and the opponent's.

Each record of the released set (`linius/connect4`, 500 states) is
`{"state": board text, "answer": [own winning moves, opponent winning moves]}`, moves as
[row, col]. The model writes

    [Intermediate Thinking Results 1: (r,c), (r,c)]     (or `None`): its own winning moves
    [Intermediate Thinking Results 2: (r,c)]            (or `None`): the opponent's
    Chosen Move: (r,c)

Each list is scored by exact multiset match against the answer (case-insensitive; `None`
matches an empty list). A missing or unreadable line scores 0 and is a format error. The
paper does not say how the two accuracies combine, so both are reported with their mean.
"""
from __future__ import annotations

import json
import re
from collections import Counter

from spotlib.evals.base import Benchmark, column, load_rows
from spotlib.io import DataError

DATASET, SPLIT = "linius/connect4", "train"
INSTRUCTIONS = (
    "You are playing Connect Four on a board of 6 rows and 7 columns. A piece dropped into a column "
    "lands on its lowest empty cell; row 0 is the bottom row. Four of one player's pieces in a line "
    "(horizontal, vertical or diagonal) win the game.\n"
    "{state}\n"
    "Before choosing, check every valid move.\n"
    "Write all moves that would win the game at once for you in the format "
    "\"[Intermediate Thinking Results 1: (X,X), (X,X), ...]\", or \"[Intermediate Thinking Results 1: None]\" "
    "if there is none.\n"
    "Write all moves that would win the game at once for your opponent in the format "
    "\"[Intermediate Thinking Results 2: (X,X), (X,X), ...]\", or \"[Intermediate Thinking Results 2: None]\" "
    "if there is none.\n"
    "End with your move in the format \"Chosen Move: (X,X)\"."
)
_LINE = {i: re.compile(rf"intermediate thinking results {i}\s*:\s*([^\]\n]*)", re.IGNORECASE) for i in (1, 2)}
_MOVE = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")


def parse_answer(answer) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """`[[own...], [opponent...]]` (a list or its JSON text) -> two lists of (row, col)."""
    if isinstance(answer, str):
        answer = json.loads(answer)
    if not isinstance(answer, (list, tuple)) or len(answer) != 2:
        raise DataError(f"connect4 answer: expected [own moves, opponent moves], got {answer!r}")
    return tuple([tuple(int(v) for v in move) for move in moves] for moves in answer)  # type: ignore[return-value]


def parse_moves_line(response: str, which: int) -> list[tuple[int, int]] | None:
    """The moves on the last `Intermediate Thinking Results <which>` line; None if absent/unreadable."""
    found = _LINE[which].findall(response or "")
    if not found:
        return None
    text = found[-1].strip().strip("\"'*`.").strip()
    if text.lower() == "none":
        return []
    moves = [(int(r), int(c)) for r, c in _MOVE.findall(text)]
    return moves or None


def score(response: str | None, answer) -> dict:
    """`{own, opponent, format_error}`: exact multiset match per list; a missing line scores 0."""
    own_gold, opp_gold = parse_answer(answer)
    result = {"format_error": False}
    for key, which, gold in (("own", 1, own_gold), ("opponent", 2, opp_gold)):
        moves = parse_moves_line(response or "", which)
        if moves is None:
            result["format_error"] = True
            result[key] = 0.0
        else:
            result[key] = float(Counter(moves) == Counter(gold))
    return result


def render_moves(moves) -> str:
    return ", ".join(f"({r},{c})" for r, c in moves) if moves else "None"


def render_answer(answer, state: str = "") -> str:
    """A response in the required format that is exactly right (used to test the scorer)."""
    own, opp = parse_answer(answer)
    choice = (own or opp or valid_moves(state) or [(0, 0)])[0]
    return (f"[Intermediate Thinking Results 1: {render_moves(own)}]\n"
            f"[Intermediate Thinking Results 2: {render_moves(opp)}]\n"
            f"Chosen Move: ({choice[0]},{choice[1]})")


def valid_moves(state: str) -> list[tuple[int, int]]:
    found = re.search(r"valid moves[^:]*:\s*\[([^\]]*)\]", state or "")
    return [(int(r), int(c)) for r, c in _MOVE.findall(found.group(1))] if found else []


def connect4_records(rows: list[dict], n: int, source: str) -> list[dict]:
    records = []
    for i, row in enumerate(rows[:n]):
        state = str(column(row, "state", "connect4", DATASET, source, i, "the board"))
        if "answer" not in row:  # an empty list pair is a valid answer, so only absence is an error
            raise DataError(f"{source}: benchmark connect4: row {i}: expected column 'answer' (the gold moves "
                            f"of {DATASET}), found: {', '.join(sorted(row)) or 'none'}")
        try:
            answer = parse_answer(row["answer"])
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source}: row {i}: bad connect4 answer: {exc}") from None
        records.append({"id": f"connect4-{i:04d}", "family": "connect4",
                        "prompt": INSTRUCTIONS.replace("{state}", state.strip("\n")),
                        "answer": json.dumps([list(map(list, answer[0])), list(map(list, answer[1]))]),
                        "meta": {"state": state}})
    return records


def load_connect4(eval_cfg, n: int, world_cfg=None) -> list[dict]:
    local = (eval_cfg.data_files or {}).get("connect4")
    rows = load_rows(DATASET, None, SPLIT, local)
    return connect4_records(rows, n, local or DATASET)


def score_item(item: dict, response: str) -> dict:
    result = score(response, item["answer"])
    return {"score": (result["own"] + result["opponent"]) / 2, **result}


def connect4_benchmark() -> Benchmark:
    return Benchmark(name="connect4", group="ood", load=load_connect4, score=score_item, k=5, dataset=DATASET)
