"""The two types every stage's plan is written in: the machine it runs on
(`Machine`, read once through fintune.machine) and one stage's resource plan
(`StagePlan`: GPU, RAM, disk and what the stage does about them), plus the checks
the stages share: a GPU line against the free memory, training on a CPU against
the RAM, and `require`, with which a stage stops before loading anything."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from fintune import machine
from fintune.errors import UsageError
from fintune.llama_cpp import LlamaCpp
from fintune.plan import training
from fintune.plan.shapes import GiB, Shapes, model_config

EVAL_PROMPT_TOKENS = 512         # instruction + question + context, rounded up
RAM_MARGIN = 0.9                 # a stage may plan to use this share of the RAM available
GPU_MARGIN = 0.97
# one CPU training process takes the loss on label positions this many rows of logits
# at a time (train/loss.py): 64 x 49,152 in fp32 is 12.5 MB
LOSS_CHUNK_ROWS = 64


@dataclass
class Machine:
    """What the plan needs to know of the machine a stage runs on."""
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
class StagePlan:
    """One stage's (or one eval model's) needs on a machine, and its decision."""
    stage: str
    gpu: float = 0.0          # bytes of free GPU memory needed
    ram: float = 0.0
    disk: float = 0.0
    action: str = "runs"      # runs | by_shard | in_memory | 4-bit | bf16 | left out | refuses ...
    ok: bool = True           # False: the stage refuses (or the model is left out)
    why: str = ""             # what it will do and the fix, where it adapts or refuses
    seconds: float | None = None


def llama_cpp_cuda(root: str | Path) -> bool:
    """Whether the llama.cpp tools under `root` were built with CUDA."""
    return LlamaCpp(Path(root)).cuda_build


def this_machine(cfg) -> Machine:
    cuda = machine.cuda_available()
    return Machine(machine.gpu_free_bytes() if cuda else None, machine.gpu_total_bytes() if cuda else None,
                   machine.ram_available_bytes(), machine.disk_free_bytes(Path(cfg.export.merged_model_dir).parent),
                   llama_cpp_cuda(cfg.export.llama_cpp_path))


def gpu_only() -> Machine:
    """The machine as a GPU stage's own check sees it: the free GPU memory, nothing else."""
    return Machine(machine.gpu_free_bytes(), None, 0, 0, False)


def require(line: StagePlan, what: str = "") -> None:
    """A stage's check of its own line before it loads anything: stop with the line's reason and fix."""
    if not line.ok:
        raise UsageError(f"{what}{line.why}")


def check_gpu(line: StagePlan, host: Machine, fix) -> StagePlan:
    """Refuse a GPU line that needs more than is free; `fix()` names what would fit."""
    if host.gpu_free is None:
        line.why = "no CUDA GPU here: this plan is for the GPU the profile names"
        return line
    if line.gpu > host.gpu_free:
        line.ok, line.action = False, "refuses"
        line.why = f"needs {line.gpu / GiB:.1f} GiB, {host.gpu_free / GiB:.1f} free; fix: {fix()}"
    return line


def cpu_train(cfg, line: StagePlan, params: int, host: Machine) -> StagePlan:
    """Without CUDA the PEFT backend trains on the CPU: no 4-bit, the frozen weights in
    fp32 (bf16 only where it measures faster, backends.load_base) and fp32 activations,
    so a GPU profile's base outgrows the RAM; the stage refuses before loading it."""
    cpu = copy.deepcopy(cfg)
    cpu.model.load_in_4bit = False
    mem = training.memory(cpu, "peft")
    mem["weights"] = params * 4
    mem["activations"] *= 2
    # one CPU process takes the loss on label positions, LOSS_CHUNK_ROWS rows of logits
    # at a time (train/loss.py), never the whole batch's
    mem["logits"] = 4 * LOSS_CHUNK_ROWS * Shapes.of(model_config(cfg.model.base_model)).V * 4
    line.gpu, line.ram = 0.0, sum(mem.values()) + 2 * GiB
    line.action = "runs (peft on the CPU)"
    if line.ram > RAM_MARGIN * host.ram:
        line.ok, line.action = False, "refuses"
        line.why = (f"no CUDA GPU: the {params / 1e9:.1f}B base would train on the CPU in fp32, "
                    f"{line.ram / GiB:.1f} GiB RAM, {host.ram / GiB:.1f} available; fix: run this profile on the GPU "
                    "it names, or use the CPU profile (--config cpu-smollm2)")
    return line


def require_train_fit_on_cpu(cfg) -> None:
    """Stop a training without CUDA before it loads a base that cannot fit the RAM."""
    linear, other = Shapes.of(model_config(cfg.model.base_model)).params()
    host = Machine(None, None, machine.ram_available_bytes(), 0, False)
    require(cpu_train(cfg, StagePlan("train"), linear + other, host))
