"""Every stage's plan on this machine, before it loads anything: peak GPU memory,
peak RAM and disk of train, DPO, merge, export and eval (one line per eval model),
from the model's config alone (plan.model_config), and what each stage does
about it: run, adapt (merge shard by shard; an HF eval model in 4-bit) or refuse
or leave a model out, with the fix. `--dry_run` prints these lines; the stages
call the same functions, so what is printed is what they do.

The machine is read through small functions (plan.gpu_free_bytes,
gpu_total_bytes, ram_available_bytes, disk_free_bytes, llama_cpp_cuda) that
tests replace with stand-ins.

Rules of thumb behind the numbers (stated, not measured here):
- merge in_memory holds the base in fp32 and a second copy: 8 bytes a parameter;
  by_shard one shard's output in fp16 (hub shards taken as up to HUB_SHARD_BYTES
  where the files are not local yet) and one tensor or LoRA pair in fp32.
- The 16-bit base is downloaded by the merge (and the HF eval of the base) when the
  base is a hub id whose 16-bit files are not in the cache: Unsloth trains from
  its own 4-bit copy.
- GGUF sizes: bits per weight of each llama.cpp type (GGUF_BITS).
- eval: weights + KV cache for batch x (EVAL_PROMPT_TOKENS + eval_max_new_tokens);
  time from memory-bandwidth-bound decoding (DECODE_ASSUMPTION).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from fintune.train import plan
from fintune.train.plan import GiB, Shapes, model_config

GGUF_BITS = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q5_K_S": 5.54,
             "Q5_0": 5.5, "Q4_K_M": 4.85, "Q4_K_S": 4.58, "Q4_0": 4.55, "Q3_K_M": 3.91, "Q3_K_S": 3.5,
             "Q2_K": 2.63, "IQ4_XS": 4.25}
UNKNOWN_GGUF_BITS = 8.5          # a type not listed: sized as Q8_0, the larger side
HUB_SHARD_BYTES = 10 * GiB       # HF checkpoints are sharded at 5-10 GB (R1-Distill-Qwen: ~8.7 GB at most)
EVAL_PROMPT_TOKENS = 512         # instruction + question + context, rounded up
LLAMA_COMPUTE_BUFFER = 1 * GiB   # llama.cpp's compute buffer (logits of a 512-token batch at a 152k vocabulary: 0.3 GiB)
RAM_MARGIN = 0.9                 # a stage may plan to use this share of the RAM available
GPU_MARGIN = 0.97
# decode reads the weights and KV cache once a step; bandwidth by what the machine is
EFFICIENCY = 0.6
DECODE_ASSUMPTION = ("decode assumed memory-bandwidth bound: each step reads the weights and the KV cache once, "
                     "at {eff:.0%} of {bw:.0f} GB/s ({what}); every reply counted at eval_max_new_tokens "
                     "(an upper bound); 4-bit HF models decode slower than this (bitsandbytes dequantizes)")


@dataclass
class Machine:
    gpu_free: float | None    # bytes; None: no CUDA GPU
    gpu_total: float | None
    ram: float
    disk: float               # free where the outputs go
    llama_cuda: bool          # llama.cpp built with CUDA

    def describe(self) -> str:
        gpu = f"GPU {self.gpu_free / GiB:.1f} GiB free of {self.gpu_total / GiB:.1f}" if self.gpu_free is not None \
            else "no CUDA GPU"
        return (f"this machine: {gpu}, RAM {self.ram / GiB:.1f} GiB available, disk {self.disk / GiB:.1f} GiB free, "
                f"llama.cpp {'CUDA' if self.llama_cuda else 'CPU'} build")


@dataclass
class Line:
    stage: str
    gpu: float = 0.0          # bytes of free GPU memory needed
    ram: float = 0.0
    disk: float = 0.0
    action: str = "runs"      # runs | by_shard | in_memory | 4-bit | bf16 | left out | refuses ...
    ok: bool = True           # False: the stage refuses (or the model is left out)
    why: str = ""             # what it will do and the fix, where it adapts or refuses
    seconds: float | None = None


# ---- the machine -----------------------------------------------------------

def gpu_total_bytes() -> int:
    import torch

    return int(torch.cuda.mem_get_info()[1])


def ram_available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def disk_free_bytes(path: str | Path) -> int:
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def llama_cpp_cuda(root: str | Path) -> bool:
    from fintune.export.llama_cpp import LlamaCpp

    return LlamaCpp(Path(root)).cuda_build


def this_machine(cfg) -> Machine:
    from fintune.train.backends import cuda_available

    cuda = cuda_available()
    return Machine(plan.gpu_free_bytes() if cuda else None, gpu_total_bytes() if cuda else None,
                   ram_available_bytes(), disk_free_bytes(Path(cfg.export.merged_model_dir).parent),
                   llama_cpp_cuda(cfg.export.llama_cpp_path))


# ---- sizes -----------------------------------------------------------------

def params(cfg) -> tuple[int, int]:
    return Shapes.of(model_config(cfg.model.base_model)).params()


def kv_bytes_per_token(s: Shapes, dtype_bytes: int = 2) -> int:
    return 2 * s.L * s.kv * (s.h // s.heads) * dtype_bytes


def gguf_bytes(cfg, qtype: str) -> float:
    """The size of an exported GGUF, by bits per weight of this model. Not the file at the
    export path: that may be another model's, left by an earlier run (the default job's
    SmolLM2 GGUFs made the 14B F16 plan 5.9 GB and kept it in the eval)."""
    return sum(params(cfg)) * GGUF_BITS.get(qtype.upper(), UNKNOWN_GGUF_BITS) / 8


def local_weights(name: str) -> Path | None:
    """The folder holding `name`'s 16-bit safetensors when every shard is on disk
    (a local folder or the Hugging Face cache, read offline), else None."""
    d = Path(name)
    if not d.is_dir():
        try:
            from huggingface_hub import snapshot_download

            d = Path(snapshot_download(name, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached (or not a hub id): not local
            return None
    index = d / "model.safetensors.index.json"
    files = set(json.loads(index.read_text())["weight_map"].values()) if index.is_file() else {"model.safetensors"}
    return d if all((d / f).is_file() for f in files) else None


def eval_items(cfg) -> int:
    """Replies the eval generates per model: the held-out set and each external file
    that exists, with and without its context (an upper bound)."""
    return cfg.eval.eval_limit + sum(2 * cfg.eval.external_eval_limit for f in cfg.eval.eval_files
                                     if Path(f).is_file())


# ---- stages ----------------------------------------------------------------

def train_line(cfg, backend: str, m: Machine) -> Line:
    est = plan.estimate(cfg, backend)
    s = Shapes.of(model_config(cfg.model.base_model))
    tokens = cfg.train.per_device_train_batch_size * cfg.model.max_seq_length
    # Unsloth offloads each layer's input to CPU RAM under its gradient checkpointing
    offload = s.L * tokens * s.h * 2 if backend == "unsloth" and cfg.train.gradient_checkpointing else 0
    linear, other = s.params()
    # not local yet: Unsloth fetches its own 4-bit copy of a 4-bit run, transformers the 16-bit files
    download = 0 if local_weights(cfg.model.base_model) else \
        linear * 4.13 / 8 + other * 2 if backend == "unsloth" and cfg.model.load_in_4bit else 2 * (linear + other)
    disk = est["disk"]["adapter"] + est["disk"]["checkpoints"] + download
    line = Line("train", est["needed"], offload + 2 * GiB, disk, f"runs ({backend})")
    if m.gpu_free is None:
        return _cpu_train(cfg, line, linear + other, m)
    line = _check_gpu(line, m, lambda: _seq_fix(cfg, backend, m, "--max_seq_length"))
    if download:
        line.why = "; ".join(filter(None, [line.why, f"downloads the base first ({download / GiB:.1f} GiB)"]))
    if disk > m.disk:  # shown, not enforced: the training stage checks GPU memory only (plan.require_fit)
        line.why += f"; WARNING: {m.disk / GiB:.1f} GiB disk free"
    return line


def _cpu_train(cfg, line: Line, params: int, m: Machine) -> Line:
    """Without CUDA the PEFT backend trains on the CPU: no 4-bit, the frozen weights in
    fp32 (bf16 only where it measures faster, backends.load_base) and fp32 activations,
    so a GPU profile's base outgrows the RAM; the stage refuses before loading it."""
    import copy

    cpu = copy.deepcopy(cfg)
    cpu.model.load_in_4bit = False
    mem = plan.memory(cpu, "peft")
    mem["weights"] = params * 4
    mem["activations"] *= 2
    # one CPU process takes the loss on label positions, CHUNK rows of logits at a time
    # (train/loss.py), never the whole batch's
    from fintune.train.loss import CHUNK

    mem["logits"] = 4 * CHUNK * Shapes.of(model_config(cfg.model.base_model)).V * 4
    line.gpu, line.ram = 0.0, sum(mem.values()) + 2 * GiB
    line.action = "runs (peft on the CPU)"
    if line.ram > RAM_MARGIN * m.ram:
        line.ok, line.action = False, "refuses"
        line.why = (f"no CUDA GPU: the {params / 1e9:.1f}B base would train on the CPU in fp32, "
                    f"{line.ram / GiB:.1f} GiB RAM, {m.ram / GiB:.1f} available; fix: run this profile on the GPU "
                    "it names, or use the CPU profile (--config cpu-smollm2)")
    return line


