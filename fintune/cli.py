"""Command-line entry points. Heavy libraries load only inside the stages, so
--help and configuration errors answer at once."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from fintune.config import ConfigError, add_config_flags, build_config, load_yaml, overrides_from_args
from fintune.errors import FintuneError, StageProcessError
from fintune.train.signals import TrainingInterrupted

log = logging.getLogger("fintune")
REPO = Path(__file__).resolve().parent.parent
CPU_PROFILE = REPO / "configs" / "cpu-smollm2.yaml"
GPU_PROFILE = REPO / "configs" / "r1-distill-qwen-14b-24gb.yaml"
SKIP_FLAGS = ["skip_dataset_prep", "skip_training", "skip_merge", "skip_quantization", "skip_eval"]


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def choose_profile(explicit: str | None) -> tuple[Path, str]:
    """The --config file, or the profile this machine can run, with the reason."""
    if explicit:
        return Path(explicit), "given with --config"
    from fintune.train.backends import cuda_available

    if cuda_available():
        return GPU_PROFILE, "a CUDA GPU is present"
    return CPU_PROFILE, "no CUDA GPU found (torch.cuda.is_available() is False): embedded default"


def load_config(args: argparse.Namespace, extra: dict | None = None):
    path, reason = choose_profile(args.config)
    overrides = overrides_from_args(args)
    overrides.update(extra or {})
    cfg = build_config(load_yaml(path), overrides)
    log.info("profile %s from %s (%s)", cfg.profile, path, reason)
    return cfg


def dry_run(cfg) -> int:
    from fintune.train import plan
    from fintune.train.backends import choose_backend

    if cfg.train.backend == "unsloth":  # plan it even where it cannot run
        backend, reason = "unsloth", "requested"
    else:
        choice = choose_backend(cfg.train.backend)
        backend, reason = choice.backend, choice.reason
    from fintune.train.backends import cuda_available

    free = plan.gpu_free_bytes() if cuda_available() else None
    print(plan.render(plan.estimate(cfg, backend), backend, reason, free))
    return 0


def pipeline_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_financial_model.py", allow_abbrev=False,
        description="Fine-tune a finance specialist and ship it as GGUF: "
                    "data -> LoRA training -> FP16 merge -> GGUF export -> evaluation.")
    p.add_argument("--config", help="profile YAML (default: chosen by hardware from configs/)")
    p.add_argument("--manifest", default="outputs/run_manifest.json")
    p.add_argument("--dry_run", action="store_true", help="print the plan and memory/disk estimates; run nothing")
    p.add_argument("--quick", action="store_true",
                   help="every stage on a slice (a few steps, the first quant type, a few eval items) into "
                        "a quick/ folder beside the manifest, to check a setup end to end")
    for flag in SKIP_FLAGS:
        p.add_argument(f"--{flag}", action="store_true")
    add_config_flags(p)
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like parse_args, but an unknown flag lists every valid one."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        valid = sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))
        parser.error(f"unrecognized arguments: {' '.join(unknown)}\nvalid options: {' '.join(valid)}")
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse(pipeline_parser(), argv)
    from fintune.pipeline import artifact_listing, run_pipeline

    try:
        cfg = load_config(args)
        manifest = Path(args.manifest)
        if args.quick:
            from fintune.quick import quick_config

            cfg, manifest = quick_config(cfg, manifest, set(overrides_from_args(args)))
            log.info("--quick: every stage on a slice, into %s (the real run is not touched)", manifest.parent)
        if args.dry_run:
            return dry_run(cfg)
        skip = {f for f in SKIP_FLAGS if getattr(args, f)}
        run_pipeline(cfg, manifest, skip)
        finish(cfg, manifest, artifact_listing)
    except FintuneError as e:
        return report_error(e)
    return 0


def report_error(e: FintuneError) -> int:
    """One line for an error the user can fix (a bug is not caught: it keeps its
    traceback). A stage's process has printed its own error already."""
    if isinstance(e, StageProcessError):
        log.error("%s; its %s is above and in the run manifest", e,
                  "message" if e.returncode == 2 else "traceback")
        return 2 if e.returncode == 2 else 1
    if isinstance(e, TrainingInterrupted):
        log.error("%s", e)
        return 130
    log.error("error: %s", e)
    return 2


def finish(cfg, manifest: Path, listing) -> None:
    """A short generation from the Q4_K_M file, then every artifact with its size."""
    q4 = Path(cfg.export.gguf_q4_path)
    if q4.is_file():
        from fintune.export import smoke_prompt
        from fintune.export.llama_cpp import LlamaCpp

        lc = LlamaCpp(Path(cfg.export.llama_cpp_path))
        model_dir = Path(cfg.export.merged_model_dir)
        tok_dir = model_dir if model_dir.is_dir() else Path(cfg.train.lora_output_dir)
        text = lc.generate(q4, smoke_prompt(cfg, tok_dir), cfg.export.smoke_tokens * 4)
        log.info("llama.cpp %s says:\n  Q: %s\n  A: %s", q4.name, cfg.export.smoke_prompt,
                 text.replace("\n", "\n     "))
    rows = listing(manifest)
    if rows:
        width = max(len(p) for p, _ in rows)
        log.info("artifacts:\n%s", "\n".join(f"  {p:<{width}}  {_human(s):>9}" for p, s in rows))


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", allow_abbrev=False, description="Prepare data (if needed) and train the LoRA adapter.")
    p.add_argument("--config", help="profile YAML (default: chosen by hardware from configs/)")
    p.add_argument("--manifest", default="outputs/run_manifest.json")
    p.add_argument("--model_name", help="base model: hub id, local directory or embedded:...")
    p.add_argument("--output_dir", help="where the adapter is written")
    p.add_argument("--dry_run", action="store_true", help="print the plan and memory/disk estimates; run nothing")
    add_config_flags(p)
    return p


def train_main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse(train_parser(), argv)
    from fintune.pipeline import run_pipeline

    extra = {}
    if args.model_name:
        extra["base_model"] = args.model_name
    if args.output_dir:
        extra["lora_output_dir"] = args.output_dir
    try:
        cfg = load_config(args, extra)
        if args.dry_run:
            return dry_run(cfg)
        stages = ["data", "train"]
        if world_size() > 1:
            # several processes must not all write the data: it has to exist already
            from fintune.manifest import Manifest

            if not Manifest(Path(args.manifest)).verify_complete("data"):
                raise ConfigError("under torchrun / accelerate launch, prepare the data first: "
                                  "python train_financial_model.py --skip_training --skip_merge "
                                  "--skip_quantization --skip_eval")
            stages = ["train"]
        # under torchrun every rank is a fresh process already: train in it
        run_pipeline(cfg, Path(args.manifest), only=stages, isolate=world_size() == 1)
    except FintuneError as e:
        return report_error(e)
    return 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
