"""--dry_run: what a run would do and need, from the model's config alone.

Memory is an estimate for one GPU at the configured settings:
- weights: linear layers at 4 bits (NF4 with double quantization, ~4.13 bits
  a weight) or 16 bits; embeddings and LM head stay at 16 bits either way;
- LoRA: weights and gradients in fp32 plus AdamW's two fp32 moments (16 bytes
  per trainable parameter);
- activations: with gradient checkpointing, each layer's input is kept
  (2 bytes x tokens x hidden) and one layer is recomputed at a time
  (~34 x tokens x hidden bytes, memory-efficient attention, no score matrix);
  without it every layer keeps its activations;
- logits: tokens x vocab in 16 bits, plus an fp32 copy for the loss unless the
  backend fuses the loss (Unsloth does);
- CUDA context and allocator slack: a flat 1 GiB.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
    """config.json of a local checkpoint, else a known architecture by name."""
    p = Path(name)
    if (p / "config.json").is_file():
        return json.loads((p / "config.json").read_text())
    key = name.lower().replace("_", "-")
    for known, cfg in KNOWN.items():
        if known in key:
            return cfg
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(name, "config.json")).read_text())
    except Exception as e:
        raise ValueError(f"--dry_run: cannot read the config of {name} ({type(e).__name__}); "
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
        """(linear-layer parameters, embedding + LM head parameters)."""
        linear = self.L * sum(i * o for i, o in self.linears().values())
        embed = self.V * self.h * (1 if self.tied else 2)
        return linear, embed + (2 * self.L + 1) * self.h  # + RMSNorm weights


def estimate(cfg, backend: str) -> dict:
    s = Shapes.of(model_config(cfg.model.base_model))
    linear, other = s.params()
    lora = s.L * sum(cfg.lora.lora_r * (i + o) for name, (i, o) in s.linears().items()
                     if name in cfg.lora.target_modules)
    four_bit = cfg.model.load_in_4bit
    tokens = cfg.train.per_device_train_batch_size * cfg.model.max_seq_length
    fused_loss = backend == "unsloth"
    act_per_layer = 34 * tokens * s.h
    activations = (2 * tokens * s.h * s.L + act_per_layer) if cfg.train.gradient_checkpointing \
        else act_per_layer * s.L
    mem = {
        "weights": linear * (4.13 / 8 if four_bit else 2) + other * 2,
        "lora + grads + AdamW": lora * 16,
        "activations": activations,
        "logits": tokens * s.V * (2 if fused_loss else 6),
        "CUDA context, allocator": GiB,
    }
    total_params = linear + other
    disk = {
        "adapter": lora * 4,
        "checkpoints": cfg.train.save_total_limit * lora * 16,
        "merged FP16 checkpoint": total_params * 2,
        "F16 GGUF": total_params * 2,
        "Q8_0 GGUF": total_params * 8.5 / 8,
        "Q4_K_M GGUF": total_params * 4.85 / 8,
    }
    return {"model": cfg.model.base_model, "params": total_params, "trainable": lora, "tokens_per_step": tokens,
            "four_bit": four_bit, "memory": mem, "disk": disk}


def render(plan: dict, backend: str, reason: str) -> str:
    lines = [f"model            {plan['model']} ({plan['params'] / 1e9:.2f}B parameters, "
             f"{'4-bit' if plan['four_bit'] else '16-bit'} base)",
             f"backend          {backend} ({reason})",
             f"trainable        {plan['trainable']:,} LoRA parameters "
             f"({100 * plan['trainable'] / plan['params']:.2f}%)",
             f"tokens per step  {plan['tokens_per_step']:,} (batch x max_seq_length)",
             "estimated GPU memory:"]
    lines += [f"  {k:26s} {v / GiB:7.2f} GiB" for k, v in plan["memory"].items()]
    lines.append(f"  {'total':26s} {sum(plan['memory'].values()) / GiB:7.2f} GiB")
    lines.append("estimated disk:")
    lines += [f"  {k:26s} {v / GiB:7.2f} GiB" for k, v in plan["disk"].items()]
    lines.append(f"  {'total':26s} {sum(plan['disk'].values()) / GiB:7.2f} GiB")
    return "\n".join(lines)
