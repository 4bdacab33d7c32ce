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

from fintune import machine
from fintune.errors import UsageError
from fintune.plan.shapes import GiB, Shapes, best_fit, model_config

# Training tokens/s measured per (base model, backend, 4-bit base): the H100 figures of
# the memory table of docs/benchmarks.md (random weights, full 4096-token rows), the CPU profile's of
# docs/benchmarks.md (2 cores, 406-601 tokens/s on hosts of one kind)
MEASURED_TOKENS_PER_S = {
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "unsloth", True): (4918, "an H100"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "peft", True): (985, "an H100"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "unsloth", False): (10692, "an H100"),
    ("embedded:smollm2-135m-instruct", "peft", False): (500, "2 CPU cores"),
}
RECOMPUTE = {"unsloth": 7.6, "peft": 3.0}           # one layer's recompute working set, in units above
RESERVED_OVER_ALLOCATED = {"unsloth": 1.02, "peft": 1.13}
CUDA_CONTEXT = 0.5 * GiB
CARDS_GIB = (24, 48, 80)


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
            "four_bit": cfg.model.load_in_4bit, "memory": mem, "needed": needed(mem, backend), "disk": disk,
            "time": training_time(cfg, backend),
            # the backend a 4-bit run on PEFT could have: Unsloth keeps logits and inputs off the GPU
            "unsloth_needed": needed(memory(cfg, "unsloth"), "unsloth")
            if backend == "peft" and cfg.model.load_in_4bit else None}


def training_time(cfg, backend: str) -> str:
    """The training's time from a measured tokens/s of this model and backend: steps x
    rows a step x the data stage's median row length (max_seq_length, an upper bound,
    before the data exists); or why there is none."""
    import json
    from pathlib import Path

    measured = MEASURED_TOKENS_PER_S.get((cfg.model.base_model, backend, cfg.model.load_in_4bit))
    if not measured:
        return f"not estimated: no measured tokens/s for {cfg.model.base_model} through {backend}"
    t = cfg.train
    stats_file = Path(cfg.data.data_dir) / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    rows_per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps
    if t.max_steps > 0:
        steps = t.max_steps
    elif stats.get("train"):
        steps = int(t.num_train_epochs * stats["train"] * (1 - t.val_fraction) / rows_per_step)
    else:
        return "not estimated: the step count comes from num_train_epochs and the data, not prepared yet"
    row = stats.get("tokens", {}).get("p50")
    tokens = steps * rows_per_step * (row or cfg.model.max_seq_length)
    rate, where = measured
    return (f"~{tokens / rate / 60:.0f} min: {steps} steps of {rows_per_step} rows of "
            + (f"{row} tokens (the data's median)" if row else f"up to {cfg.model.max_seq_length} tokens")
            + f" at {rate:,} tokens/s (measured on {where}; other machines differ)")


def lengths_down_from(longest: int, step: int = 256) -> range:
    """Sequence lengths to try, longest first: multiples of `step` up to `longest`."""
    return range(longest // step * step, step - 1, -step)


def longest_fitting_seq(cfg, backend: str, free: float) -> int | None:
    """The largest max_seq_length (a multiple of 256) whose plan fits `free` bytes."""
    return best_fit(lengths_down_from(cfg.model.max_seq_length),
                    lambda seq: needed(memory(cfg, backend, seq), backend) <= free)


def require_fit(cfg, backend: str) -> None:
    """Stop before any model is loaded when the backend about to run needs more
    GPU memory than is free, with the plan and what would make it fit."""
    free = machine.gpu_free_bytes()
    training = estimate(cfg, backend)
    if training["needed"] <= free:
        return
    fixes = []
    if backend == "peft" and cfg.model.load_in_4bit:
        other = needed(memory(cfg, "unsloth"), "unsloth")
        fixes.append(f"install Unsloth (pip install -r requirements-gpu.txt): the same run needs about "
                     f"{other / GiB:.1f} GiB through it")
    seq = longest_fitting_seq(cfg, backend, free)
    fixes.append(f"lower --max_seq_length to {seq} (fits this GPU by the plan)" if seq else
                 "no max_seq_length fits: use a smaller model or a larger GPU")
    raise UsageError(f"not enough GPU memory: the {backend} backend needs about {training['needed'] / GiB:.1f} "
                     f"GiB, {free / GiB:.1f} GiB free. Either {'; or '.join(fixes)}.\n"
                     + render_training(training, backend, "the backend about to run"))


def render_training(training: dict, backend: str, reason: str, free: float | None = None) -> str:
    """The training's plan as `fintune plan` prints it: parameters, GPU memory by part, disk."""
    lines = [f"model            {training['model']} ({training['params'] / 1e9:.2f}B parameters, "
             f"{'4-bit' if training['four_bit'] else '16-bit'} base)",
             f"backend          {backend} ({reason})",
             f"trainable        {training['trainable']:,} LoRA parameters "
             f"({100 * training['trainable'] / training['params']:.2f}%)",
             f"tokens per step  {training['tokens_per_step']:,} (batch x max_seq_length)",
             "estimated peak GPU memory allocated:"]
    lines += [f"  {k:26s} {v / GiB:7.2f} GiB" for k, v in training["memory"].items()]
    lines.append(f"  {'total':26s} {sum(training['memory'].values()) / GiB:7.2f} GiB")
    lines.append(f"  {'needed free':26s} {training['needed'] / GiB:7.2f} GiB (+ allocator overhead, CUDA context)")
    if free is not None:
        lines.append(f"  this GPU has {free / GiB:.1f} GiB free: "
                     + ("fits" if training["needed"] <= free else "DOES NOT FIT, training would refuse to start"))
    lines.append("  fits a card of " + ", ".join(f"{c} GB: {'yes' if training['needed'] <= c * GiB * 0.97 else 'no'}"
                                               for c in CARDS_GIB))
    if training.get("unsloth_needed"):
        other = training["unsloth_needed"]
        fits = [f"{c} GB" for c in CARDS_GIB if other <= c * GiB * 0.97]
        lines.append(f"  the unsloth backend needs about {other / GiB:.1f} GiB"
                     + (f" (fits a card of {fits[0]})" if fits else "")
                     + ": install requirements-gpu.txt on a CUDA machine")
    lines.append(f"training time    {training['time']}")
    lines.append("estimated disk:")
    lines += [f"  {k:26s} {v / GiB:7.2f} GiB" for k, v in training["disk"].items()]
    lines.append(f"  {'total':26s} {sum(training['disk'].values()) / GiB:7.2f} GiB")
    return "\n".join(lines)
