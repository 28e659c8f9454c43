"""Task families of the tiny world: seeded generators of problem records.

Every record is `{"id", "family", "prompt", "answer", "meta"}`. Splits are disjoint by
construction: each problem's canonical key is hashed into one of 100 buckets, and a
split only accepts problems whose bucket it owns. Pre-training draws from the
`pretrain` buckets only, so train/val/eval/probe arithmetic never appears there.
Facts are the exception on purpose: they are knowledge the base model must have seen,
so pre-training covers every fact and the other splits partition the (fact, question
wording) pairs among themselves.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

FAMILIES = ("arith", "arith_ood", "facts", "format")
SPLITS = ("pretrain", "train", "val", "eval", "probe")

# Bucket ranges (of 100) owned by each split, for generated problems.
_BUCKETS = {"pretrain": (0, 60), "train": (60, 75), "val": (75, 80), "eval": (80, 95), "probe": (95, 100)}
# Facts: pre-training sees all; the held-out splits share out the question keys.
_FACT_BUCKETS = {"train": (0, 20), "val": (20, 30), "eval": (30, 85), "probe": (85, 100)}

FINAL_LINE = "Therefore, the final answer is: $\\boxed{{{}}}$."


@dataclass(frozen=True)
class ArithSpec:
    """Shape of the arithmetic chains. Steps = number of operators."""
    min_ops: int = 2
    max_ops: int = 3
    operand_min: int = 10
    operand_max: int = 99
    ood_min_ops: int = 3
    ood_max_ops: int = 4
    pretrain_min_ops: int = 1     # one-step problems teach the primitive densely


def arith_spec(world_cfg) -> ArithSpec:
    if world_cfg is None:
        return ArithSpec()
    return ArithSpec(world_cfg.arith_min_ops, world_cfg.arith_max_ops, world_cfg.operand_min,
                     world_cfg.operand_max, world_cfg.ood_min_ops, world_cfg.ood_max_ops,
                     world_cfg.pretrain_min_ops)


def bucket_of(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100


def in_split(key: str, split: str, table=_BUCKETS) -> bool:
    lo, hi = table[split]
    return lo <= bucket_of(key) < hi


def apply_op(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    raise ValueError(f"unknown operator {op!r}")


def chain_values(operands: list[int], ops: list[str]) -> list[int]:
    """Running values c_i = c_{i-1} op_i b_i, c_0 = operands[0] (left to right)."""
    values = [operands[0]]
    for op, b in zip(ops, operands[1:]):
        values.append(apply_op(values[-1], op, b))
    return values


def _sample_chain(rng: random.Random, n_ops: int, spec: ArithSpec) -> tuple[list[int], list[str]]:
    """Random operands and operators, keeping every running value non-negative."""
    operands = [rng.randint(spec.operand_min, spec.operand_max)]
    ops: list[str] = []
    value = operands[0]
    for _ in range(n_ops):
        b = rng.randint(spec.operand_min, spec.operand_max)
        op = rng.choice("+-")
        if op == "-" and value - b < 0:
            op = "+"
        ops.append(op)
        operands.append(b)
        value = apply_op(value, op, b)
    return operands, ops


def expression(operands: list[int], ops: list[str]) -> str:
    parts = [str(operands[0])]
    for op, b in zip(ops, operands[1:]):
        parts += [op, str(b)]
    return " ".join(parts)


# ---------------------------------------------------------------- arith
def arith_prompt(operands, ops) -> str:
    return f"Compute {expression(operands, ops)}. Show your steps."


_ARITH_TEXT = re.compile(r"Compute (\d+(?: [+-] \d+)+)\. Show your steps\.")


def parse_arith_problem(text: str) -> tuple[list[int], list[str]] | None:
    """Operands and operators of an `arith` problem found in `text` (e.g. inside a public-format
    record whose prompt wraps it), or None."""
    found = _ARITH_TEXT.search(text or "")
    if found is None:
        return None
    parts = found.group(1).split()
    return [int(x) for x in parts[0::2]], parts[1::2]


# ---------------------------------------------------------------- arith_ood (word problems)
_NAMES = ["Mia", "Leo", "Ana", "Sam", "Ivy", "Tom", "Eva", "Max", "Zoe", "Ben", "Ada", "Kai"]
_THINGS = ["coins", "apples", "stamps", "marbles", "books", "shells", "cards", "pens"]
_GAIN = ["gets {} more", "finds {} more", "buys {} more", "receives {} more"]
_LOSS = ["loses {}", "gives away {}", "sells {}", "uses {}"]


def ood_prompt(operands, ops, name, thing, verbs) -> str:
    sentences = [f"{name} has {operands[0]} {thing}."]
    for i, (op, b) in enumerate(zip(ops, operands[1:])):
        lead = f"Then {name}" if i else name
        sentences.append(f"{lead} {verbs[i].format(b)}.")
    sentences.append(f"How many {thing} does {name} have now?")
    return " ".join(sentences)


# ---------------------------------------------------------------- facts
_SYL_A = ["ka", "zo", "mi", "tu", "re", "lo", "va", "si", "no", "be", "qu", "da", "fe", "gi", "ho", "pu"]
_SYL_B = ["rin", "bel", "tak", "mon", "sel", "dra", "vin", "gor", "lem", "pax", "tor", "nis"]
RELATIONS = {
    "city": (["Pelton", "Varna", "Osk", "Drumby", "Kelso", "Tarrow", "Minsa", "Ulvik", "Brask", "Fenmoor",
              "Quill", "Rosk", "Savin", "Ebbot", "Halm", "Norrin"],
             ["Where does {e} live?", "In which city does {e} live?", "Name the city of {e}."],
             "{e} lives in {v}."),
    "color": (["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "gray"],
              ["What is the favorite color of {e}?", "Which color does {e} like most?",
               "Name the favorite color of {e}."],
              "The favorite color of {e} is {v}."),
    "pet": (["cat", "dog", "owl", "fox", "goat", "hen", "frog", "crab", "mole", "yak"],
            ["What pet does {e} keep?", "Which animal is the pet of {e}?", "Name the pet of {e}."],
            "{e} keeps a {v}."),
}
_N_FACT_TEMPLATES = 3


def fact_table(n_facts: int, seed: int) -> list[dict]:
    """The world's knowledge: n_facts (entity, relation, value) triples, unique entities."""
    rng = random.Random(f"facts-{seed}")
    names: set[str] = set()
    facts = []
    relations = sorted(RELATIONS)
    while len(facts) < n_facts:
        name = (rng.choice(_SYL_A) + rng.choice(_SYL_A) + rng.choice(_SYL_B)).capitalize()
        if name in names:
            continue
        names.add(name)
        relation = relations[len(facts) % len(relations)]
        facts.append({"entity": name, "relation": relation, "value": rng.choice(RELATIONS[relation][0])})
    return facts


