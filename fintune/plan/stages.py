"""Every stage's plan on this machine, before it loads anything: peak GPU memory,
peak RAM and disk of train, DPO, GRPO, merge, export and eval (one line per eval
model), from the model's config alone (plan.shapes.model_config), and what each
stage does about it: run, adapt (merge shard by shard; an HF eval model in 4-bit)
or refuse or leave a model out, with the fix. `fintune plan` prints these lines;
the stages call the same functions, so what is printed is what they do.

Rules of thumb behind the numbers (stated, not measured here):
- merge in_memory holds the base in fp32 and a second copy: 8 bytes a parameter;
  by_shard one shard's output in fp16 (hub shards taken as up to HUB_SHARD_BYTES
  where the files are not local yet) and one tensor or LoRA pair in fp32.
- The 16-bit base is downloaded by the merge (and the HF eval of the base) when the
  base is a hub id whose 16-bit files are not in the cache: Unsloth trains from
  its own 4-bit copy.
- GGUF sizes: bits per weight of each llama.cpp type (fintune.gguf.GGUF_BITS).
"""
from __future__ import annotations

from fintune.models import local_weights
from fintune.plan import training
from fintune.plan.eval import assumptions, eval_lines
from fintune.plan.grpo import grpo_line
from fintune.plan.lines import RAM_MARGIN, Machine, StagePlan, check_gpu, cpu_train, gpu_only, require
from fintune.plan.shapes import GiB, Shapes, best_fit, gguf_bytes, model_config

HUB_SHARD_BYTES = 10 * GiB       # HF checkpoints are sharded at 5-10 GB (R1-Distill-Qwen: ~8.7 GB at most)


def train_line(cfg, backend: str, host: Machine) -> StagePlan:
    est = training.estimate(cfg, backend)
    s = Shapes.of(model_config(cfg.model.base_model))
    tokens = cfg.train.per_device_train_batch_size * cfg.model.max_seq_length
    # Unsloth offloads each layer's input to CPU RAM under its gradient checkpointing
    offload = s.L * tokens * s.h * 2 if backend == "unsloth" and cfg.train.gradient_checkpointing else 0
    linear, other = s.params()
    # not local yet: Unsloth fetches its own 4-bit copy of a 4-bit run, transformers the 16-bit files
    download = 0 if local_weights(cfg.model.base_model) else \
        linear * 4.13 / 8 + other * 2 if backend == "unsloth" and cfg.model.load_in_4bit else 2 * (linear + other)
    disk = est["disk"]["adapter"] + est["disk"]["checkpoints"] + download
    line = StagePlan("train", est["needed"], offload + 2 * GiB, disk, f"runs ({backend})")
    if host.gpu_free is None:
        return cpu_train(cfg, line, linear + other, host)
    line = check_gpu(line, host, lambda: _seq_fix(cfg, backend, host))
    if download:
        line.why = "; ".join(filter(None, [line.why, f"downloads the base first ({download / GiB:.1f} GiB)"]))
    if disk > host.disk:  # shown, not enforced: the training stage checks GPU memory only (training.require_fit)
        line.why += f"; WARNING: {host.disk / GiB:.1f} GiB disk free"
    return line


def _seq_fix(cfg, backend: str, host: Machine) -> str:
    seq = training.longest_fitting_seq(cfg, backend, host.gpu_free)
    return f"--max_seq_length {seq} (fits by the plan)" if seq else "a smaller model or a larger GPU"


def dpo_memory(cfg, backend: str, seq: int | None = None) -> float:
    """TRL's DPO: policy and reference share the base weights (TRL copies the adapter
    into a frozen "ref" one); chosen and rejected rows go through as one batch of
    twice the rows, and their logits are materialized (Unsloth's fused preference
    loss is opt-in), as the PEFT plan counts them."""
    seq = seq or dpo_seq(cfg)
    mem = training.memory(cfg, backend, 2 * seq)
    s = Shapes.of(model_config(cfg.model.base_model))
    mem["logits"] = 4 * cfg.train.per_device_train_batch_size * 2 * seq * s.V * 4
    mem["reference adapter"] = training.trainable(cfg, s) * 4
    return training.needed(mem, backend)


def dpo_seq(cfg) -> int:
    return cfg.train.dpo_max_seq_length or cfg.model.max_seq_length


