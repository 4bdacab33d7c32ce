"""Time the export stage against the same llama.cpp commands run by hand.

    python bench/export.py [--model_dir DIR] [--repeats 2]

Both sides start from the same merged FP16 checkpoint (default: the embedded
SmolLM2, as the default run exports a model of that size) and write F16,
Q4_K_M and Q8_0 GGUFs. "by hand" is convert_hf_to_gguf.py, then llama-quantize
twice, one after the other, llama.cpp's default threads. "stage" is
fintune.export.produce_all, which also verifies every file with gguf-py and
generates a few tokens from it; it is run with export_jobs=1 (sequential) and
export_jobs=2 (quants side by side). A warm-up conversion runs first so both
sides see warm file caches. The last line is `ratio: stage(export_jobs=2) / by hand`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def by_hand(lc, model_dir: Path, out: Path) -> None:
    f16 = out / "hand_f16.gguf"
    lc.convert(model_dir, f16, "f16")
    lc.quantize(f16, out / "hand_q4_k_m.gguf", "Q4_K_M")
    lc.quantize(f16, out / "hand_q8_0.gguf", "Q8_0")


def stage(lc, model_dir: Path, out: Path, jobs: int) -> None:
    from fintune.config import build_config
    from fintune.export import produce_all, smoke_prompt

    cfg = build_config(overrides={
        "merged_model_dir": str(model_dir), "export_jobs": jobs, "llama_cpp_path": str(lc.root),
        "gguf_f16_path": str(out / f"j{jobs}_f16.gguf"), "gguf_q4_path": str(out / f"j{jobs}_q4_k_m.gguf"),
        "gguf_q8_path": str(out / f"j{jobs}_q8_0.gguf")})
    produce_all(lc, cfg.export, model_dir, smoke_prompt(cfg, model_dir))


def main(argv=None) -> int:
    from fintune.llama_cpp import LlamaCpp

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", help="merged HF checkpoint (default: the embedded SmolLM2)")
    p.add_argument("--llama_cpp_path", default=str(ROOT / "llama.cpp"))
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        from fintune.models import materialize_smollm2
        model_dir = materialize_smollm2()
    lc = LlamaCpp(Path(args.llama_cpp_path))
    lc.preflight()
    times: dict[str, list[float]] = {"by hand": [], "stage export_jobs=1": [], "stage export_jobs=2": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        lc.convert(model_dir, out / "warmup.gguf", "f16")
        for _ in range(args.repeats):
            for name, fn in (("by hand", lambda: by_hand(lc, model_dir, out)),
                             ("stage export_jobs=1", lambda: stage(lc, model_dir, out, 1)),
                             ("stage export_jobs=2", lambda: stage(lc, model_dir, out, 2))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                for f in out.glob("*.gguf"):
                    f.unlink()
    print(f"model: {model_dir}")
    for name, ts in times.items():
        print(f"{name:22s} median {statistics.median(ts):6.2f} s  runs {', '.join(f'{t:.2f}' for t in ts)}")
    hand = statistics.median(times["by hand"])
    print(f"stage export_jobs=1 / by hand: {statistics.median(times['stage export_jobs=1']) / hand:.2f}")
    print(f"ratio: {statistics.median(times['stage export_jobs=2']) / hand:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
