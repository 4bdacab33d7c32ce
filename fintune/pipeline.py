"""The orchestrator: a list of stages, each ``run(cfg) -> artifact path(s)``.

A stage is skipped when the manifest says it is up to date (same config, same
inputs, artifacts unchanged on disk), so a finished stage is never redone by
accident. A --skip_* flag skips a stage outright; if the manifest has a record
for it, that record must still match what is on disk.
"""
from __future__ import annotations

import importlib
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fintune.config import PipelineConfig, config_fingerprint
from fintune.manifest import Manifest, describe, now

log = logging.getLogger("fintune")


@dataclass
class Stage:
    name: str
    skip_flag: str
    entry: str                       # "module:function"
    settings: Callable[[PipelineConfig], dict]
    after: tuple[str, ...] = ()      # stages whose artifacts are this stage's inputs

    def run(self, cfg: PipelineConfig):
        module, func = self.entry.split(":")
        return getattr(importlib.import_module(module), func)(cfg)


def _train_settings(cfg: PipelineConfig) -> dict:
    train = cfg.section_dict("train")
    train.pop("resume_from_checkpoint")  # how to run, not what to produce
    return {"model": cfg.section_dict("model"), "lora": cfg.section_dict("lora"), "train": train}


def _export_settings(cfg: PipelineConfig) -> dict:
    from fintune.export.llama_cpp import LlamaCpp

    export = {k: v for k, v in cfg.section_dict("export").items() if k not in ("merged_model_dir", "merge_mode")}
    # a rebuilt llama.cpp is a new converter: re-export, and the manifest says which one made the files
    export["llama_cpp_version"] = LlamaCpp(Path(cfg.export.llama_cpp_path)).version()
    return export


STAGES = [
    # the data stage tokenizes with the base model against max_seq_length
    Stage("data", "skip_dataset_prep", "fintune.data:run",
          lambda c: {**c.section_dict("data"), "base_model": c.model.base_model,
                     "max_seq_length": c.model.max_seq_length}),
    Stage("train", "skip_training", "fintune.train:run", _train_settings, after=("data",)),
    Stage("merge", "skip_merge", "fintune.merge:run",
          lambda c: {"merged_model_dir": c.export.merged_model_dir, "merge_mode": c.export.merge_mode},
          after=("train",)),
    Stage("export", "skip_quantization", "fintune.export:run", _export_settings, after=("merge",)),
    Stage("eval", "skip_eval", "fintune.eval:run", lambda c: c.section_dict("eval"),
          after=("data", "train", "export")),
]
STAGE_NAMES = [s.name for s in STAGES]


def fingerprint(stage: Stage, cfg: PipelineConfig, manifest: Manifest) -> str:
    upstream = {}
    for dep in stage.after:
        rec = manifest.stage(dep) or {}
        upstream[dep] = [f["sha256"] for a in rec.get("artifacts", []) for f in a["files"]]
    return config_fingerprint({"settings": stage.settings(cfg), "inputs": upstream})


def run_pipeline(cfg: PipelineConfig, manifest_path: Path, skip: set[str] = frozenset(),
                 only: list[str] | None = None) -> dict[str, list[str]]:
    manifest = Manifest(manifest_path)
    produced: dict[str, list[str]] = {}
    for stage in STAGES:
        if only is not None and stage.name not in only:
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
        produced[stage.name] = run_stage(stage, cfg, manifest, fp)
    return produced


def run_stage(stage: Stage, cfg: PipelineConfig, manifest: Manifest, fp: str) -> list[str]:
    started, t0 = now(), time.time()
    manifest.save_stage(stage.name, {"status": "running", "started": started, "fingerprint": fp,
                                     "config": stage.settings(cfg), "artifacts": []})
    try:
        result = stage.run(cfg)
    except BaseException as e:
        manifest.save_stage(stage.name, {"status": "failed", "started": started, "ended": now(),
                                         "fingerprint": fp, "config": stage.settings(cfg),
                                         "error": "".join(traceback.format_exception_only(type(e), e)).strip(),
                                         "artifacts": []})
        raise
    paths = result if isinstance(result, list) else [result]
    manifest.save_stage(stage.name, {
        "status": "complete", "started": started, "ended": now(), "seconds": round(time.time() - t0, 1),
        "fingerprint": fp, "config": stage.settings(cfg), "artifacts": [describe(p) for p in paths]})
    log.info("stage %-6s done in %.0fs", stage.name, time.time() - t0)
    return [str(p) for p in paths]


def artifact_listing(manifest_path: Path) -> list[tuple[str, int]]:
    data = Manifest(manifest_path).load()
    rows = []
    for name in STAGE_NAMES:
        for art in data["stages"].get(name, {}).get("artifacts", []):
            rows.append((art["path"], art["size"]))
    return rows
