"""Prompt/completion batches and the log-probabilities every objective is built on.

log π(y|x) is the **sum** of completion-token log-probs; the prompt (chat template
applied to the user text) is masked out. Which tokens make up the completion is the
`completion_format` (docs/training-format.md):

- `clean`: the sampling prompt (generation prompt, `enable_thinking=False`), then the
  raw completion text and one eos.
- `conversational`: what TRL 0.20's `DPOTrainer` built from conversational pairs
  (`prompt=[user]`, `chosen=[assistant]`): the prompt is the chat template with the
  generation prompt, the completion is template(user + assistant) minus that prompt (so
  it carries the template's end-of-turn marker and newline, and for Qwen3 the empty
  thinking block), each tokenized on its own, then eos appended again.
"""
from __future__ import annotations

import torch

from spotlib.models import chat_prompt

COMPLETION_FORMATS = ("conversational", "clean")


def conversational_texts(tokenizer, prompt: str, completion: str) -> tuple[str, str]:
    """(prompt text, completion text) as TRL 0.20's `apply_chat_template` split a pair.

    No template arguments (TRL 0.20 passed none: with Qwen3 the generation prompt is the
    thinking one and the empty thinking block lands in the completion); the prompt is the
    common prefix of the two renderings."""
    user = [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": completion}], tokenize=False)
    common = 0
    for a, b in zip(prompt_text, full):
        if a != b:
            break
        common += 1
    return full[:common], full[common:]


def completion_token_ids(tokenizer, prompt: str, completion: str, fmt: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids ending in eos) of one example in the given format."""
    eos = tokenizer.eos_token_id
    if fmt == "clean":
        p_text, c_text = chat_prompt(tokenizer, prompt), completion
    elif fmt == "conversational":
        p_text, c_text = conversational_texts(tokenizer, prompt, completion)
    else:
        raise ValueError(f"completion_format: unknown completion format {fmt!r} "
                         f"(expected one of {', '.join(COMPLETION_FORMATS)})")
    # Prompt and completion tokenized apart, as TRL 0.20's `tokenize_row` did.
    return (tokenizer(p_text, add_special_tokens=False)["input_ids"],
            tokenizer(c_text, add_special_tokens=False)["input_ids"] + [eos])


def build_completion_batch(tokenizer, prompts: list[str], completions: list[str], max_len: int,
                           max_prompt_len: int | None = None, *,
                           completion_format: str = "clean") -> dict[str, torch.Tensor]:
    """Right-padded batch of prompt + completion (ending in eos), with a completion mask.

    The prompt is cut from the left (keep the question's end) to `max_prompt_len`, the
    completion from the right so the whole fits in `max_len`.
    """
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows, masks = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        p_ids, c_ids = completion_token_ids(tokenizer, prompt, completion, completion_format)
        if max_prompt_len is not None and len(p_ids) > max_prompt_len:
            p_ids = p_ids[-max_prompt_len:]
        c_ids = c_ids[: max(1, max_len - len(p_ids))]
        rows.append(p_ids + c_ids)
        masks.append([0] * len(p_ids) + [1] * len(c_ids))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, mask) in enumerate(zip(rows, masks)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        completion_mask[i, : len(mask)] = torch.tensor(mask)
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion_mask}


def token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for t in 0..T-2, in fp32, shape [B, T-1]."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    return gather_logps(logits, input_ids[:, 1:])


def gather_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token log-softmax at the targets, in fp32, without materialising a full fp32 copy twice."""
    logits = logits.float()
    return torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed completion log-probs [B], completion token counts [B])."""
    logps = token_logps(model, batch["input_ids"], batch["attention_mask"])
    mask = batch["completion_mask"][:, 1:].to(logps.dtype)
    return (logps * mask).sum(-1), mask.sum(-1)
