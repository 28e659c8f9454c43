"""AdamW parameter groups as the Hugging Face Trainer builds them.

The authors trained with the HF Trainer (through TRL's `DPOTrainer`), which decays every
weight except biases and normalisation weights. The rule below is transformers 5's
`Trainer.get_decay_parameter_names`: no decay inside `nn.LayerNorm` modules, nor for a
parameter whose lower-cased name matches one of `NO_DECAY_PATTERNS` (for Qwen3:
`input_layernorm`, `post_attention_layernorm`, `q_norm`, `k_norm` and the final `norm`).
"""
from __future__ import annotations

import re

from torch import nn

NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
_NO_DECAY = [re.compile(p) for p in NO_DECAY_PATTERNS]


def decay_parameter_names(model: nn.Module) -> set[str]:
    """Names (as `named_parameters` gives them) of the parameters weight decay applies to."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            continue
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if not any(p.search(full.lower()) for p in _NO_DECAY):
                names.add(full)
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups, decayed and not, over the trainable parameters (tied ones once)."""
    decay = decay_parameter_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
            {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
