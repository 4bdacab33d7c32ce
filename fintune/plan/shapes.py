"""A model's shapes from its config alone (a local folder, the Hugging Face cache
read offline, a table of the profiles' architectures, then the hub), and the sizes
every stage's plan is built from: parameters, KV cache per token, GGUF files."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fintune.errors import UsageError
from fintune.gguf import bits_per_weight

GiB = 2 ** 30
# Architectures of the profiles' models, so a dry run needs no download.
KNOWN = {
    "r1-distill-qwen-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=False),
    "r1-distill-qwen-7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                               num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    "r1-distill-qwen-14b": dict(vocab_size=152064, hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                                num_attention_heads=40, num_key_value_heads=8, tie_word_embeddings=False),
    "r1-distill-qwen-32b": dict(vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                                num_attention_heads=40, num_key_value_heads=8, tie_word_embeddings=False),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
}


def model_config(name: str) -> dict:
    """config.json of a local checkpoint, else of the Hugging Face cache (offline),
    else a known architecture by name, else the hub's."""
    p = Path(name)
    if (p / "config.json").is_file():
        return json.loads((p / "config.json").read_text())
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(name, "config.json", local_files_only=True)).read_text())
    except Exception:  # noqa: BLE001 - not cached: the table, then the hub
        pass
    key = name.lower().replace("_", "-")
    for known, cfg in KNOWN.items():
        if known in key:
            return cfg
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(name, "config.json")).read_text())
    except Exception as e:
        raise UsageError(f"cannot read the config of {name} ({type(e).__name__}): not a local folder, not in the "
                         f"Hugging Face cache, hub unreachable; "
                         f"known offline: {', '.join(KNOWN)}") from None


@dataclass
class Shapes:
    V: int
    h: int
    inter: int
    L: int
    heads: int
    kv: int
    tied: bool

    @classmethod
    def of(cls, c: dict) -> "Shapes":
        return cls(c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
                   c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"]),
                   bool(c.get("tie_word_embeddings", False)))

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder block."""
        kv_dim = self.kv * (self.h // self.heads)
        return {"q_proj": (self.h, self.h), "k_proj": (self.h, kv_dim), "v_proj": (self.h, kv_dim),
                "o_proj": (self.h, self.h), "gate_proj": (self.h, self.inter), "up_proj": (self.h, self.inter),
                "down_proj": (self.inter, self.h)}

    def params(self) -> tuple[int, int]:
        """(linear-layer parameters, embedding + LM head + norm parameters)."""
        linear = self.L * sum(i * o for i, o in self.linears().values())
        embed = self.V * self.h * (1 if self.tied else 2)
        return linear, embed + (2 * self.L + 1) * self.h


def params(cfg) -> tuple[int, int]:
    """(linear-layer parameters, the rest) of the profile's base model."""
    return Shapes.of(model_config(cfg.model.base_model)).params()


def kv_bytes_per_token(s: Shapes, dtype_bytes: int = 2) -> int:
    return 2 * s.L * s.kv * (s.h // s.heads) * dtype_bytes


def gguf_bytes(cfg, qtype: str) -> float:
    """The size of an exported GGUF, by bits per weight of this model. Not the file at the
    export path: that may be another model's, left by an earlier run (the default job's
    SmolLM2 GGUFs made the 14B F16 plan 5.9 GB and kept it in the eval)."""
    return sum(params(cfg)) * bits_per_weight(qtype) / 8


def best_fit(candidates, fits):
    """The first of `candidates` (in order of preference) for which `fits` is true, or None:
    the one search behind every "lower X to Y (fits by the plan)" the plan suggests."""
    return next((c for c in candidates if fits(c)), None)