def require(line: Line, what: str = "") -> None:
    """A stage's check of its own line before it loads anything: stop with the line's reason and fix."""
    from fintune.errors import UsageError

    if not line.ok:
        raise UsageError(f"{what}{line.why}")


def require_train_fit_on_cpu(cfg) -> None:
    """Stop a training without CUDA before it loads a base that cannot fit the RAM."""
    s = Shapes.of(model_config(cfg.model.base_model))
    linear, other = s.params()
    require(_cpu_train(cfg, Line("train"), linear + other, Machine(None, None, ram_available_bytes(), 0, False)))


def dpo_memory(cfg, backend: str, seq: int | None = None) -> float:
    """TRL's DPO: policy and reference share the base weights (TRL copies the adapter
    into a frozen "ref" one); chosen and rejected rows go through as one batch of
    twice the rows, and their logits are materialized (Unsloth's fused preference
    loss is opt-in), as the PEFT plan counts them."""
    seq = seq or dpo_seq(cfg)
    mem = plan.memory(cfg, backend, 2 * seq)
    s = Shapes.of(model_config(cfg.model.base_model))
    mem["logits"] = 4 * cfg.train.per_device_train_batch_size * 2 * seq * s.V * 4
    mem["reference adapter"] = plan.trainable(cfg, s) * 4
    return plan.needed(mem, backend)


