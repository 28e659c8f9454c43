"""A model's shape as the memory plan counts it: layers, widths, heads, vocabulary, parameters, and
the bytes per token of its activations and KV cache; read from a local or cached config.json, or
from the shapes of the paper's models known here (so a dry run needs no download).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spotlib.config import ConfigError, Profile

BF16, FP32 = 2, 4   # bytes per element


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tie_word_embeddings: bool
    max_position: int = 40960

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def params(self) -> int:
        """Qwen3 parameters: embeddings, per layer q/k/v/o + q/k norms + SwiGLU + 2 norms, final norm, head."""
        h, hq, hkv = self.hidden, self.q_width, self.kv_width
        attention = h * hq + 2 * h * hkv + hq * h + 2 * self.head_dim
        mlp = 3 * h * self.intermediate
        per_layer = attention + mlp + 2 * h
        embed = self.vocab * h
        head = 0 if self.tie_word_embeddings else self.vocab * h
        return embed + self.layers * per_layer + h + head

    def activation_bytes_per_token_layer(self) -> int:
        h, hq, hkv, i = self.hidden, self.q_width, self.kv_width, self.intermediate
        return BF16 * (4 * h + 3 * hq + 3 * hkv + 4 * i) + FP32 * (2 * h + hq + hkv)

    def final_norm_bytes_per_token(self) -> int:
        return (FP32 + BF16 + BF16) * self.hidden

    def checkpointed_bytes_per_token_layer(self) -> int:
        return BF16 * self.hidden

    def kv_bytes_per_token(self) -> int:
        return 2 * self.kv_heads * self.head_dim * self.layers * BF16


KNOWN_SHAPES = {
    # Hugging Face config.json of each model (architectures Qwen3ForCausalLM).
    "Qwen/Qwen3-8B": ModelShape(hidden=4096, layers=36, heads=32, kv_heads=8, head_dim=128,
                                intermediate=12288, vocab=151936, tie_word_embeddings=False),
    "Qwen/Qwen3-0.6B": ModelShape(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128,
                                  intermediate=3072, vocab=151936, tie_word_embeddings=True),
}


def shape_from_config(config: dict, source: str) -> ModelShape:
    try:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return ModelShape(hidden=hidden, layers=int(config["num_hidden_layers"]), heads=heads,
                          kv_heads=int(config.get("num_key_value_heads") or heads),
                          head_dim=int(config.get("head_dim") or hidden // heads),
                          intermediate=int(config["intermediate_size"]), vocab=int(config["vocab_size"]),
                          tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                          max_position=int(config.get("max_position_embeddings", 40960)))
    except KeyError as exc:
        raise ConfigError(f"{source}: missing {exc.args[0]!r}, needed for the memory plan") from None


def cached_hub_file(repo_id: str, filename: str) -> str | None:
    """A file of a Hub model already in the local cache (no network), else None."""
    if repo_id.count("/") != 1 or Path(repo_id).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # noqa: BLE001 - an unreadable cache is an empty one
        return None
    return found if isinstance(found, str) else None


def model_shape(profile: Profile) -> ModelShape:
    """The student's shape: the tiny world's settings, a local or cached config.json, or a known model."""
    name = profile.model.name_or_path
    if name == "world":
        w = profile.world
        return ModelShape(hidden=w.hidden_size, layers=w.num_layers, heads=w.num_heads, kv_heads=w.num_kv_heads,
                          head_dim=w.hidden_size // w.num_heads, intermediate=w.intermediate_size,
                          vocab=w.vocab_size, tie_word_embeddings=True, max_position=w.max_position)
    config_file = Path(name) / "config.json"
    if not config_file.is_file():
        config_file = Path(cached_hub_file(name, "config.json") or config_file)
    if config_file.is_file():
        return shape_from_config(json.loads(config_file.read_text()), str(config_file))
    if name in KNOWN_SHAPES:
        return KNOWN_SHAPES[name]
    raise ConfigError(f"{profile.source}: key model.name_or_path: {name!r} has no local config.json and is not "
                      f"one of the known shapes ({', '.join(KNOWN_SHAPES)}): cannot plan its memory")
