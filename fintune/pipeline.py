"""The orchestrator: a list of stages, each ``run(cfg) -> artifact path(s)``.

A stage is skipped when the manifest says it is up to date (same config, same
inputs, artifacts unchanged on disk), so a finished stage is never redone by
accident. A --skip_* flag skips a stage outright; if the manifest has a record
for it, that record must still match what is on disk.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fintune import data, export, machine, merge, train
from fintune.config import PipelineConfig, config_fingerprint
from fintune.data.quant import curriculum_digest
from fintune.errors import FintuneError, StageProcessError, TrainingInterrupted
from fintune.eval import stage as eval_stage
from fintune.llama_cpp import LlamaCpp
from fintune.manifest import Manifest, describe, now
from fintune.plan import preflight
from fintune.train import grpo

log = logging.getLogger("fintune")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


StageEntry = Callable[[PipelineConfig], "Path | list[Path]"]


def step_name(fn: StageEntry) -> str:
    """How a stage process is told which step to run: `module:function`, taken from the
    step itself (never written by hand), and turned back into it by resolve_step."""
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve_step(name: str) -> StageEntry:
    module, _, func = name.partition(":")
    return getattr(importlib.import_module(module), func)


@dataclass
class Stage:
    name: str
    skip_flag: str
    entry: StageEntry                # run(cfg) -> artifact path(s)
    settings: Callable[[PipelineConfig], dict]
    after: tuple[str, ...] = ()      # stages whose artifacts are this stage's inputs
    # loads a model: each step runs in a fresh Python process (see fintune.worker)
    own_process: bool = False
    steps: Callable[[PipelineConfig], list[StageEntry]] | None = None  # default: [entry]
    # an opt-in stage: off, it does not run, and a stage after it takes its input `passes_on`
    off: Callable[[PipelineConfig], bool] | None = None
    passes_on: str = ""

    def step_entries(self, cfg: PipelineConfig) -> list[StageEntry]:
        return self.steps(cfg) if self.steps else [self.entry]


def _train_settings(cfg: PipelineConfig) -> dict:
    train = cfg.section_dict("train")
    train.pop("resume_from_checkpoint")  # how to run, not what to produce
    return {"model": cfg.section_dict("model"), "lora": cfg.section_dict("lora"), "train": train}


def _data_settings(cfg: PipelineConfig) -> dict:
    settings = {**cfg.section_dict("data"), "base_model": cfg.model.base_model,
                "max_seq_length": cfg.model.max_seq_length}
    if "quant" in cfg.data.generators:  # a changed curriculum is new data, like a changed setting
        settings["curriculum"] = curriculum_digest()
    return settings


def _grpo_settings(cfg: PipelineConfig) -> dict:
    return {k: v for k, v in cfg.section_dict("train").items() if k.startswith("grpo")}


def _export_settings(cfg: PipelineConfig) -> dict:
    export = {k: v for k, v in cfg.section_dict("export").items() if k not in ("merged_model_dir", "merge_mode")}
    # a rebuilt llama.cpp is a new converter: re-export, and the manifest says which one made the files
    export["llama_cpp_version"] = LlamaCpp(Path(cfg.export.llama_cpp_path)).version()
    return export


STAGES = [
    # the data stage tokenizes with the base model against max_seq_length
    Stage("data", "skip_dataset_prep", data.run, _data_settings),
    Stage("train", "skip_training", train.run, _train_settings, after=("data",), own_process=True,
          steps=train.steps),
    # GRPO from the training's adapter (--grpo); off, merge and eval take the training's
    Stage("grpo", "skip_grpo", grpo.run, _grpo_settings, after=("data", "train"),
          own_process=True, off=lambda c: not c.train.grpo, passes_on="train"),
    Stage("merge", "skip_merge", merge.run,
          lambda c: {"merged_model_dir": c.export.merged_model_dir, "merge_mode": c.export.merge_mode},
          after=("grpo",), own_process=True),
    Stage("export", "skip_quantization", export.run, _export_settings, after=("merge",)),
    Stage("eval", "skip_eval", eval_stage.run, lambda c: c.section_dict("eval"),
          after=("data", "grpo", "export"), own_process=True),
]
STAGE_NAMES = [s.name for s in STAGES]



def inputs(stage: Stage, cfg: PipelineConfig) -> list[str]:
    """The stages whose artifacts `stage` reads: an opt-in stage that is off stands aside."""
    by_name = {s.name: s for s in STAGES}
    return [by_name[d].passes_on if by_name[d].off and by_name[d].off(cfg) else d for d in stage.after]


def fingerprint(stage: Stage, cfg: PipelineConfig, manifest: Manifest) -> str:
    upstream = {}
    for dep in inputs(stage, cfg):
        rec = manifest.stage(dep) or {}
        upstream[dep] = [f["sha256"] for a in rec.get("artifacts", []) for f in a["files"]]
    return config_fingerprint({"settings": stage.settings(cfg), "inputs": upstream})


def run_pipeline(cfg: PipelineConfig, manifest_path: Path, skip: set[str] = frozenset(),
                 only: list[str] | None = None, isolate: bool = True) -> dict[str, list[str]]:
    """Run every stage that is not up to date. `isolate`: model-loading stages in
    fresh processes (off under torchrun, whose ranks are fresh processes already)."""
    manifest = Manifest(manifest_path)
    produced: dict[str, list[str]] = {}
    to_run = pending(cfg, manifest, skip, only)
    if to_run:  # what a later stage needs is checked before the first one starts
        preflight.require_ready(cfg, to_run)
    for stage in STAGES:
        if only is not None and stage.name not in only:
            continue
        if stage.off and stage.off(cfg):
            log.info("stage %-6s off (its flag, --%s, is not set)", stage.name, stage.name)
            continue
        if stage.skip_flag in skip:
            rec = manifest.verify_complete(stage.name)
            log.info("stage %-6s skipped (--%s)%s", stage.name, stage.skip_flag,
                     "; its recorded artifacts still match" if rec else "")
            continue
        fp = fingerprint(stage, cfg, manifest)
        up, why = manifest.is_up_to_date(stage.name, fp)
        if up:
            log.info("stage %-6s up to date, not rerun (manifest %s)", stage.name, manifest_path)
            continue
        log.info("stage %-6s running (%s)", stage.name, why)
        produced[stage.name] = run_stage(stage, cfg, manifest, fp, isolate and stage.own_process)
    return produced


def pending(cfg: PipelineConfig, manifest: Manifest, skip: set[str] = frozenset(),
            only: list[str] | None = None) -> list[str]:
    """The stages a run will run: from the first one that is not up to date, every
    later one that is selected, on and not skipped (a rerun stage makes new inputs)."""
    names: list[str] = []
    for stage in STAGES:
        if (only is not None and stage.name not in only) or (stage.off and stage.off(cfg)) \
                or stage.skip_flag in skip:
            continue
        if names or not manifest.is_up_to_date(stage.name, fingerprint(stage, cfg, manifest))[0]:
            names.append(stage.name)
    return names


def run_stage(stage: Stage, cfg: PipelineConfig, manifest: Manifest, fp: str, in_child: bool) -> list[str]:
    started, t0 = now(), time.time()
    record = {"started": started, "fingerprint": fp, "config": stage.settings(cfg), "pids": []}
    manifest.save_stage(stage.name, {**record, "status": "running", "artifacts": []})
    try:
        if in_child:
            result = None
            for entry in stage.step_entries(cfg):
                result = run_in_child(stage.name, entry, cfg,
                                      on_start=lambda pid: _add_pid(manifest, stage.name, record, pid))
        else:
            record["pids"].append(os.getpid())
            result = stage.entry(cfg)
    except BaseException as e:
        # the user's to fix: the message; a bug: the traceback (the child's, when it ran there)
        error = e.error if isinstance(e, StageProcessError) else str(e) if isinstance(e, FintuneError) else \
            "".join(traceback.format_exception(type(e), e, e.__traceback__)).strip()
        status = "interrupted" if isinstance(e, TrainingInterrupted) else "failed"
        manifest.save_stage(stage.name, {**record, "status": status, "ended": now(), "error": error,
                                         "artifacts": []})
        raise
    paths = result if isinstance(result, list) else [result]
    manifest.save_stage(stage.name, {
        **record, "status": "complete", "ended": now(), "seconds": round(time.time() - t0, 1),
        "artifacts": [describe(p) for p in paths]})
    log.info("stage %-6s done in %.0fs", stage.name, time.time() - t0)
    return [str(p) for p in paths]


def _add_pid(manifest: Manifest, name: str, record: dict, pid: int) -> None:
    record["pids"].append(pid)
    manifest.save_stage(name, {**record, "status": "running", "artifacts": []})


def run_in_child(stage: str, entry: StageEntry, cfg: PipelineConfig, on_start=None) -> list[str]:
    """Run one step in `python -m fintune.worker` and return its artifact paths.

    The child shares this terminal (log lines, progress bars) but not its
    process group: Ctrl-C and SIGTERM reach this process, which passes each on
    once, so training saves a checkpoint and stops, and a second signal still
    kills it. Being in a group of its own, it would outlive a SIGKILL of this
    process (`timeout -k`): machine.die_with_parent has the kernel kill it then.
    """
    with tempfile.TemporaryDirectory(prefix="fintune-stage-") as tmp:
        cfg_path, result_path = Path(tmp) / "config.json", Path(tmp) / "result.json"
        cfg_path.write_text(json.dumps(cfg.to_dict(), default=str), encoding="utf-8")
        env = dict(os.environ)
        # the package must import in the child whatever the working directory
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        env.update(allocator_env(entry, cfg))
        proc = subprocess.Popen([sys.executable, "-m", "fintune.worker", step_name(entry), str(cfg_path),
                                 str(result_path)],
                                env=env, process_group=0, preexec_fn=machine.die_with_parent())
        if on_start:
            on_start(proc.pid)
        code = _wait_forwarding_signals(proc)
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if code == 0 and result.get("status") == "complete":
        return result["artifacts"]
    if code == 130 or result.get("status") == "interrupted":
        raise TrainingInterrupted(result.get("error") or f"stage {stage} stopped by a signal")
    error = result.get("error") or f"the process ended with exit code {code} and no result (killed?)"
    raise StageProcessError(stage, code, error)


def mimalloc_path() -> Path | None:
    """libmimalloc.so from the cmeel-mimalloc wheel, if installed."""
    import sysconfig

    for root in dict.fromkeys([sysconfig.get_paths()["purelib"], *sys.path]):
        lib = Path(root) / "cmeel.prefix" / "lib" / "libmimalloc.so"
        if lib.is_file():
            return lib
    return None


def allocator_env(entry: StageEntry, cfg: PipelineConfig) -> dict[str, str]:
    """LD_PRELOAD of mimalloc for a training step on a CPU (train.cpu_allocator)."""
    if cfg.train.cpu_allocator != "mimalloc" or not entry.__module__.startswith("fintune.train.") \
            or not sys.platform.startswith("linux"):
        return {}
    lib = mimalloc_path()
    if machine.cuda_available() or lib is None:
        if lib is None:
            log.info("train: cmeel-mimalloc not installed; the training process uses glibc's allocator")
        return {}
    log.info("train: the training process allocates through mimalloc (%s)", lib)
    return {"LD_PRELOAD": os.pathsep.join(p for p in (str(lib), os.environ.get("LD_PRELOAD")) if p)}


def _wait_forwarding_signals(proc: subprocess.Popen) -> int:
    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def artifact_listing(manifest_path: Path) -> list[tuple[str, int]]:
    data = Manifest(manifest_path).load()
    rows = []
    for name in STAGE_NAMES:
        for art in data["stages"].get(name, {}).get("artifacts", []):
            rows.append((art["path"], art["size"]))
    return rows
