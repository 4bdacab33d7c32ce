"""The flags of every command: profiles by name, one argument group per config
section (each flag with its field's help), and the stage flags. Heavy libraries
load only inside the stages, so --help and configuration errors answer at once."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fintune import machine
from fintune.config import FLAGS, SECTIONS, ConfigError, add_config_flags, build_config, load_yaml, overrides_from_args
from fintune.registry import Registry

log = logging.getLogger("fintune")
# The profiles ship inside the package, so an installed `fintune` finds them from any
# directory; the repository's configs/ is a symlink to this folder.
PROFILE_DIR = Path(__file__).resolve().parent.parent / "configs"
CPU_PROFILE = PROFILE_DIR / "cpu-smollm2.yaml"
GPU_PROFILE = PROFILE_DIR / "r1-distill-qwen-14b-24gb.yaml"
# --skip_* flag -> the stage it skips (fintune.pipeline.STAGES)
SKIP_FLAGS = {"skip_dataset_prep": "data", "skip_training": "train", "skip_grpo": "grpo", "skip_merge": "merge",
              "skip_quantization": "export", "skip_eval": "eval"}


# ---- profiles ----------------------------------------------------------------

def choose_profile(explicit: str | None) -> tuple[Path, str]:
    """The --config file or profile name, or the profile this machine can run, with the reason."""
    if explicit:
        return profile_path(explicit), "given with --config"
    if machine.cuda_available():
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
    """Defaults, then the profile, then the flags given (and `extra`, flags under other names)."""
    path, reason = choose_profile(args.config)
    overrides = overrides_from_args(args)
    overrides.update(extra or {})
    cfg = build_config(load_yaml(path), overrides)
    log.info("profile %s from %s (%s)", cfg.profile, path, reason)
    return cfg


# ---- parsers -------------------------------------------------------------------

def described(p: argparse.ArgumentParser | None, prog: str, description: str,
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
    "%(prog)s --skip_training --quant_types Q4_K_M,Q5_K_M  # new quants: export and eval rerun, training left as is",
    "%(prog)s --grpo                                   # GRPO on the scorer's rewards after SFT",
]


def pipeline_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = described(p, "train_financial_model.py",
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


def train_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = described(p, "train.py", "Prepare data (if needed) and train the LoRA adapter (then GRPO with --grpo).", [
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


def plan_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = described(p, "fintune plan", "What a run would do and need (memory per GPU, disk, the stages); "
                  "loads no model and runs nothing. The same as `run --dry_run`.", [
                      "%(prog)s                                   # the profile this machine would run",
                      "%(prog)s --config r1-distill-qwen-14b-24gb --backend unsloth",
                      "%(prog)s --config r1-distill-qwen-14b-24gb --max_seq_length 2048"])
    add_profile_args(p, manifest=False)
    add_setting_groups(p)
    return p


def setup_llama_cpp_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = described(p, "fintune setup-llama-cpp", "Fetch llama.cpp's source (from the llama-cpp-python sdist on "
                  "PyPI) and build the tools export and eval run: llama-quantize, llama-completion, "
                  "llama-perplexity, llama-server; CUDA where nvcc and a GPU are present. Needs CMake and a "
                  "C/C++ compiler. Then pass --llama_cpp_path DIR (or run from DIR's parent).", [
                      "%(prog)s                    # into ./llama.cpp",
                      "%(prog)s ~/llama.cpp        # then: fintune run --llama_cpp_path ~/llama.cpp"])
    p.usage = "%(prog)s [DIR]"
    p.add_argument("dir", nargs="?", default="llama.cpp", metavar="DIR",
                   help="where llama.cpp goes (default: %(default)s)")
    return p


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
    p = described(p, f"fintune {stage}", description + " Skipped when the manifest says it is up to date.",
                  ["%(prog)s --config r1-distill-qwen-14b-24gb", f"%(prog)s {example}"])
    add_profile_args(p)
    add_setting_groups(p)
    p.set_defaults(stage=stage)
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like parse_args, but hyphens in flag names are accepted (--learning-rate, as HF
    tools take it) and an unknown flag gets a "did you mean"."""
    import sys

    args, unknown = parser.parse_known_args(hyphens_to_underscores(parser, sys.argv[1:] if argv is None else argv))
    reject_unknown(parser, unknown)
    return args


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def _canonical(flag: str) -> str:
    return "--" + flag[2:].replace("-", "_")


def hyphens_to_underscores(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--learning-rate 1e-4` and `--learning-rate=1e-4` as `--learning_rate`; a flag the
    parser knows as written (--no-eval_cache) is left alone."""
    known = _long_options(parser)
    by_canonical = {_canonical(o): o for o in known}
    out = []
    for token in argv:
        flag, eq, value = token.partition("=")
        if token.startswith("--") and flag not in known and _canonical(flag) in by_canonical:
            token = by_canonical[_canonical(flag)] + eq + value
        out.append(token)
    return out


def reject_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """One short line per unknown flag, with the nearest valid one (difflib), instead of
    every option the command has."""
    import difflib

    if not unknown:
        return
    known = _long_options(parser)
    by_canonical = {_canonical(o): o for o in known}
    flags = [u for u in unknown if u.startswith("-")] or unknown
    first = flags[0].partition("=")[0]
    close = difflib.get_close_matches(_canonical(first), list(by_canonical), n=1, cutoff=0.6)
    hint = f"did you mean {by_canonical[close[0]]}?" if close else f"`{parser.prog} --help` lists every option"
    parser.error(f"unrecognized arguments: {' '.join(unknown)}; {hint}")