def dpo_seq(cfg) -> int:
    return cfg.train.dpo_max_seq_length or cfg.model.max_seq_length


def dpo_line(cfg, backend: str, m: Machine) -> Line:
    est = plan.estimate(cfg, backend)
    line = Line("dpo", dpo_memory(cfg, backend), 2 * GiB, est["disk"]["adapter"] + est["disk"]["checkpoints"],
                f"runs ({backend})")

    def fix():
        best, seq = None, 256
        while seq <= dpo_seq(cfg):
            if dpo_memory(cfg, backend, seq) <= m.gpu_free:
                best = seq
            seq += 256
        return (f"set --dpo_max_seq_length {best} (fits by the plan)" if best else
                "no DPO length fits: turn --dpo off or use a larger GPU")
    return _check_gpu(line, m, fix)


def merge_line(cfg, m: Machine, base: str | None = None) -> Line:
    """Which merge runs: in_memory where 2 x fp32 of the model fits the RAM, else by
    shard; refused when neither fits, or the disk is short. `base`: the base as the
    adapter records it (default: model.base_model)."""
    base = base or cfg.model.base_model
    s = Shapes.of(model_config(base))
    n = sum(s.params())
    local = local_weights(base)
    shard = max((f.stat().st_size for f in local.glob("*.safetensors")), default=0) if local else \
        min(HUB_SHARD_BYTES, 2 * n)
    lora_matrix = max(i * o for i, o in s.linears().values())
    # by_shard: the shard's tensors gathered in fp16 (at most its size on disk), one
    # tensor read in fp32 and copied (the embedding), and one LoRA pair's W + B @ A in fp32
    need = {"in_memory": 8 * n, "by_shard": shard + 6 * s.V * s.h + 12 * lora_matrix}
    download = 0 if local else 2 * n
    disk = 2 * n + download
    mode = cfg.export.merge_mode
    if mode == "auto":
        mode = "in_memory" if need["in_memory"] <= 0.8 * m.ram else "by_shard"
    why = (f"in_memory needs {need['in_memory'] / GiB:.1f} GiB RAM"
           + (f", over 80% of the {m.ram / GiB:.1f} available" if mode == "by_shard" else "")
           + (f"; the 16-bit base ({download / GiB:.1f} GiB) is downloaded first" if download else ""))
    line = Line("merge", 0, need[mode], disk, mode, why=why)
    if need[mode] > RAM_MARGIN * m.ram:
        fix = "--merge_mode by_shard" if mode == "in_memory" and need["by_shard"] <= RAM_MARGIN * m.ram else \
            "a machine with more RAM"
        line.ok, line.action = False, "refuses"
        line.why = f"{mode} needs {need[mode] / GiB:.1f} GiB RAM, {m.ram / GiB:.1f} available; fix: {fix}"
    elif disk > m.disk:
        line.ok, line.action = False, "refuses"
        line.why = (f"needs {disk / GiB:.1f} GiB disk (merged fp16" + (" + 16-bit base download" if download else "")
                    + f"), {m.disk / GiB:.1f} free; fix: free disk space")
    return line


