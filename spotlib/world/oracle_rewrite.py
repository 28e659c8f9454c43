"""An Oracle like a real one: beyond the minimal edit, at rates the profile names.

The programmatic Oracle's minimal edit (`spotlib.world.edit.minimal_fix`) changes only what
is wrong. A real Oracle (the paper's Gemini) rewrote far more: of its rectified answers only
about a third stay within a change ratio of 0.5, and three fifths within 0.7. Starting from
the minimal edit, this module draws for each rectification what such an Oracle does besides
(`OracleBehaviour`, each a share of rectifications):

- `restart`: it starts again from an earlier step and writes every step from there in its own
  wording, after a remark that it does so; a share `restart_first` of restarts begin at the first
  step (the whole solution written anew), the others at a step drawn uniformly up to the first
  wrong one;
- `reword`: it keeps the student's layout but re-words correct steps in its own words
  ("37 plus 48 makes 85" for "37 + 48 = 85"), each with probability one half (at least one);
- `fail`: its fix slips again (a result off by ten, carried to the end): the final answer
  is wrong and stage 03's verification rejects the pair;
- `wrong_step`: it leaves one wrong intermediate result (off by ten, not carried): the final
  answer is right, so only a step-level check (stage 03's error introduction) sees it.

`restart` and `reword` exclude each other; `fail` and `wrong_step` apply on top, exclusively.
`spotlib.oracle.retention` measures what a profile's rates give against the paper's retention points.
Every draw comes from the item's own seeded generator: the same item gives the same text.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .edit import Step, parse_solution
from .families import FINAL_LINE
from .styles import OP_WORDS, chain_steps

RESTART_REMARKS = ("I checked every step against the problem; let me start again from step {k} and say why each "
                   "step holds:",
                   "Something goes wrong by step {k}, so I redo the work from there, explaining each step:")
# What the Oracle says after each step it writes anew (a real Oracle explains; the student never does).
STEP_REASONS = ("so the running total is now {c}", "and we carry {c} on to the next step",
                "which leaves {c} before the next operation", "giving {c} as the new value")
REASON_SHARE = 1.0   # of the steps a restart writes anew, the share it explains
_BOX = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class OracleBehaviour:
    """Shares of rectifications (each in [0, 1]; restart + reword ≤ 1, fail + wrong_step ≤ 1);
    `restart_first`: the share of restarts that begin at the first step."""
    restart: float = 0.0
    reword: float = 0.0
    fail: float = 0.0
    wrong_step: float = 0.0
    restart_first: float = 0.0

    @property
    def minimal(self) -> bool:
        return not (self.restart or self.reword or self.fail or self.wrong_step)

    @classmethod
    def from_config(cls, oracle_cfg) -> "OracleBehaviour":
        return cls(oracle_cfg.restart_rate, oracle_cfg.reword_rate, oracle_cfg.fail_rate, oracle_cfg.wrong_step_rate,
                   oracle_cfg.restart_first_rate)


def _worded(a: int, op: str, b: int, c: int) -> str:
    return f"{a} {OP_WORDS[op]} {b} makes {c}"


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def restart_from(record: dict, text: str, k: int, remark: int = 0, reasons: list[bool] | None = None) -> str:
    """`text` (a correct solution) kept up to the line of its step k; then a remark and every step
    from k on in the Oracle's wording, each with a reason where `reasons[i]` (default: every step),
    and the final line."""
    steps, truth = parse_solution(text), chain_steps(record)
    head = text[:_line_start(text, steps[k].span[0])] if k < len(steps) else text
    lines = [RESTART_REMARKS[remark].format(k=k + 1)]
    for i in range(k, len(truth)):
        reason = STEP_REASONS[(remark + i) % len(STEP_REASONS)].format(c=truth[i][3])
        explained = reasons is None or reasons[i]
        lines.append(_worded(*truth[i]) + (f", {reason}" if explained else "") + ("." if i == len(truth) - 1 else ";"))
    lines.append(FINAL_LINE.format(record["answer"]))
    return head + "\n".join(lines)


def reword_steps(text: str, which: list[int]) -> str:
    """`text` with the equations of steps `which` written in the Oracle's words, layout kept."""
    steps = parse_solution(text)
    for i in sorted(which, reverse=True):
        s = steps[i]
        if not s.worded:
            text = text[:s.span[0]] + _worded(s.a, s.op, s.b, s.c) + text[s.span[1]:]
    return text


def slip_step(record: dict, text: str, k: int, carried: bool) -> str:
    """`text` with step k's result off by ten; `carried`: every later step and the final answer follow
    the wrong value (a wrong answer), else only that step is wrong (the answer stays right)."""
    steps = parse_solution(text)
    edits: list[tuple[int, int, str]] = []
    delta = -10 if steps[k].c >= 10 else 10
    value = steps[k].c + delta
    edits.append((*steps[k].spans["c"], str(value)))
    if carried:
        for s in steps[k + 1:]:
            new_c = value + s.b if s.op == "+" else value - s.b
            edits += [(*s.spans["a"], str(value)), (*s.spans["c"], str(new_c))]
            value = new_c
        boxes = list(_BOX.finditer(text))
        if boxes:
            edits.append((*boxes[-1].span(1), str(value)))
    for start, end, repl in sorted(edits, reverse=True):
        text = text[:start] + repl + text[end:]
    return text


def beyond_minimal(record: dict, fixed: str, first_wrong: int, rng: random.Random,
                   behaviour: OracleBehaviour) -> tuple[str, dict]:
    """The Oracle's reply from its minimal edit `fixed` of a solution whose first wrong step was
    `first_wrong`: (text, what it did: {"rewrite": none|restart|reword, "from_step", "slip": none|fail|wrong_step})."""
    steps: list[Step] = parse_solution(fixed)
    info = {"rewrite": "none", "from_step": None, "slip": "none"}
    if not steps:
        return fixed, info
    text, u = fixed, rng.random()
    if u < behaviour.restart:
        # the extra draw only where the share is set: a profile without it keeps its texts
        from_first = behaviour.restart_first > 0 and rng.random() < behaviour.restart_first
        k = 0 if from_first else rng.randrange(min(first_wrong, len(steps) - 1) + 1)
        reasons = [rng.random() < REASON_SHARE for _ in chain_steps(record)]
        text = restart_from(record, fixed, k, rng.randrange(len(RESTART_REMARKS)), reasons)
        info.update(rewrite="restart", from_step=k)
    elif u < behaviour.restart + behaviour.reword:
        which = [i for i in range(len(steps)) if rng.random() < 0.5] or [rng.randrange(len(steps))]
        text = reword_steps(fixed, which)
        info.update(rewrite="reword", reworded=which)
    v = rng.random()
    steps = parse_solution(text)
    if v < behaviour.fail:
        text = slip_step(record, text, rng.randrange(len(steps)), carried=True)
        info["slip"] = "fail"
    elif v < behaviour.fail + behaviour.wrong_step and len(steps) > 1:
        text = slip_step(record, text, rng.randrange(len(steps) - 1), carried=False)
        info["slip"] = "wrong_step"
    return text, info


# ---------------------------------------------------------------- wrong answers to try it on
def synthetic_errors(world_cfg, n: int, seed: int = 0) -> list[dict]:
    """Wrong answers as the pre-training corpus writes them (one slipped step in a student wording), on
    train-split arithmetic: a stand-in for stage 01's errors before a base model exists."""
    from .families import make_items
    from .styles import slipped_solution

    rng = random.Random(seed)
    return [{**it, "sample_id": 0, "response": slipped_solution(it, rng)}
            for it in make_items("arith", n, "train", world_cfg=world_cfg)]
