"""Helpers shared by the GRPO tests: a micro model, a toy grader, fixed rollouts."""
from __future__ import annotations

import random

import torch


def micro_model(path):
    """A 1-layer, character-level Qwen3 with a chat template: random, so rewards start low."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = sorted(set("userassistant\nabcde xyz0123456789"))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(specials)
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  chat_template=template)
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=64,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    Qwen3ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path



def says_a(records, responses):
    """Toy grader: the response contains the letter 'a'."""
    return ["a" in response for response in responses]


def toy_items(n):
    return [{"id": f"toy-{i}", "family": "toy", "prompt": f"x{i}", "answer": "a", "meta": {}} for i in range(n)]


class FixedRollouts:
    """A rollout engine whose responses depend only on (prompt id, rollout index, step seed):
    the same rollouts whichever process samples a prompt. Records when it is released."""

    def __init__(self):
        self.released = 0

    def sample(self, policy, tokenizer, prompts, *, n, seed, ids, max_new_tokens, **_):
        out = []
        for item_id in ids:
            group = []
            for j in range(n):
                rng = random.Random(f"{item_id}|{j}|{seed}")
                group.append("".join(rng.choice("abcde xyz") for _ in range(rng.randint(1, 6))))
            out.append(group)
        # one character is one token of the micro tokenizer: cut where the engine's budget ends
        self.finish_reasons = [["length" if len(t) >= max_new_tokens else "stop" for t in g] for g in out]
        return out

    def release(self):
        self.released += 1

