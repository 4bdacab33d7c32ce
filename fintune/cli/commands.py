"""What each command does with its parsed flags. Errors the user can fix are
raised as FintuneError and reported on one line by the caller (fintune.cli.guarded)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fintune import machine
from fintune.adapters import final_adapter_dir
from fintune.cli.parsers import SKIP_FLAGS, load_config
from fintune.config import ConfigError, overrides_from_args
from fintune.export import smoke_prompt
from fintune.llama_cpp import LlamaCpp
from fintune.manifest import Manifest
from fintune.pipeline import STAGES, artifact_listing, run_pipeline
from fintune.plan import preflight
from fintune.plan.lines import this_machine
from fintune.plan.stages import render_stages, stages
from fintune.plan.training import estimate, render_training
from fintune.quick import quick_config
from fintune.templates import for_llama_cpp
from fintune.train.backends import choose_backend

log = logging.getLogger("fintune")


def run_command(args: argparse.Namespace) -> int:
    """The whole pipeline (`fintune run`, train_financial_model.py)."""
    cfg = load_config(args)
    manifest = Path(args.manifest)
    if args.quick:
        cfg, manifest = quick_config(cfg, manifest, set(overrides_from_args(args)))
        log.info("--quick: every stage on a slice, into %s (the real run is not touched)", manifest.parent)
    if args.dry_run:
        return dry_run(cfg)
    run_pipeline(cfg, manifest, {f for f in SKIP_FLAGS if getattr(args, f)})
    finish(cfg, manifest)
    return 0


def train_command(args: argparse.Namespace) -> int:
    """Data if needed, then training and GRPO (`fintune train`, train.py)."""
    extra = {}
    if args.model_name:
        extra["base_model"] = args.model_name
    if args.output_dir:
        extra["lora_output_dir"] = args.output_dir
    cfg = load_config(args, extra)
    if args.dry_run:
        return dry_run(cfg)
    stages = ["data", "train", "grpo"]
    if machine.world_size() > 1:
        # several processes must not all write the data: it has to exist already
        if not Manifest(Path(args.manifest)).verify_complete("data"):
            raise ConfigError("under torchrun / accelerate launch, prepare the data first: "
                              "fintune data (or python train_financial_model.py --skip_training "
                              "--skip_merge --skip_quantization --skip_eval)")
        stages = ["train"]
    # under torchrun every rank is a fresh process already: train in it
    run_pipeline(cfg, Path(args.manifest), only=stages, isolate=machine.world_size() == 1)
    return 0


def plan_command(args: argparse.Namespace) -> int:
    return dry_run(load_config(args))


def stage_command(args: argparse.Namespace) -> int:
    """One stage alone (`fintune data|merge|export`), recorded in the manifest."""
    run_pipeline(load_config(args), Path(args.manifest), only=[args.stage])
    return 0


def setup_llama_cpp_command(args: argparse.Namespace) -> int:
    """Build llama.cpp into args.dir with the script the package ships (the same one
    `make setup` runs in a checkout), under this Python for its converter's needs."""
    import subprocess
    import sys
    from importlib.resources import as_file, files

    with as_file(files("fintune") / "scripts" / "setup_llama_cpp.sh") as script:
        log.info("building llama.cpp into %s with %s (5-8 minutes on 2 cores)", args.dir, script)
        return subprocess.run(["bash", str(script), args.dir, sys.executable]).returncode


def dry_run(cfg) -> int:
    """The training's plan, then every stage's on this machine; loads no model."""
    if cfg.train.backend == "unsloth":  # plan it even where it cannot run
        backend, reason = "unsloth", "requested"
    else:
        choice = choose_backend(cfg.train.backend)
        backend, reason = choice.backend, choice.reason
    host = this_machine(cfg)
    print(render_training(estimate(cfg, backend), backend, reason, host.gpu_free))
    print()
    print(render_stages(cfg, stages(cfg, backend, host), host))
    print()
    print(preflight.render(cfg, [s.name for s in STAGES if not (s.off and s.off(cfg))]))
    return 0


def finish(cfg, manifest: Path) -> None:
    """A short generation from the Q4_K_M file, then every artifact with its size."""
    q4 = Path(cfg.export.gguf_q4_path)
    if q4.is_file():
        lc = LlamaCpp(Path(cfg.export.llama_cpp_path))
        model_dir = Path(cfg.export.merged_model_dir)
        tok_dir = model_dir if model_dir.is_dir() else final_adapter_dir(cfg)
        text = lc.generate(q4, for_llama_cpp(smoke_prompt(cfg, tok_dir), q4), cfg.export.smoke_tokens * 4)
        log.info("llama.cpp %s says:\n  Q: %s\n  A: %s", q4.name, cfg.export.smoke_prompt,
                 text.replace("\n", "\n     "))
    rows = artifact_listing(manifest)
    if rows:
        width = max(len(p) for p, _ in rows)
        log.info("artifacts:\n%s", "\n".join(f"  {p:<{width}}  {_human(s):>9}" for p, s in rows))


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
