"""Command-line entry points. Heavy libraries load only inside the stages, so
--help and configuration errors answer at once."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from fintune.config import (FLAGS, SECTIONS, ConfigError, add_config_flags, build_config, load_yaml,
                            overrides_from_args)
from fintune.errors import FintuneError, StageProcessError
from fintune.registry import Registry
from fintune.train.signals import TrainingInterrupted

log = logging.getLogger("fintune")
# The profiles ship inside the package, so an installed `fintune` finds them from any
# directory; the repository's configs/ is a symlink to this folder.
PROFILE_DIR = Path(__file__).resolve().parent / "configs"
CPU_PROFILE = PROFILE_DIR / "cpu-smollm2.yaml"
GPU_PROFILE = PROFILE_DIR / "r1-distill-qwen-14b-24gb.yaml"
# --skip_* flag -> the stage it skips (fintune.pipeline.STAGES; not imported here to keep --help light)
SKIP_FLAGS = {"skip_dataset_prep": "data", "skip_training": "train", "skip_grpo": "grpo", "skip_merge": "merge",
              "skip_quantization": "export", "skip_eval": "eval"}


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def choose_profile(explicit: str | None) -> tuple[Path, str]:
    """The --config file or profile name, or the profile this machine can run, with the reason."""
    if explicit:
        return profile_path(explicit), "given with --config"
    from fintune.train.backends import cuda_available

    if cuda_available():
        return GPU_PROFILE, "a CUDA GPU is present"
    return CPU_PROFILE, "no CUDA GPU found (torch.cuda.is_available() is False): embedded default"


def profiles() -> Registry[Path]:
    """The shipped profiles, each by its file's name without .yaml."""
    reg: Registry[Path] = Registry("profile")
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        reg.register(path.stem, path)
    return reg


def profile_path(given: str) -> Path:
    """--config as a YAML file if there is one, else as a shipped profile's name."""
    path = Path(given).expanduser()
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise ConfigError(f"--config {given}: no such file; give a profile YAML file or a shipped "
                          f"profile by name: {', '.join(profiles().names())}")
    return profiles().get(given)


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
    from fintune.train import plan_stages

    m = plan_stages.this_machine(cfg)
    print(plan.render(plan.estimate(cfg, backend), backend, reason, m.gpu_free))
    print()
    print(plan_stages.render(cfg, plan_stages.stages(cfg, backend, m), m))
    return 0


def _described(p: argparse.ArgumentParser | None, prog: str, description: str,
               examples: list[str]) -> argparse.ArgumentParser:
    """`p` (a `fintune` subcommand's parser) or a new one for a top-level script,
    with its description and the examples shown at the end of --help."""
    p = p or argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    p.description = description
    p.usage = "%(prog)s [--config NAME|FILE] [options]"  # the options follow, grouped by section
    p.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)  # %(prog)s: the command as invoked
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


def add_profile_args(p: argparse.ArgumentParser, manifest: bool = True):
    g = p.add_argument_group("profile and paths")
    g.add_argument("--config", metavar="NAME|FILE",
                   help=f"a shipped profile by name ({', '.join(profiles().names())}) or a profile YAML "
                        f"file; default: chosen by hardware (CUDA: {GPU_PROFILE.stem}, else {CPU_PROFILE.stem})")
    if manifest:
        g.add_argument("--manifest", default="outputs/run_manifest.json",
                       help="the run's record of every stage, which reruns consult (default: %(default)s)")
    return g


def add_setting_groups(p: argparse.ArgumentParser) -> None:
    """One group per profile section; every field is a flag of its own name."""
    for section in SECTIONS:
        g = p.add_argument_group(f"{section} settings", f"the profile's `{section}:` section; a flag wins over it")
        add_config_flags(g, only=[name for name, (s, _) in FLAGS.items() if s == section])


RUN_EXAMPLES = [
    "%(prog)s                                          # the profile this machine can run",
    "%(prog)s --config r1-distill-qwen-14b-24gb --dry_run  # plan, memory and disk; runs nothing",
    "%(prog)s --config r1-distill-qwen-7b-h100 --max_steps 500",
    "%(prog)s --quick                                  # every stage on a slice, to check a setup",
    "%(prog)s --skip_dataset_prep --skip_training      # merge, export and eval again",
    "%(prog)s --grpo                                   # GRPO on the scorer's rewards after SFT",
]


