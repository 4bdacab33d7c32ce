"""What machine this is: GPU, RAM, disk, compilers, processes, installed engines.

Every stage asks here, and tests replace these functions (monkeypatch
`fintune.machine.cuda_available`, say) to plan for a machine they are not on.
Callers look them up through the module (`machine.cuda_available()`), never by
`from fintune.machine import ...`, so one patch reaches every caller.
Heavy libraries are imported inside the functions: `fintune --help` loads none.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def cuda_available() -> bool:
    """A CUDA GPU torch can use. Touches the driver (not the allocator): call it after
    Unsloth's import in a training process (see fintune.worker)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def die_with_parent():
    """A `preexec_fn` for subprocess that has the kernel SIGKILL the child when the
    thread that started it ends (prctl PR_SET_PDEATHSIG; Linux only, None elsewhere).

    A stage worker runs in a process group of its own (pipeline.run_in_child), so
    `timeout -k` or a killed terminal reaches only the orchestrator; without this the
    worker, and the llama-server it starts, would keep the GPU and the port. Set for
    every llama.cpp tool too, so each link of the chain dies with the one above it.
    libc is loaded here, in the parent: the hook itself only calls prctl after fork."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def gpu_free_bytes() -> int:
    """Free memory on the current CUDA device, as the driver reports it."""
    import torch

    return int(torch.cuda.mem_get_info()[0])


def gpu_total_bytes() -> int:
    import torch

    return int(torch.cuda.mem_get_info()[1])


def ram_available_bytes() -> int:
    """MemAvailable: what a new process can use without swapping."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def disk_free_bytes(path: str | Path) -> int:
    """Free bytes on the disk `path` is (or will be) on."""
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def cpu_count() -> int:
    """Cores this process may run on (its affinity, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def has_cpp_compiler() -> bool:
    """Whether inductor finds a C++ compiler to build CPU kernels with."""
    return any(c and shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++"))


def world_size() -> int:
    """Processes of a torchrun / accelerate launch (1 outside one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def installed(package: str) -> bool:
    """Importable here, found without importing it (unsloth patches libraries on import)."""
    return importlib.util.find_spec(package) is not None


def bf16_matmul_speedup(m: int = 2048, k: int = 576, n: int = 1536, reps: int = 5) -> float:
    """fp32 time / bf16 time for the training step's typical matmul on this CPU
    (0.0: not measured). The default shape is an MLP projection of the CPU
    profile's batch (8 rows of ~260 tokens x hidden 576 x intermediate 1536):
    square 256 x 256 timings said bf16 1.7x faster on an AVX512-BF16 CPU where
    training shapes gain more (AMX, measured 1.9 ms bf16 vs 16 ms fp32 here).

    An AVX2-only x86 CPU has no bf16 instructions and runs them ~70x slower
    (1.8 vs 123 GFLOP/s measured), so there it is not measured at all: with
    another process busy, its multi-threaded fp32 GEMM slowed more than the
    bf16 one, the ratio came out 1.70, and training ran at 100 s a step instead
    of 2. Elsewhere the two dtypes are timed interleaved, fastest of `reps`.
    """
    import platform
    import time

    import torch

    if platform.machine().lower() in ("x86_64", "amd64") and \
            not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return 0.0
    mats = {dt: (torch.randn(m, k).to(dt), torch.randn(k, n).to(dt)) for dt in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(mats, float("inf"))
    for a, b in mats.values():
        a @ b  # warm-up: the first call picks kernels
    for _ in range(reps):
        for dt, (a, b) in mats.items():
            start = time.perf_counter()
            a @ b
            best[dt] = min(best[dt], time.perf_counter() - start)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)
