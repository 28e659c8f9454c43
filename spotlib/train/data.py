"""Training examples per run: load stage 03's files, tokenize once, collate micro-batches.

An example is `{id, prompt, chosen, rejected}` (`rejected` is None for SFT-type data).
Sequences are tokenized once by `spotlib.tokens.build_completion_batch` (chat template,
completion + eos in the profile's `completion_format`, prompt masked) and kept unpadded;
a micro-batch is padded to its own longest row only.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from spotlib.io import DataError, read_jsonl
from spotlib.tokens import build_completion_batch

from .runspec import DATA_FILES, PAIRS_FILE, RunSpec


def load_examples(filter_dir: Path, run: RunSpec) -> list[dict]:
    """The run's examples in file order; pair runs @direct swap y⁺ for the direct solution."""
    if not run.info.pairs:
        path = filter_dir / DATA_FILES[run.data]
        return [{"id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r.get("rejected")}
                for r in read_jsonl(path, required=("id", "prompt", "chosen"))]
    path = filter_dir / PAIRS_FILE
    pairs = read_jsonl(path, required=("id", "prompt", "chosen", "rejected"))
    for lineno, pair in enumerate(pairs, start=1):
        if not pair["rejected"]:
            raise DataError(f"{path}: record {lineno}: pair {pair['id']!r} has no rejected response")
    if run.data == "rectified":
        return [{"id": p["id"], "prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                for p in pairs]
    direct_path = filter_dir / DATA_FILES[run.data]
    direct = {r["id"]: r["chosen"] for r in read_jsonl(direct_path, required=("id", "chosen"))}
    return [{"id": p["id"], "prompt": p["prompt"], "chosen": direct[p["id"]], "rejected": p["rejected"]}
            for p in pairs if p["id"] in direct]


def examples_hash(examples: list[dict]) -> str:
    blob = json.dumps([[e["id"], e["prompt"], e["chosen"], e["rejected"]] for e in examples])
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Tokenized:
    """Unpadded token ids of each sequence and where its completion starts."""
    ids: list[list[int]]
    prompt_lens: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    def num_tokens(self, rows) -> int:
        return sum(len(self.ids[i]) for i in rows)


def tokenize(tokenizer, prompts: list[str], completions: list[str], max_len: int,
             max_prompt_len: int | None, chunk: int = 256, *, completion_format: str = "clean") -> Tokenized:
    ids, prompt_lens = [], []
    for start in range(0, len(prompts), chunk):
        batch = build_completion_batch(tokenizer, prompts[start:start + chunk],
                                       completions[start:start + chunk], max_len, max_prompt_len,
                                       completion_format=completion_format)
        for row, attn, comp in zip(batch["input_ids"], batch["attention_mask"], batch["completion_mask"]):
            length = int(attn.sum())
            ids.append(row[:length].tolist())
            prompt_lens.append(int(length - comp.sum()))
    return Tokenized(ids, prompt_lens)


def collate(tok: Tokenized, rows: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / completion_mask for the given rows."""
    width = max(len(tok.ids[i]) for i in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    completion = torch.zeros((len(rows), width), dtype=torch.long)
    for k, i in enumerate(rows):
        seq = tok.ids[i]
        input_ids[k, : len(seq)] = torch.tensor(seq)
        attention[k, : len(seq)] = 1
        completion[k, tok.prompt_lens[i]: len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}


@dataclass
class TrainData:
    """A run's examples, tokenized: chosen always, rejected for pair objectives."""
    examples: list[dict]
    chosen: Tokenized
    rejected: Tokenized | None

    def __len__(self) -> int:
        return len(self.examples)


def prepare(tokenizer, examples: list[dict], max_len: int, max_prompt_len: int | None,
            with_rejected: bool, *, completion_format: str = "clean") -> TrainData:
    prompts = [e["prompt"] for e in examples]
    chosen = tokenize(tokenizer, prompts, [e["chosen"] for e in examples], max_len, max_prompt_len,
                      completion_format=completion_format)
    rejected = None
    if with_rejected:
        rejected = tokenize(tokenizer, prompts, [e["rejected"] for e in examples], max_len, max_prompt_len,
                            completion_format=completion_format)
    return TrainData(examples, chosen, rejected)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The seeded permutation of one epoch: the same on every process and after a resume."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def step_rows(n: int, seed: int, step: int, effective_batch: int) -> list[int]:
    """Example indices of optimiser step `step` (0-based), walking seeded epochs in order."""
    start = step * effective_batch
    rows = []
    while len(rows) < effective_batch:
        epoch, offset = divmod(start + len(rows), n)
        order = epoch_order(n, seed, epoch)
        rows.extend(order[offset: offset + effective_batch - len(rows)])
    return rows