def fact_record(fact: dict, fact_index: int, template: int) -> tuple[str, str]:
    values, questions, answer_tpl = RELATIONS[fact["relation"]]
    prompt = questions[template].format(e=fact["entity"])
    return prompt, answer_tpl.format(e=fact["entity"], v=fact["value"])


# ---------------------------------------------------------------- format (verifiable instructions)
FORMAT_WORDS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "chair", "piano", "candle", "garden",
                "pepper", "rocket", "violet", "window", "forest", "button", "silver", "dragon", "marble", "ocean",
                "basket", "carrot", "donkey", "engine", "feather", "ginger", "hammer", "island", "jacket", "kettle",
                "ladder", "mirror", "needle", "orange", "pencil", "rabbit", "saddle", "tunnel", "wallet", "yellow"]
CASES = ("lower", "upper", "title")
WRAPS = ("none", "square", "paren", "quotes")
_WRAP_CHARS = {"none": ("", ""), "square": ("[", "]"), "paren": ("(", ")"), "quotes": ('"', '"')}
_COUNT_WORDS = {1: "once", 2: "twice", 3: "three times", 4: "four times"}


def format_prompt(word: str, case: str, wrap: str, count: int) -> str:
    parts = [f"Write the word {word} {_COUNT_WORDS[count]}"]
    if count > 1:
        parts.append("separated by spaces")
    parts.append({"lower": "in lowercase", "upper": "in capital letters",
                  "title": "with a capital first letter"}[case])
    if wrap != "none":
        parts.append({"square": "inside square brackets", "paren": "inside parentheses",
                      "quotes": "inside double quotes"}[wrap])
    return ", ".join(parts) + "."


