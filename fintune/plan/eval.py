"""The eval stage's lines of the plan, one per model in eval_models: where it runs
(bf16 or 4-bit on the GPU, a CUDA or CPU llama.cpp, fp32 on a CPU), what it needs,
how long it should take, or why it is left out.

Time comes from memory-bandwidth-bound decoding (DECODE_ASSUMPTION): each step
reads the weights and the KV cache once.
"""
from __future__ import annotations

from pathlib import Path

from fintune.plan import training
from fintune.plan.lines import EVAL_PROMPT_TOKENS, GPU_MARGIN, RAM_MARGIN, Machine, StagePlan
from fintune.plan.shapes import GiB, Shapes, gguf_bytes, kv_bytes_per_token, model_config, params

LLAMA_COMPUTE_BUFFER = 1 * GiB   # llama.cpp's compute buffer (logits of a 512-token batch at a 152k vocabulary: 0.3 GiB)
EFFICIENCY = 0.6                 # share of the memory bandwidth a decode step reaches
DECODE_ASSUMPTION = ("decode assumed memory-bandwidth bound: each step reads the weights and the KV cache once, "
                     "at {eff:.0%} of {bw:.0f} GB/s ({what}); every reply counted at eval_max_new_tokens "
                     "(an upper bound); 4-bit HF models decode slower than this (bitsandbytes dequantizes)")


def eval_items(cfg) -> int:
    """Replies the eval generates per model: the held-out set and each external file
    that exists, with and without its context (an upper bound)."""
    return cfg.eval.eval_limit + sum(2 * cfg.eval.external_eval_limit for f in cfg.eval.eval_files
                                     if Path(f).is_file())


def hf_eval_bytes(cfg, four_bit: bool, dtype_bytes: int = 2) -> float:
    linear, other = params(cfg)
    s = Shapes.of(model_config(cfg.model.base_model))
    weights = linear * 4.13 / 8 + other * 2 if four_bit else (linear + other) * dtype_bytes
    batch = cfg.eval.eval_batch_size
    kv = batch * (EVAL_PROMPT_TOKENS + cfg.eval.eval_max_new_tokens) * kv_bytes_per_token(s, dtype_bytes)
    return (weights + kv + 2 * batch * s.V * 4) * 1.1


def hf_eval_line(cfg, name: str, host: Machine) -> StagePlan:
    """An HF model (base, adapter, merged): bf16 on the GPU where it fits, else 4-bit
    NF4 where the profile trains in 4-bit and that fits, else left out; on a CPU fp32."""
    if host.gpu_free is None:
        need = hf_eval_bytes(cfg, False, 4)
        line = StagePlan(f"eval {name}", 0, need, 0, "fp32 on CPU")
        if need > RAM_MARGIN * host.ram:
            line.ok, line.action = False, "left out"
            line.why = f"needs {need / GiB:.1f} GiB RAM in fp32, {host.ram / GiB:.1f} available"
        return _timed(cfg, line, need, cfg.eval.eval_batch_size, host, gpu=False)
    bf16 = training.CUDA_CONTEXT + hf_eval_bytes(cfg, False)
    nf4 = training.CUDA_CONTEXT + hf_eval_bytes(cfg, True)
    if bf16 <= GPU_MARGIN * host.gpu_free:
        line = StagePlan(f"eval {name}", bf16, 2 * GiB, 0, "bf16")
    elif cfg.model.load_in_4bit and nf4 <= GPU_MARGIN * host.gpu_free:
        line = StagePlan(f"eval {name}", nf4, 2 * GiB, 0, "4-bit",
                         why=f"bf16 needs {bf16 / GiB:.1f} GiB: loaded in 4-bit NF4, as trained")
    else:
        four_bit = f", 4-bit {nf4 / GiB:.1f}" if cfg.model.load_in_4bit else ""
        line = StagePlan(f"eval {name}", bf16, 2 * GiB, 0, "left out", ok=False,
                         why=f"bf16 needs {bf16 / GiB:.1f} GiB{four_bit}, {host.gpu_free / GiB:.1f} free; "
                         "fix: drop it from eval_models or lower eval_batch_size")
    return _timed(cfg, line, line.gpu - training.CUDA_CONTEXT, cfg.eval.eval_batch_size, host, gpu=True)