def export_line(cfg, m: Machine) -> Line:
    """The unquantized GGUF and every quant type; the converter reads lazily, tensor
    by tensor, and each quantize job holds a tensor or two in fp32."""
    e = cfg.export
    types = [e.gguf_outtype.upper()] + [q for q in e.quant_types if q.upper() != e.gguf_outtype.upper()]
    sizes = {q: gguf_bytes(cfg, q) for q in types}
    s = Shapes.of(model_config(cfg.model.base_model))
    biggest = max(s.V * s.h, *(i * o for i, o in s.linears().values()))
    ram = (1 + e.export_jobs) * 2 * 4 * biggest + GiB
    disk = sum(sizes.values())
    line = Line("export", 0, ram, disk, "runs", why=", ".join(f"{q} {v / GiB:.1f} GiB" for q, v in sizes.items()))
    if disk > m.disk:
        line.ok, line.action = False, "refuses"
        line.why += f"; {m.disk / GiB:.1f} GiB free: free disk space or drop quant types"
    elif ram > RAM_MARGIN * m.ram:
        line.ok, line.action = False, "refuses"
        line.why += f"; needs {ram / GiB:.1f} GiB RAM, {m.ram / GiB:.1f} available; fix: --export_jobs 1"
    return line


def hf_eval_bytes(cfg, four_bit: bool, dtype_bytes: int = 2) -> float:
    linear, other = params(cfg)
    s = Shapes.of(model_config(cfg.model.base_model))
    weights = linear * 4.13 / 8 + other * 2 if four_bit else (linear + other) * dtype_bytes
    batch = cfg.eval.eval_batch_size
    kv = batch * (EVAL_PROMPT_TOKENS + cfg.eval.eval_max_new_tokens) * kv_bytes_per_token(s, dtype_bytes)
    return (weights + kv + 2 * batch * s.V * 4) * 1.1


