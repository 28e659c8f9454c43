"""Training examples per run: load stage 03's files, tokenize once, collate micro-batches.

An example is `{id, prompt, chosen, rejected}` (`rejected` is None for SFT-type data).
Sequences are tokenized once by `spotlib.tokens.build_completion_batch` (chat template,
completion + eos in the profile's `completion_format`, prompt masked) and kept unpadded;
a micro-batch is padded to its own longest row only.

A run with `+edit_only` scores y⁻ on its **edited tokens** only: those outside the longest
common subsequence (LCS) of y⁻'s and y⁺'s completion tokens (`edit_mask`). Its examples carry
`rejected_scope: "edit"` (so their hash, and every cache keyed by it, differs from the
plain run's), and `prepare` gives y⁻ a per-token score mask that `collate` writes into the
completion mask: the policy's and the reference's log-prob sums then cover the same tokens.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from spotlib.io import DataError, read_stage_output
from spotlib.tokens import build_completion_batch

from .runspec import DATA_FILES, RunSpec, pairs_file


def load_examples(filter_dir: Path, run: RunSpec) -> list[dict]:
    """The run's examples in file order; pair runs @direct swap y⁺ for the direct solution."""
    examples = _load_examples(filter_dir, run)
    if run.rejected_scope != "all":
        examples = [dict(e, rejected_scope=run.rejected_scope) for e in examples]
    return examples


def _load_examples(filter_dir: Path, run: RunSpec) -> list[dict]:
    if not run.info.pairs:
        path = filter_dir / DATA_FILES[run.data]
        return [{"id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r.get("rejected")}
                for r in read_stage_output(path, "03_filter", required=("id", "prompt", "chosen"))]
    path = filter_dir / pairs_file(run)
    pairs = read_stage_output(path, "03_filter", required=("id", "prompt", "chosen", "rejected"))
    for lineno, pair in enumerate(pairs, start=1):
        if not pair["rejected"]:
            raise DataError(f"{path}: record {lineno}: pair {pair['id']!r} has no rejected response")
    if run.data in ("rectified", "unfiltered"):
        return [{"id": p["id"], "prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                for p in pairs]
    direct_path = filter_dir / DATA_FILES[run.data]
    direct = {r["id"]: r["chosen"] for r in read_stage_output(direct_path, "03_filter", required=("id", "chosen"))}
    return [{"id": p["id"], "prompt": p["prompt"], "chosen": direct[p["id"]], "rejected": p["rejected"]}
            for p in pairs if p["id"] in direct]


def examples_hash(examples: list[dict]) -> str:
    blob = json.dumps([[e["id"], e["prompt"], e["chosen"], e["rejected"]]
                       + ([e["rejected_scope"]] if e.get("rejected_scope", "all") != "all" else [])
                       for e in examples])
    return hashlib.sha256(blob.encode()).hexdigest()


def lcs_keep(a: list[int], b: list[int]) -> list[bool]:
    """For each token of `a`: whether it belongs to a longest common subsequence with `b`.

    The common prefix and suffix belong to some LCS, so only the middle is solved by dynamic
    programming (an edit is local: the middle is short). Among several LCSs: the common
    prefix and suffix, and in the middle the tokens of `a` matched as late as possible (a
    fixed rule: the same mask every time)."""
    n, m = len(a), len(b)
    start = 0
    while start < min(n, m) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(n, m) - start and a[n - 1 - end] == b[m - 1 - end]:
        end += 1
    mid_a, mid_b = a[start:n - end], b[start:m - end]
    # table[i][j] = LCS length of mid_a[i:] and mid_b[j:]
    table = [[0] * (len(mid_b) + 1) for _ in range(len(mid_a) + 1)]
    for i in range(len(mid_a) - 1, -1, -1):
        row, below = table[i], table[i + 1]
        for j in range(len(mid_b) - 1, -1, -1):
            row[j] = below[j + 1] + 1 if mid_a[i] == mid_b[j] else max(below[j], row[j + 1])
    keep_mid = [False] * len(mid_a)
    i = j = 0
    while i < len(mid_a) and j < len(mid_b):
        if mid_a[i] == mid_b[j] and table[i][j] == table[i + 1][j + 1] + 1 and table[i + 1][j] < table[i][j]:
            keep_mid[i] = True
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return [True] * start + keep_mid + [True] * end


def edit_mask(rejected: list[int], chosen: list[int]) -> list[int]:
    """1 for each token of y⁻ outside the LCS with y⁺ (the edited span), else 0."""
    return [0 if kept else 1 for kept in lcs_keep(rejected, chosen)]


@dataclass
class Tokenized:
    """Unpadded token ids of each sequence and where its completion starts.

    `score_masks` (optional): per sequence, 0/1 over its completion tokens; only the 1s
    count in its log-prob sum (`collate` puts them in the completion mask)."""
    ids: list[list[int]]
    prompt_lens: list[int]
    score_masks: list[list[int]] | None = None

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
        if tok.score_masks is None:
            completion[k, tok.prompt_lens[i]: len(seq)] = 1
        else:
            completion[k, tok.prompt_lens[i]: len(seq)] = torch.tensor(tok.score_masks[i], dtype=torch.long)
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
        scopes = {e.get("rejected_scope", "all") for e in examples}
        if scopes - {"all", "edit"} or len(scopes) > 1:
            raise ValueError(f"examples: rejected_scope must be one of all, edit for every example, got {sorted(scopes)}")
        if scopes == {"edit"}:
            rejected = edit_scored(rejected, chosen)
    return TrainData(examples, chosen, rejected)


def completion_ids(tok: Tokenized, i: int) -> list[int]:
    return tok.ids[i][tok.prompt_lens[i]:]


def edit_scored(rejected: Tokenized, chosen: Tokenized) -> Tokenized:
    """y⁻ scored on its edited tokens only (outside the LCS with the paired y⁺)."""
    masks = [edit_mask(completion_ids(rejected, i), completion_ids(chosen, i)) for i in range(len(rejected))]
    return Tokenized(rejected.ids, rejected.prompt_lens, masks)


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
