"""`fintune`, the installed command: one subcommand per pipeline stage. Each is the
parser and handler of the top-level scripts (fintune.cli), so `fintune run` takes
exactly the flags of `python train_financial_model.py`, and `fintune eval` those of
`python -m fintune.eval`."""
from __future__ import annotations

import argparse
import sys

from fintune import cli


def _eval(argv: list[str]) -> int:
    from fintune.eval.cli import main

    return main(argv, prog="fintune eval")


# name: (its line in `fintune --help`, fills its parser, runs it); eval keeps its own parser
COMMANDS = {
    "run": ("the whole pipeline: data, train, grpo (with --grpo), merge, export, eval (= train_financial_model.py)",
            cli.pipeline_parser, cli.run_command),
    "plan": ("memory, disk and stages a run would need; runs nothing (= run --dry_run)",
             cli.plan_parser, cli.plan_command),
    "data": ("prepare the training data alone", lambda p: cli.stage_parser("data", p), cli.stage_command),
    "train": ("prepare data if needed, train the LoRA adapter, resume (= train.py)",
              cli.train_parser, cli.train_command),
    "merge": ("merge the adapter into the base model (FP16)", lambda p: cli.stage_parser("merge", p),
              cli.stage_command),
    "export": ("GGUF conversion, quantization, Ollama Modelfile", lambda p: cli.stage_parser("export", p),
               cli.stage_command),
    "eval": ("score a GGUF or Hugging Face model on eval files (= python -m fintune.eval)", None, _eval),
}

EXAMPLES = """examples:
  fintune plan --config r1-distill-qwen-14b-24gb    # will it fit? runs nothing
  fintune run --config r1-distill-qwen-14b-24gb     # the whole pipeline on one 24 GB card
  fintune run                                       # the profile this machine can run
  fintune train --resume_from_checkpoint latest     # continue an interrupted training
  fintune eval --eval_file FILE.jsonl --gguf outputs/financial_model_q4_k_m.gguf --output outputs/eval_q4
  fintune COMMAND --help                            # every flag of one command, by section"""


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="fintune", allow_abbrev=False, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune an open model into a finance specialist and ship it as GGUF for "
                    "llama.cpp and Ollama. Profiles by name: " + ", ".join(cli.profiles().names()) + ".")
    sub = top.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for name, (summary, fill, handler) in COMMANDS.items():
        # eval's parser is its own module's: every argument after `eval` goes to it unparsed
        sp = sub.add_parser(name, help=summary, allow_abbrev=False, add_help=fill is not None)
        if fill is not None:
            fill(sp)
        sp.set_defaults(handler=handler, parser=sp)
    return top


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "eval":
        return args.handler(rest)
    cli.reject_unknown(args.parser, rest)
    cli.setup_logging()
    return args.handler(args)