def format_response(word: str, case: str, wrap: str, count: int) -> str:
    cased = {"lower": word.lower(), "upper": word.upper(), "title": word.capitalize()}[case]
    left, right = _WRAP_CHARS[wrap]
    return left + " ".join([cased] * count) + right


# ---------------------------------------------------------------- records
def _arith_record(rng, spec, split, ood: bool, min_ops: int):
    n_ops = rng.randint(min_ops, spec.ood_max_ops if ood else spec.max_ops)
    operands, ops = _sample_chain(rng, n_ops, spec)
    if ood:
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        verbs = [rng.choice(_GAIN if op == "+" else _LOSS) for op in ops]
        prompt = ood_prompt(operands, ops, name, thing, verbs)
        key = "ood|" + expression(operands, ops)
    else:
        prompt = arith_prompt(operands, ops)
        key = "arith|" + expression(operands, ops)
    meta = {"operands": operands, "ops": ops, "n_ops": n_ops}
    return key, prompt, str(chain_values(operands, ops)[-1]), meta


def make_items(family: str, n: int, split: str, seed: int = 0, world_cfg=None) -> list[dict]:
    """n problem records of `family` in `split`, deterministic in (family, split, seed, world_cfg).

    Ids are "<family>-<split>-<index:06d>"; within one call no problem repeats.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (expected one of {', '.join(FAMILIES)})")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    spec = arith_spec(world_cfg)
    rng = random.Random(f"{family}-{split}-{seed}")
    records: list[dict] = []
    seen: set[str] = set()

    if family == "facts":
        n_facts = world_cfg.n_facts if world_cfg is not None else 200
        facts = fact_table(n_facts, world_cfg.seed if world_cfg is not None else 0)
        keys = [(i, t) for i in range(len(facts)) for t in range(_N_FACT_TEMPLATES)
                if split == "pretrain" or in_split(f"fact|{i}|{t}", split, _FACT_BUCKETS)]
        if n > len(keys):
            raise ValueError(f"facts/{split}: asked for {n} items, the world has {len(keys)} "
                             f"(raise world.n_facts)")
        rng.shuffle(keys)
        for index, (i, t) in enumerate(keys[:n]):
            prompt, response = fact_record(facts[i], i, t)
            records.append({"id": f"facts-{split}-{index:06d}", "family": "facts", "prompt": prompt,
                            "answer": facts[i]["value"],
                            "meta": {**facts[i], "fact_index": i, "template": t, "response": response}})
        return records

    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise ValueError(f"{family}/{split}: asked for {n} items, the split holds fewer distinct problems")
        if family in ("arith", "arith_ood"):
            ood = family == "arith_ood"
            min_ops = (spec.ood_min_ops if ood else spec.min_ops)
            if split == "pretrain" and not ood:
                min_ops = spec.pretrain_min_ops
            key, prompt, answer, meta = _arith_record(rng, spec, split, ood, min_ops)
            if not ood and getattr(world_cfg, "prompt_template", "plain") == "paper":
                # The paper's math template around the problem, as the DAPO/MATH loaders build it.
                from spotlib.problems import math_prompt
                meta["problem"], prompt = prompt, math_prompt(prompt)
        else:
            word, case = rng.choice(FORMAT_WORDS), rng.choice(CASES)
            wrap, count = rng.choice(WRAPS), rng.randint(1, 4)
            key = f"format|{word}|{case}|{wrap}|{count}"
            prompt, answer = format_prompt(word, case, wrap, count), format_response(word, case, wrap, count)
            meta = {"word": word, "case": case, "wrap": wrap, "count": count}
        # Format items are few (40*3*4*4 = 1920 keys); only pretrain may repeat them.
        if not in_split(key, split):
            continue
        if key in seen and split != "pretrain":
            continue
        seen.add(key)
        records.append({"id": f"{family}-{split}-{len(records):06d}", "family": family,
                        "prompt": prompt, "answer": answer, "meta": meta})
    return records