def hf_eval_line(cfg, name: str, m: Machine) -> Line:
    """An HF model (base, adapter, merged): bf16 on the GPU where it fits, else 4-bit
    NF4 where the profile trains in 4-bit and that fits, else left out; on a CPU fp32."""
    if m.gpu_free is None:
        need = hf_eval_bytes(cfg, False, 4)
        line = Line(f"eval {name}", 0, need, 0, "fp32 on CPU")
        if need > RAM_MARGIN * m.ram:
            line.ok, line.action = False, "left out"
            line.why = f"needs {need / GiB:.1f} GiB RAM in fp32, {m.ram / GiB:.1f} available"
        return _timed(cfg, line, need, cfg.eval.eval_batch_size, m, gpu=False)
    bf16, nf4 = plan.CUDA_CONTEXT + hf_eval_bytes(cfg, False), plan.CUDA_CONTEXT + hf_eval_bytes(cfg, True)
    if bf16 <= GPU_MARGIN * m.gpu_free:
        line = Line(f"eval {name}", bf16, 2 * GiB, 0, "bf16")
    elif cfg.model.load_in_4bit and nf4 <= GPU_MARGIN * m.gpu_free:
        line = Line(f"eval {name}", nf4, 2 * GiB, 0, "4-bit",
                    why=f"bf16 needs {bf16 / GiB:.1f} GiB: loaded in 4-bit NF4, as trained")
    else:
        line = Line(f"eval {name}", bf16, 2 * GiB, 0, "left out", ok=False,
                    why=f"bf16 needs {bf16 / GiB:.1f} GiB" + (f", 4-bit {nf4 / GiB:.1f}" if cfg.model.load_in_4bit
                                                              else "") + f", {m.gpu_free / GiB:.1f} free; "
                    "fix: drop it from eval_models or lower eval_batch_size")
    return _timed(cfg, line, line.gpu - plan.CUDA_CONTEXT, cfg.eval.eval_batch_size, m, gpu=True)


def gguf_eval_line(cfg, qtype: str, m: Machine) -> Line:
    """A GGUF through llama.cpp: the file and the slots' KV cache on the GPU with a CUDA
    build (every layer offloaded), else in RAM. A GGUF that does not fit the GPU is
    left out rather than run with partial offload, whose CPU layers would bound the
    decode speed (hours for this eval)."""
    s = Shapes.of(model_config(cfg.model.base_model))
    slots = cfg.eval.eval_parallel
    kv = slots * (EVAL_PROMPT_TOKENS + cfg.eval.eval_max_new_tokens) * kv_bytes_per_token(s)
    need = gguf_bytes(cfg, qtype) + kv + LLAMA_COMPUTE_BUFFER
    on_gpu = m.llama_cuda and m.gpu_free is not None
    if on_gpu:
        line = Line(f"eval {qtype}", need + plan.CUDA_CONTEXT, 2 * GiB, 0, "cuda (llama.cpp)")
        if line.gpu > GPU_MARGIN * m.gpu_free:
            line.ok, line.action = False, "left out"
            line.why = (f"needs {line.gpu / GiB:.1f} GiB, {m.gpu_free / GiB:.1f} free (partial offload would decode "
                        "at CPU speed); fix: drop it from eval_models")
    else:
        line = Line(f"eval {qtype}", 0, need, 0, "cpu (llama.cpp)")
        if m.gpu_free is not None:
            line.why = "llama.cpp is a CPU build: rebuild it with CUDA (make setup with nvcc on PATH)"
        if need > RAM_MARGIN * m.ram:
            line.ok, line.action = False, "left out"
            line.why = f"needs {need / GiB:.1f} GiB RAM, {m.ram / GiB:.1f} available; fix: drop it from eval_models"
    return _timed(cfg, line, need, slots, m, gpu=on_gpu)