def pipeline_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = _described(p, "train_financial_model.py",
                   "Fine-tune a finance specialist and ship it as GGUF: "
                   "data -> LoRA training -> FP16 merge -> GGUF export -> evaluation.", RUN_EXAMPLES)
    add_profile_args(p)
    g = p.add_argument_group("stages", "a stage whose settings, inputs and outputs are unchanged is not rerun")
    g.add_argument("--dry_run", action="store_true", help="print the plan and memory/disk estimates; run nothing")
    g.add_argument("--quick", action="store_true",
                   help="every stage on a slice (a few steps, the first quant type, a few eval items) into "
                        "a quick/ folder beside the manifest, to check a setup end to end")
    for flag, stage in SKIP_FLAGS.items():
        g.add_argument(f"--{flag}", action="store_true",
                       help=f"skip the {stage} stage (its recorded outputs must still be on disk)")
    add_setting_groups(p)
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like parse_args, but an unknown flag lists every valid one."""
    args, unknown = parser.parse_known_args(argv)
    reject_unknown(parser, unknown)
    return args


def reject_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    if unknown:
        valid = sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))
        parser.error(f"unrecognized arguments: {' '.join(unknown)}\nvalid options: {' '.join(valid)}")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    return run_command(parse(pipeline_parser(), argv))


def run_command(args: argparse.Namespace) -> int:
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
        from fintune.templates import for_llama_cpp

        lc = LlamaCpp(Path(cfg.export.llama_cpp_path))
        model_dir = Path(cfg.export.merged_model_dir)
        from fintune.train import final_adapter_dir

        tok_dir = model_dir if model_dir.is_dir() else final_adapter_dir(cfg)
        text = lc.generate(q4, for_llama_cpp(smoke_prompt(cfg, tok_dir), q4), cfg.export.smoke_tokens * 4)
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


def train_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = _described(p, "train.py", "Prepare data (if needed) and train the LoRA adapter (then GRPO with --grpo).", [
        "%(prog)s --model_name HuggingFaceTB/SmolLM2-135M-Instruct --dataset_folder datasets/ "
        "--output_dir outputs/financial_lora",
        "%(prog)s --resume_from_checkpoint latest     # after Ctrl-C, SIGTERM or a crash",
        "torchrun --nproc_per_node 4 train.py --backend peft   # several GPUs; data prepared first"])
    g = add_profile_args(p)
    g.add_argument("--model_name", help="base model: hub id, local directory or embedded:... (= --base_model)")
    g.add_argument("--output_dir", help="where the adapter is written (= --lora_output_dir)")
    p.add_argument_group("stages").add_argument(
        "--dry_run", action="store_true", help="print the plan and memory/disk estimates; run nothing")
    add_setting_groups(p)
    return p


def train_main(argv: list[str] | None = None) -> int:
    setup_logging()
    return train_command(parse(train_parser(), argv))


def train_command(args: argparse.Namespace) -> int:
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
        stages = ["data", "train", "grpo"]
        if world_size() > 1:
            # several processes must not all write the data: it has to exist already
            from fintune.manifest import Manifest

            if not Manifest(Path(args.manifest)).verify_complete("data"):
                raise ConfigError("under torchrun / accelerate launch, prepare the data first: "
                                  "fintune data (or python train_financial_model.py --skip_training "
                                  "--skip_merge --skip_quantization --skip_eval)")
            stages = ["train"]
        # under torchrun every rank is a fresh process already: train in it
        run_pipeline(cfg, Path(args.manifest), only=stages, isolate=world_size() == 1)
    except FintuneError as e:
        return report_error(e)
    return 0


def plan_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = _described(p, "fintune plan", "What a run would do and need (memory per GPU, disk, the stages); "
                   "loads no model and runs nothing. The same as `run --dry_run`.", [
                       "%(prog)s                                   # the profile this machine would run",
                       "%(prog)s --config r1-distill-qwen-14b-24gb --backend unsloth",
                       "%(prog)s --config r1-distill-qwen-14b-24gb --max_seq_length 2048"])
    add_profile_args(p, manifest=False)
    add_setting_groups(p)
    return p


def plan_command(args: argparse.Namespace) -> int:
    try:
        return dry_run(load_config(args))
    except FintuneError as e:
        return report_error(e)


STAGE_HELP = {
    "data": ("Prepare the training data alone: generated curriculum, hub corpora, market data and "
             "your files in --dataset_folder, validated and tokenized.", "--dataset_folder my_data/"),
    "merge": ("Merge the trained LoRA adapter into the 16-bit base model (FP16 safetensors), "
              "with a logit check against base + adapter.", "--merge_mode by_shard   # RAM smaller than the model"),
    "export": ("Convert the merged model to GGUF with llama.cpp, quantize it, verify every file "
               "and write the Ollama Modelfile.", "--quant_types Q4_K_M --llama_cpp_path ~/llama.cpp"),
}


def stage_parser(stage: str, p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """One stage alone, recorded in the manifest as the pipeline records it."""
    description, example = STAGE_HELP[stage]
    p = _described(p, f"fintune {stage}", description + " Skipped when the manifest says it is up to date.",
                   ["%(prog)s --config r1-distill-qwen-14b-24gb", f"%(prog)s {example}"])
    add_profile_args(p)
    add_setting_groups(p)
    p.set_defaults(stage=stage)
    return p


def stage_command(args: argparse.Namespace) -> int:
    from fintune.pipeline import run_pipeline

    try:
        run_pipeline(load_config(args), Path(args.manifest), only=[args.stage])
    except FintuneError as e:
        return report_error(e)
    return 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
