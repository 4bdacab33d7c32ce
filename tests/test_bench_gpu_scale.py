"""bench/gpu_scale.py's plumbing on a CPU: a tiny random R1-shaped model through
the training stage (in its own process), merge by_shard and export; the GPU
figures come from running it on a GPU (`python bench/gpu_scale.py --export`)."""
import subprocess
import sys

from conftest import ROOT, require_llama_cpp


def test_gpu_scale_bench_runs_end_to_end_on_a_tiny_model(r1_tokenizer):
    require_llama_cpp()
    out = subprocess.run([sys.executable, "bench/gpu_scale.py", "--sizes", "tiny", "--backends", "unsloth,peft",
                          "--steps", "2", "--export"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert any(l.startswith("tiny  unsloth  did not run: backend 'unsloth' needs a CUDA GPU") for l in lines)
    peft = next(l for l in lines if l.startswith("tiny  peft"))
    assert "tokens/s" in peft and "dry-run" in peft and "MFU" in peft and "[2 steps, seq 256" in peft
    assert any(l.startswith("export: merge (by_shard)") and "vs by hand" in l and "disk high-water" in l
               for l in lines)
    assert lines[-1] == "ratio: n/a (no size ran through both unsloth and peft)"