def eval_lines(cfg, m: Machine) -> list[Line]:
    out = []
    for name in cfg.eval.eval_models:
        if name in ("adapter", "merged") or (name == "base" and m.gpu_free is not None):
            out.append(hf_eval_line(cfg, name, m))
        elif name == "base":  # on a CPU the base runs as an F16 GGUF (eval/stage.py)
            line = gguf_eval_line(cfg, "F16", m)
            line.stage = "eval base"
            out.append(line)
        else:
            out.append(gguf_eval_line(cfg, name, m))
    return out


def bandwidth(m: Machine, gpu: bool) -> tuple[float, str]:
    """Assumed memory bandwidth in bytes/s, and what it stands for."""
    if not gpu:
        return 50e9, "a server CPU's DRAM"
    total = (m.gpu_total or 0) / GiB
    if total >= 70:
        return 3000e9, "an 80 GB H100/H200 class card"
    if total >= 40:
        return 900e9, "a 48 GB workstation card"
    return 900e9, "a 24 GB card such as an RTX 3090/4090"


def _timed(cfg, line: Line, resident: float, batch: int, m: Machine, gpu: bool) -> Line:
    if line.ok:
        bw, _ = bandwidth(m, gpu)
        steps = eval_items(cfg) / batch * cfg.eval.eval_max_new_tokens
        line.seconds = steps * resident / (EFFICIENCY * bw)
    return line


def _check_gpu(line: Line, m: Machine, fix) -> Line:
    if m.gpu_free is None:
        line.why = "no CUDA GPU here: this plan is for the GPU the profile names"
        return line
    if line.gpu > m.gpu_free:
        line.ok, line.action = False, "refuses"
        line.why = f"needs {line.gpu / GiB:.1f} GiB, {m.gpu_free / GiB:.1f} free; fix: {fix()}"
    return line


def _seq_fix(cfg, backend, m, flag) -> str:
    seq = plan.longest_fitting_seq(cfg, backend, m.gpu_free)
    return f"{flag} {seq} (fits by the plan)" if seq else "a smaller model or a larger GPU"


def stages(cfg, backend: str, m: Machine) -> list[Line]:
    lines = [train_line(cfg, backend, m)]
    if cfg.train.dpo:
        lines.append(dpo_line(cfg, backend, m))
    if cfg.train.grpo:
        from fintune.train.plan_grpo import grpo_line

        lines.append(grpo_line(cfg, backend, m))
    return lines + [merge_line(cfg, m), export_line(cfg, m)] + eval_lines(cfg, m)


def render(cfg, lines: list[Line], m: Machine, assumptions: bool = True) -> str:
    def gib(v):
        return f"{v / GiB:8.1f}" if v else f"{'-':>8s}"

    out = ["every stage on " + m.describe(),
           f"  {'stage':14s} {'GPU GiB':>8s} {'RAM GiB':>8s} {'disk GiB':>8s}  decision"]
    for ln in lines:
        t = f", ~{ln.seconds / 60:.0f} min" if ln.seconds else ""
        out.append(f"  {ln.stage:14s} {gib(ln.gpu)} {gib(ln.ram)} {gib(ln.disk)}  {ln.action}{t}"
                   + (f": {ln.why}" if ln.why else ""))
    if not assumptions:
        return "\n".join(out)
    bw, what = bandwidth(m, m.gpu_free is not None)
    out.append("  eval time: " + DECODE_ASSUMPTION.format(eff=EFFICIENCY, bw=bw / 1e9, what=what)
               + (f"; a CPU llama.cpp at {bandwidth(m, False)[0] / 1e9:.0f} GB/s" if m.gpu_free and not m.llama_cuda
                  else "") + f"; {eval_items(cfg)} replies per model")
    return "\n".join(out)


def require_dpo_fit(cfg, backend: str) -> None:
    """Stop DPO before it loads anything when its plan does not fit the free GPU memory
    (DPO holds the policy, the reference adapter, and chosen + rejected rows with their logits)."""
    require(dpo_line(cfg, backend, Machine(plan.gpu_free_bytes(), None, 0, 0, False)),
            f"not enough GPU memory for DPO through {backend}: ")