def dpo_line(cfg, backend: str, host: Machine) -> StagePlan:
    est = training.estimate(cfg, backend)
    line = StagePlan("dpo", dpo_memory(cfg, backend), 2 * GiB,
                     est["disk"]["adapter"] + est["disk"]["checkpoints"], f"runs ({backend})")

    def fix():
        best = best_fit(training.lengths_down_from(dpo_seq(cfg)),
                        lambda seq: dpo_memory(cfg, backend, seq) <= host.gpu_free)
        return (f"set --dpo_max_seq_length {best} (fits by the plan)" if best else
                "no DPO length fits: turn --dpo off or use a larger GPU")
    return check_gpu(line, host, fix)


def merge_line(cfg, host: Machine, base: str | None = None) -> StagePlan:
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
        mode = "in_memory" if need["in_memory"] <= 0.8 * host.ram else "by_shard"
    why = (f"in_memory needs {need['in_memory'] / GiB:.1f} GiB RAM"
           + (f", over 80% of the {host.ram / GiB:.1f} available" if mode == "by_shard" else "")
           + (f"; the 16-bit base ({download / GiB:.1f} GiB) is downloaded first" if download else ""))
    line = StagePlan("merge", 0, need[mode], disk, mode, why=why)
    if need[mode] > RAM_MARGIN * host.ram:
        fix = "--merge_mode by_shard" if mode == "in_memory" and need["by_shard"] <= RAM_MARGIN * host.ram else \
            "a machine with more RAM"
        line.ok, line.action = False, "refuses"
        line.why = f"{mode} needs {need[mode] / GiB:.1f} GiB RAM, {host.ram / GiB:.1f} available; fix: {fix}"
    elif disk > host.disk:
        line.ok, line.action = False, "refuses"
        line.why = (f"needs {disk / GiB:.1f} GiB disk (merged fp16" + (" + 16-bit base download" if download else "")
                    + f"), {host.disk / GiB:.1f} free; fix: free disk space")
    return line


def export_line(cfg, host: Machine) -> StagePlan:
    """The unquantized GGUF and every quant type; the converter reads lazily, tensor
    by tensor, and each quantize job holds a tensor or two in fp32."""
    e = cfg.export
    types = [e.gguf_outtype.upper()] + [q for q in e.quant_types if q.upper() != e.gguf_outtype.upper()]
    sizes = {q: gguf_bytes(cfg, q) for q in types}
    s = Shapes.of(model_config(cfg.model.base_model))
    biggest = max(s.V * s.h, *(i * o for i, o in s.linears().values()))
    ram = (1 + e.export_jobs) * 2 * 4 * biggest + GiB
    disk = sum(sizes.values())
    line = StagePlan("export", 0, ram, disk, "runs", why=", ".join(f"{q} {v / GiB:.1f} GiB" for q, v in sizes.items()))
    if disk > host.disk:
        line.ok, line.action = False, "refuses"
        line.why += f"; {host.disk / GiB:.1f} GiB free: free disk space or drop quant types"
    elif ram > RAM_MARGIN * host.ram:
        line.ok, line.action = False, "refuses"
        line.why += f"; needs {ram / GiB:.1f} GiB RAM, {host.ram / GiB:.1f} available; fix: --export_jobs 1"
    return line


def stages(cfg, backend: str, host: Machine) -> list[StagePlan]:
    lines = [train_line(cfg, backend, host)]
    if cfg.train.dpo:
        lines.append(dpo_line(cfg, backend, host))
    if cfg.train.grpo:
        lines.append(grpo_line(cfg, backend, host))
    return lines + [merge_line(cfg, host), export_line(cfg, host)] + eval_lines(cfg, host)


def render_stages(cfg, lines: list[StagePlan], host: Machine, with_assumptions: bool = True) -> str:
    """The stage table `fintune plan` prints, one row per stage (and per eval model)."""
    def gib(v):
        return f"{v / GiB:8.1f}" if v else f"{'-':>8s}"

    out = ["every stage on " + host.describe(),
           f"  {'stage':14s} {'GPU GiB':>8s} {'RAM GiB':>8s} {'disk GiB':>8s}  decision"]
    for ln in lines:
        t = f", ~{ln.seconds / 60:.0f} min" if ln.seconds else ""
        out.append(f"  {ln.stage:14s} {gib(ln.gpu)} {gib(ln.ram)} {gib(ln.disk)}  {ln.action}{t}"
                   + (f": {ln.why}" if ln.why else ""))
    if with_assumptions:
        out.append(assumptions(cfg, host))
    return "\n".join(out)


def require_dpo_fit(cfg, backend: str) -> None:
    """Stop DPO before it loads anything when its plan does not fit the free GPU memory
    (DPO holds the policy, the reference adapter, and chosen + rejected rows with their logits)."""
    require(dpo_line(cfg, backend, gpu_only()), f"not enough GPU memory for DPO through {backend}: ")
