"""Shared fixtures for the pairs tests: student solutions with a planted error, fake stage-01 outputs."""
from __future__ import annotations

import random
import re

from spotlib import world
from spotlib.io import write_jsonl

_EQ = re.compile(r"(-?\d+) ([+-]) (-?\d+) = (-?\d+)")
_BOX = re.compile(r"\\boxed\{(-?\d+)\}")


def plant_error(text: str, step: int, delta: int) -> str:
    """Make step `step`'s result off by `delta` and carry the wrong value through (a real slip)."""
    matches = list(_EQ.finditer(text))
    out, last, carried = [], 0, None
    for k, m in enumerate(matches):
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        if carried is not None:
            a = carried
            c = a + b if op == "+" else a - b
        if k == step:
            c += delta
        if k >= step:
            carried = c
        out.append(text[last:m.start()] + f"{a} {op} {b} = {c}")
        last = m.end()
    text = "".join(out) + text[last:]
    return _BOX.sub(lambda m: "\\boxed{%d}" % carried, text) if carried is not None else text


def change_one_result(text: str, rng: random.Random) -> str:
    """y⁻: a correct solution with one intermediate result changed (nothing carried after it)."""
    lines = text.split("\n")
    i = 1 + rng.randrange(max(1, len(lines) - 2))
    head, _, value = lines[i].rpartition("= ")
    lines[i] = f"{head}= {int(value) + 1 + rng.randrange(9)}" if value.isdigit() else lines[i] + " 1"
    return "\n".join(lines)


def fake_samples(n: int, seed: int = 0, error_rate: float = 0.6) -> list[dict]:
    """Sample records as stage 01 writes them: student-style solutions, some with a planted slip."""
    rng = random.Random(seed)
    records = []
    for item in world.make_items("arith", n, "train", seed=seed):
        text = world.student_solution(item, rng)
        if rng.random() < error_rate:
            steps = len(item["meta"]["ops"])
            text = plant_error(text, rng.randrange(steps), rng.choice([-10, -2, -1, 1, 3, 10]))
        ok = world.score(item, text)
        records.append({**item, "sample_id": 0, "response": text,
                        "pred": world.extract_answer(item, text), "correct": ok})
    return records


def write_fake_stage01(profile, n: int, seed: int = 0) -> list[dict]:
    records = fake_samples(n, seed)
    out = profile.stage_dir("01_sample")
    write_jsonl(out / "all.jsonl", records)
    write_jsonl(out / "errors.jsonl", [r for r in records if not r["correct"]])
    write_jsonl(out / "correct.jsonl", [r for r in records if r["correct"]])
    return records


def save_untrained_student(path, world_cfg) -> None:
    """The world's tokenizer and an untrained micro model: enough for units and NLL plumbing."""
    from spotlib.world.pretrain import save_untrained
    save_untrained(world_cfg, path)


def micro_pair_inputs(profile, tmp_path):
    """A micro base model (saved under tmp_path/base) and three arithmetic pairs (y⁻ = y⁺ plus a
    wrong tail), with their reference log-probs, as the trainer's RunInputs."""
    import torch

    from spotlib.train import data as D
    from spotlib.train.logps import reference_sums
    from spotlib.train.trainer import RunInputs
    from spotlib.world.pretrain import save_untrained

    model, tokenizer = save_untrained(profile.world, tmp_path / "base")
    rng = random.Random(0)
    examples = []
    for it in world.make_items("arith", 3, "train", world_cfg=profile.world):
        good = world.student_solution(it, rng)
        examples.append({"id": it["id"], "prompt": it["prompt"], "chosen": good, "rejected": good + " 7"})
    data = D.prepare(tokenizer, examples, 384, 128, with_rejected=True, completion_format="clean")
    cpu = torch.device("cpu")
    return RunInputs(data, reference_sums(model, data.chosen, tokenizer.pad_token_id, cpu)[0],
                     reference_sums(model, data.rejected, tokenizer.pad_token_id, cpu)[0], str(tmp_path / "base"))
