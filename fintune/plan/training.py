"""--dry_run: what a run would do and need, from the model's config alone; and
the check that stops a CUDA run before loading when the plan does not fit.

Peak GPU memory allocated by PyTorch, per backend, for one GPU:
- weights: linear layers at 4 bits (NF4 with double quantization, ~4.13 bits a
  weight) or 16 bits. Embeddings and LM head stay 16-bit under Unsloth; PEFT's
  prepare_model_for_kbit_training casts them (and the norms) to fp32, and with
  them the residual stream, so every PEFT QLoRA activation is fp32.
- LoRA: fp32 weights and gradients plus the optimizer state (8 bytes a
  parameter for AdamW, 2 for 8-bit AdamW).
- activations, with gradient checkpointing: each layer's input kept (Unsloth
  offloads it to CPU RAM, so none stays on the GPU) and one layer recomputed at
  a time, RECOMPUTE x tokens x (hidden + intermediate) x activation bytes;
  without checkpointing every layer keeps that.
- logits: Unsloth's fused, chunked loss keeps them off the GPU; transformers
  holds tokens x vocab in fp32 about four times at the loss's backward
  (logits, log-softmax, their gradients).
To fit, a run needs that peak times the allocator's overhead (reserved /
allocated) plus the CUDA context.

The constants are fitted to peaks measured on an H100 (random weights with the
R1-Distill-Qwen configs, seq 4096, LoRA r=32 on the 7 projections, 8-bit AdamW,
gradient checkpointing): 14B in 4-bit through Unsloth 11.73 GiB allocated
(11.87 reserved), through transformers + PEFT QLoRA 27.33 (30.76 reserved);
7B 16-bit LoRA through Unsloth at batch 4 x 4096, 19.84 GiB. This model gives
11.63, 27.34 and 20.16 (tests/test_plan.py holds it within 15%). Unsloth's
recompute constant is shared by its two measurements; PEFT's rests on one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fintune.errors import UsageError

GiB = 2 ** 30
RECOMPUTE = {"unsloth": 7.6, "peft": 3.0}           # one layer's recompute working set, in units above
RESERVED_OVER_ALLOCATED = {"unsloth": 1.02, "peft": 1.13}
CUDA_CONTEXT = 0.5 * GiB
CARDS_GIB = (24, 48, 80)
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


def optimizer_bytes(optim: str) -> int:
    """Optimizer state per trainable parameter; 'auto' is 8-bit AdamW on CUDA."""
    return 2 if optim == "auto" or "8bit" in optim else 8


def memory(cfg, backend: str, max_seq_length: int | None = None) -> dict[str, float]:
    """Peak bytes allocated by PyTorch, by part (see the module docstring)."""
    s = Shapes.of(model_config(cfg.model.base_model))
    linear, other = s.params()
    lora = trainable(cfg, s)
    tokens = cfg.train.per_device_train_batch_size * (max_seq_length or cfg.model.max_seq_length)
    four_bit = cfg.model.load_in_4bit
    peft_kbit = backend == "peft" and four_bit       # prepare_model_for_kbit_training upcasts to fp32
    act_bytes = 4 if peft_kbit else 2
    recompute = RECOMPUTE[backend] * tokens * (s.h + s.inter) * act_bytes
    if cfg.train.gradient_checkpointing:
        kept = 0 if backend == "unsloth" else s.L * tokens * s.h * act_bytes
        activations = kept + recompute
    else:
        activations = s.L * recompute
    return {
        "weights": linear * (4.13 / 8 if four_bit else 2) + other * (4 if peft_kbit else 2),
        "LoRA + grads + optimizer": lora * (8 + optimizer_bytes(cfg.train.optim)),
        "activations": activations,
        "logits": 0 if backend == "unsloth" else 4 * tokens * s.V * 4,
    }


def trainable(cfg, s: Shapes) -> int:
    return cfg.lora.layer_count(s.L) * sum(cfg.lora.lora_r * (i + o) for name, (i, o) in s.linears().items()
                                           if name in cfg.lora.target_modules)


def needed(mem: dict[str, float], backend: str) -> float:
    """Bytes of free GPU memory a run needs: the allocator's overhead and the CUDA context."""
    return sum(mem.values()) * RESERVED_OVER_ALLOCATED[backend] + CUDA_CONTEXT