def gguf_eval_line(cfg, qtype: str, host: Machine) -> StagePlan:
    """A GGUF through llama.cpp: the file and the slots' KV cache on the GPU with a CUDA
    build (every layer offloaded), else in RAM. A GGUF that does not fit the GPU is
    left out rather than run with partial offload, whose CPU layers would bound the
    decode speed (hours for this eval)."""
    s = Shapes.of(model_config(cfg.model.base_model))
    slots = cfg.eval.eval_parallel
    kv = slots * (EVAL_PROMPT_TOKENS + cfg.eval.eval_max_new_tokens) * kv_bytes_per_token(s)
    need = gguf_bytes(cfg, qtype) + kv + LLAMA_COMPUTE_BUFFER
    on_gpu = host.llama_cuda and host.gpu_free is not None
    if on_gpu:
        line = StagePlan(f"eval {qtype}", need + training.CUDA_CONTEXT, 2 * GiB, 0, "cuda (llama.cpp)")
        if line.gpu > GPU_MARGIN * host.gpu_free:
            line.ok, line.action = False, "left out"
            line.why = (f"needs {line.gpu / GiB:.1f} GiB, {host.gpu_free / GiB:.1f} free (partial offload would "
                        "decode at CPU speed); fix: drop it from eval_models")
    else:
        line = StagePlan(f"eval {qtype}", 0, need, 0, "cpu (llama.cpp)")
        if host.gpu_free is not None:
            line.why = "llama.cpp is a CPU build: rebuild it with CUDA (make setup with nvcc on PATH)"
        if need > RAM_MARGIN * host.ram:
            line.ok, line.action = False, "left out"
            line.why = f"needs {need / GiB:.1f} GiB RAM, {host.ram / GiB:.1f} available; fix: drop it from eval_models"
    return _timed(cfg, line, need, slots, host, gpu=on_gpu)


def eval_lines(cfg, host: Machine) -> list[StagePlan]:
    out = []
    for name in cfg.eval.eval_models:
        if name in ("adapter", "merged") or (name == "base" and host.gpu_free is not None):
            out.append(hf_eval_line(cfg, name, host))
        elif name == "base":  # on a CPU the base runs as an F16 GGUF (eval/stage.py)
            line = gguf_eval_line(cfg, "F16", host)
            line.stage = "eval base"
            out.append(line)
        else:
            out.append(gguf_eval_line(cfg, name, host))
    return out


def bandwidth(host: Machine, gpu: bool) -> tuple[float, str]:
    """Assumed memory bandwidth in bytes/s, and what it stands for."""
    if not gpu:
        return 50e9, "a server CPU's DRAM"
    total = (host.gpu_total or 0) / GiB
    if total >= 70:
        return 3000e9, "an 80 GB H100/H200 class card"
    if total >= 40:
        return 900e9, "a 48 GB workstation card"
    return 900e9, "a 24 GB card such as an RTX 3090/4090"


def _timed(cfg, line: StagePlan, resident: float, batch: int, host: Machine, gpu: bool) -> StagePlan:
    if line.ok:
        bw, _ = bandwidth(host, gpu)
        steps = eval_items(cfg) / batch * cfg.eval.eval_max_new_tokens
        line.seconds = steps * resident / (EFFICIENCY * bw)
    return line


def assumptions(cfg, host: Machine) -> str:
    """The eval time's assumptions, the last line of the stage table."""
    bw, what = bandwidth(host, host.gpu_free is not None)
    cpu_llama = f"; a CPU llama.cpp at {bandwidth(host, False)[0] / 1e9:.0f} GB/s" \
        if host.gpu_free and not host.llama_cuda else ""
    return ("  eval time: " + DECODE_ASSUMPTION.format(eff=EFFICIENCY, bw=bw / 1e9, what=what) + cpu_llama
            + f"; {eval_items(cfg)} replies per model")
