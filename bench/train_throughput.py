"""Training throughput: this project's settings against TRL SFTTrainer's defaults.

    python bench/train_throughput.py [--steps 6] [--batch_size 2]

Both runs train a fresh LoRA (same rank, targets, learning rate, seed) on the
embedded default base, for the same number of steps, on the same tokenized
examples (the generated curriculum, with the assistant-only loss mask), in this
one process:

- "fintune": the training stage's own SFTConfig for the machine's profile
  (precision chosen by measurement, gradient checkpointing as configured,
  length-grouped batches);
- "TRL defaults": SFTConfig with only the run length, batch size, learning
  rate and seed set, i.e. TRL's defaults for the rest (bf16 autocast on,
  gradient checkpointing on, random batches padded to their longest row, no
  packing).

It prints trained (non-padding) tokens per second and peak RSS growth for
each, and last `ratio: fintune tokens/s / TRL-defaults tokens/s`. The second
run's RSS growth is understated: memory the first run freed stays mapped to
the process, so only the first figure is a clean one.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    """Current resident set size (ru_maxrss is a high-water mark for the whole
    process, so it cannot tell the second run's peak from the first's)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class PeakRSS:
    """Samples RSS every 50 ms while the block runs; .growth = peak - start."""

    def __enter__(self):
        import threading

        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.growth = self.peak - self.start


def examples(cfg, tokenizer, n: int) -> list[dict]:
    from fintune.data import quant
    from fintune.data.prepare import problem_to_chat
    from fintune.templates import detect
    from fintune.train.trainer import build_dataset

    rows = [problem_to_chat(p, i) for i, p in enumerate(quant.generate_set(n, seed=7))]
    out, _ = build_dataset(rows, tokenizer, detect(tokenizer.chat_template), cfg.model.max_seq_length)
    return out


def train_once(name: str, cfg, model_path: str, data: list[dict], make_args) -> dict:
    from datasets import Dataset
    from trl import SFTTrainer

    from fintune.train.backends import load_peft

    model, tokenizer = load_peft(cfg, model_path, on_cuda=False)
    with tempfile.TemporaryDirectory() as tmp:
        args = make_args(tmp)
        trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(data))
        with PeakRSS() as rss:
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
    tokens = trainer.state.num_input_tokens_seen
    res = {"name": name, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
           "peak_rss_growth_mb": rss.growth, "bf16": args.bf16,
           "gradient_checkpointing": args.gradient_checkpointing,
           "group_by_length": getattr(args, "train_sampling_strategy", None) == "group_by_length"}
    print(f"{name:14s} {tokens:7d} tokens in {seconds:7.1f} s = {res['tokens_per_s']:7.1f} tokens/s, "
          f"peak RSS +{res['peak_rss_growth_mb']:.0f} MB (bf16={res['bf16']}, "
          f"gradient_checkpointing={res['gradient_checkpointing']}, grouped={res['group_by_length']})", flush=True)
    del trainer, model
    return res


def main(argv=None) -> int:
    from fintune.config import build_config, load_yaml
    from fintune.models import resolve_base_model
    from fintune.train.trainer import pick_precision

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "cpu-smollm2.yaml"))
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch_size", type=int, default=2)
    args = p.parse_args(argv)
    cfg = build_config(load_yaml(args.config), {"max_steps": args.steps,
                                                 "per_device_train_batch_size": args.batch_size})
    model_path = resolve_base_model(cfg.model.base_model)
    from transformers import AutoTokenizer
    from trl import SFTConfig

    data = examples(cfg, AutoTokenizer.from_pretrained(model_path), args.steps * args.batch_size * 4)
    t = cfg.train
    precision = pick_precision(cfg, on_cuda=False)

    def ours(tmp):
        from fintune.train.trainer import sft_args

        run_cfg = build_config(load_yaml(args.config), {"max_steps": args.steps, "checkpoint_dir": tmp,
                                                         "per_device_train_batch_size": args.batch_size})
        return sft_args(run_cfg, precision, on_cuda=False, has_val=False)

    def trl_defaults(tmp):
        return SFTConfig(output_dir=tmp, max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
                         learning_rate=t.learning_rate, seed=t.train_seed, use_cpu=True, report_to=[],
                         save_strategy="no", logging_steps=t.max_steps,
                         include_num_input_tokens_seen="non_padding")

    print(f"{model_path}: {args.steps} steps, batch {args.batch_size}, {len(data)} examples; "
          f"precision chosen by the stage: {precision}", flush=True)
    a = train_once("fintune", cfg, model_path, data, ours)
    b = train_once("TRL defaults", cfg, model_path, data, trl_defaults)
    print(f"peak RSS growth: fintune {a['peak_rss_growth_mb']:.0f} MB, TRL defaults {b['peak_rss_growth_mb']:.0f} MB")
    print(f"ratio: {a['tokens_per_s'] / b['tokens_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
