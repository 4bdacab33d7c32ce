"""Training throughput: this project's training stage against TRL SFTTrainer's defaults.

    python bench/train_throughput.py [--steps 10] [--config configs/cpu-smollm2.yaml]

Both runs train a fresh LoRA (same rank, targets, learning rate, seed, batch
size) on the embedded default base for the same number of steps, their batches
drawn from the same pool of tokenized examples (the generated curriculum, loss
on the assistant reply only), one after the other in this process:

- "fintune": the training stage as it runs: its precision choice (measured on
  this CPU), base weights loaded in that precision, its SFTConfig
  (length-grouped batches, no gradient checkpointing) and its trainer class
  (on one CPU process, the label-positions loss of fintune/train/loss.py, and
  LoRA inputs left in bf16 under autocast);
- "TRL defaults": SFTTrainer given the model's path and the same LoraConfig, with
  SFTConfig left at its defaults but for run length, batch size, learning rate
  and seed: fp32 weights with bf16 autocast, gradient checkpointing, random
  batches padded to their longest row, TRL's chunked_nll loss.

With train.torch_compile on (the CPU profile's setting) the decoder layers
are compiled as the stage compiles them: the first step, which compiles them,
is printed on its own; a recompilation later (with SDPA attention, the first
batch whose padding differs in kind from the first one's) counts in tokens/s.
`--no_compile` runs fintune eager.

Tokens/s counts trained (non-padding) tokens from the end of the first step to
the end of the last, so start-up and the first step's kernel selection are left
out of both. MFU is achieved model FLOP/s over the matmul peak of the precision
fintune chose, measured here at a training-shaped matmul (2048 x 576 x 1536)
and at 1024^3, the larger taken. Model FLOPs per trained token: 2 x the frozen
linear parameters (forward) + 2 x those of the layers the backward passes
through (input gradients: from the lowest layer with LoRA up) + 6 x the LoRA
parameters + the attention scores, + 4 x vocab x hidden for the LM head on the
label tokens; gradient checkpointing's recomputation is not counted as
useful work. Each line also gives the share of the batches' positions that
were padding: what padding-free or packed batches could save at most. The last
line is `ratio: fintune tokens/s / TRL-defaults tokens/s`.
`--trl_fp32` turns TRL's bf16 off (its best case on a CPU without bf16
instructions, where bf16 matmuls run ~100x slower than fp32); an AVX2-only CPU
can be imitated on a newer one with ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def examples(cfg, tokenizer, n: int) -> list[dict]:
    from fintune.data import quant
    from fintune.data.prepare import problem_to_chat
    from fintune.templates import detect
    from fintune.train.trainer import build_dataset

    rows = [problem_to_chat(p, i) for i, p in enumerate(quant.generate_set(n, seed=7))]
    out, _ = build_dataset(rows, tokenizer, detect(tokenizer.chat_template), cfg.model.max_seq_length)
    return out


def step_clock():
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        marks: list = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    return Clock()


def count_padding(trainer, clock) -> None:
    """Count, on `clock`, the batch positions the collator fills and how many of them
    are padding: the share that padding-free or packed batches could save at most."""
    collate = trainer.data_collator
    clock.positions = clock.pads = 0

    def counted(rows):
        batch = collate(rows)
        clock.positions += batch["input_ids"].numel()
        if "attention_mask" in batch:
            clock.pads += int((batch["attention_mask"] == 0).sum())
        return batch

    trainer.data_collator = counted


def steady_rate(marks) -> tuple[float, int, float]:
    """(tokens/s after the first step, tokens, seconds)."""
    (t0, k0), (t1, k1) = marks[0], marks[-1]
    return (k1 - k0) / (t1 - t0), k1 - k0, t1 - t0


def run_fintune(cfg, model_path, data, precision: str, tmp: str):
    from datasets import Dataset

    from fintune.train.backends import compile_layers, load_peft
    from fintune.train.loss import lora_inputs_uncast, sft_trainer_class
    from fintune.train.trainer import sft_args

    model, tokenizer = load_peft(cfg, model_path, on_cuda=False, precision=precision)
    if cfg.train.torch_compile:
        compile_layers(model)
    args = sft_args(cfg, precision, on_cuda=False, has_val=False)
    args.output_dir, args.report_to, args.save_strategy = tmp, [], "no"
    clock = step_clock()
    trainer = sft_trainer_class(lean_loss=True)(model=model, args=args, processing_class=tokenizer,
                                                 train_dataset=Dataset.from_list(data), callbacks=[clock])
    count_padding(trainer, clock)
    with lora_inputs_uncast(model, precision == "bf16"):
        trainer.train()
    why = "compiles the layers; " if cfg.train.torch_compile else ""
    print(f"fintune first step {clock.marks[0][0] - clock.begin:.1f} s (torch_compile={cfg.train.torch_compile}; "
          f"{why}not in the tokens/s below)", flush=True)
    return clock, args


def run_trl_defaults(cfg, model_path, data, tmp: str, fp32: bool = False):
    from types import SimpleNamespace

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoConfig, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from fintune.train.backends import lora_layers

    t = cfg.train
    args = SFTConfig(output_dir=tmp, max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
                     learning_rate=t.learning_rate, seed=t.train_seed, use_cpu=True, report_to=[],
                     save_strategy="no", logging_steps=t.max_steps, include_num_input_tokens_seen="non_padding",
                     **({"bf16": False} if fp32 else {}))
    # the same LoRA as fintune's (rank, targets, layers): the ratio compares the trainers
    layers = lora_layers(cfg, SimpleNamespace(config=AutoConfig.from_pretrained(model_path)))
    lora = LoraConfig(r=cfg.lora.lora_r, lora_alpha=cfg.lora.lora_alpha, lora_dropout=cfg.lora.lora_dropout,
                      target_modules=list(cfg.lora.target_modules), layers_to_transform=layers, task_type="CAUSAL_LM")
    clock = step_clock()
    trainer = SFTTrainer(model=model_path, args=args, peft_config=lora,
                         processing_class=AutoTokenizer.from_pretrained(model_path),
                         train_dataset=Dataset.from_list(data), callbacks=[clock])
    count_padding(trainer, clock)
    trainer.train()
    return clock, args


def matmul_peak(precision: str) -> float:
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    best = 0.0
    for m, k, n in ((2048, 576, 1536), (1024, 1024, 1024)):
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        a @ b
        fastest = float("inf")
        for _ in range(10):
            start = time.perf_counter()
            a @ b
            fastest = min(fastest, time.perf_counter() - start)
        best = max(best, 2 * m * k * n / fastest)
    return best


def flops_per_token(cfg, model_path: str, data: list[dict]) -> float:
    from fintune.plan.shapes import Shapes, model_config
    from fintune.plan.training import trainable

    s = Shapes.of(model_config(model_path))
    linear, _ = s.params()
    tokens = sum(len(d["input_ids"]) for d in data)
    label_share = sum(sum(l != -100 for l in d["labels"]) for d in data) / tokens
    mean_len = tokens / len(data)
    # backward runs through the layers from the lowest one with LoRA up, not below it
    grad_share = cfg.lora.layer_count(s.L) / s.L
    attention = (2 + 4 * grad_share) * s.L * s.h * mean_len  # causal scores and weighted sum
    return (2 + 2 * grad_share) * linear + 6 * trainable(cfg, s) + attention + 4 * s.V * s.h * label_share


def main(argv=None) -> int:
    from fintune.config import build_config, load_yaml
    from fintune.models import resolve_base_model
    from fintune.train.trainer import pick_precision

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "cpu-smollm2.yaml"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--pool", type=int, default=512, help="examples the batches are drawn from")
    p.add_argument("--no_compile", action="store_true", help="fintune with train.torch_compile off")
    p.add_argument("--trl_fp32", action="store_true",
                   help="TRL with bf16 off: on a CPU without bf16 instructions its bf16 default is too slow to time")
    args = p.parse_args(argv)
    cfg = build_config(load_yaml(args.config), {"max_steps": args.steps, "val_fraction": 0.0,
                                                   **({"torch_compile": False} if args.no_compile else {})})
    model_path = resolve_base_model(cfg.model.base_model)
    from transformers import AutoTokenizer

    # a pool like the real run's (2,000 rows), so length grouping has rows to group; both runs see the same one
    data = examples(cfg, AutoTokenizer.from_pretrained(model_path), args.pool)
    precision = pick_precision(cfg, on_cuda=False)
    peak = matmul_peak(precision)
    per_token = flops_per_token(cfg, model_path, data)
    print(f"{model_path}: {args.steps} steps, batch {cfg.train.per_device_train_batch_size}, drawn from {len(data)} examples; "
          f"precision chosen by the stage: {precision}; {precision} matmul peak {peak / 1e9:.0f} GFLOP/s", flush=True)
    rates = {}
    for name, run in (("fintune", lambda tmp: run_fintune(cfg, model_path, data, precision, tmp)),
                      ("TRL defaults", lambda tmp: run_trl_defaults(cfg, model_path, data, tmp, args.trl_fp32))):
        with tempfile.TemporaryDirectory() as tmp:
            clock, targs = run(tmp)
        rate, tokens, seconds = steady_rate(clock.marks)
        rates[name] = rate
        print(f"{name:13s} {tokens:6d} tokens in {seconds:6.1f} s = {rate:6.1f} tokens/s, MFU {100 * rate * per_token / peak:4.1f}% "
              f"(bf16={targs.bf16}, gradient_checkpointing={targs.gradient_checkpointing}, "
              f"sampling={getattr(targs, 'train_sampling_strategy', '?')}, loss="
              f"{'label positions' if name == 'fintune' else targs.loss_type}; "
              f"padding {100 * clock.pads / max(clock.positions, 1):.1f}% of batch positions)", flush=True)
    print(f"ratio: {rates['fintune'] / rates['TRL defaults']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