def estimate(cfg, backend: str) -> dict:
    s = Shapes.of(model_config(cfg.model.base_model))
    linear, other = s.params()
    lora = trainable(cfg, s)
    mem = memory(cfg, backend)
    total_params = linear + other
    disk = {
        "adapter": lora * 4,
        "checkpoints": cfg.train.save_total_limit * lora * 16,
        "merged FP16 checkpoint": total_params * 2,
        "F16 GGUF": total_params * 2,
        "Q8_0 GGUF": total_params * 8.5 / 8,
        "Q4_K_M GGUF": total_params * 4.85 / 8,
    }
    return {"model": cfg.model.base_model, "params": total_params, "trainable": lora,
            "tokens_per_step": cfg.train.per_device_train_batch_size * cfg.model.max_seq_length,
            "four_bit": cfg.model.load_in_4bit, "memory": mem, "needed": needed(mem, backend), "disk": disk}


def longest_fitting_seq(cfg, backend: str, free: float) -> int | None:
    """The largest max_seq_length (a multiple of 256) whose plan fits `free` bytes."""
    best, seq = None, 256
    while seq <= cfg.model.max_seq_length:
        if needed(memory(cfg, backend, seq), backend) <= free:
            best = seq
        seq += 256
    return best


def gpu_free_bytes() -> int:
    """Free memory on the current CUDA device, as the driver reports it."""
    import torch

    return int(torch.cuda.mem_get_info()[0])


def require_fit(cfg, backend: str) -> None:
    """Stop before any model is loaded when the backend about to run needs more
    GPU memory than is free, with the plan and what would make it fit."""
    free = gpu_free_bytes()
    plan = estimate(cfg, backend)
    if plan["needed"] <= free:
        return
    fixes = []
    if backend == "peft" and cfg.model.load_in_4bit:
        other = needed(memory(cfg, "unsloth"), "unsloth")
        fixes.append(f"install Unsloth (pip install -r requirements-gpu.txt): the same run needs about "
                     f"{other / GiB:.1f} GiB through it")
    seq = longest_fitting_seq(cfg, backend, free)
    fixes.append(f"lower --max_seq_length to {seq} (fits this GPU by the plan)" if seq else
                 "no max_seq_length fits: use a smaller model or a larger GPU")
    raise UsageError(f"not enough GPU memory: the {backend} backend needs about {plan['needed'] / GiB:.1f} GiB, "
                     f"{free / GiB:.1f} GiB free. Either {'; or '.join(fixes)}.\n"
                     + render(plan, backend, "the backend about to run"))


def render(plan: dict, backend: str, reason: str, free: float | None = None) -> str:
    lines = [f"model            {plan['model']} ({plan['params'] / 1e9:.2f}B parameters, "
             f"{'4-bit' if plan['four_bit'] else '16-bit'} base)",
             f"backend          {backend} ({reason})",
             f"trainable        {plan['trainable']:,} LoRA parameters "
             f"({100 * plan['trainable'] / plan['params']:.2f}%)",
             f"tokens per step  {plan['tokens_per_step']:,} (batch x max_seq_length)",
             "estimated peak GPU memory allocated:"]
    lines += [f"  {k:26s} {v / GiB:7.2f} GiB" for k, v in plan["memory"].items()]
    lines.append(f"  {'total':26s} {sum(plan['memory'].values()) / GiB:7.2f} GiB")
    lines.append(f"  {'needed free':26s} {plan['needed'] / GiB:7.2f} GiB (+ allocator overhead, CUDA context)")
    if free is not None:
        lines.append(f"  this GPU has {free / GiB:.1f} GiB free: "
                     + ("fits" if plan["needed"] <= free else "DOES NOT FIT, training would refuse to start"))
    lines.append("  fits a card of " + ", ".join(f"{c} GB: {'yes' if plan['needed'] <= c * GiB * 0.97 else 'no'}"
                                               for c in CARDS_GIB))
    lines.append("estimated disk:")
    lines += [f"  {k:26s} {v / GiB:7.2f} GiB" for k, v in plan["disk"].items()]
    lines.append(f"  {'total':26s} {sum(plan['disk'].values()) / GiB:7.2f} GiB")
    return "\n".join(lines)
