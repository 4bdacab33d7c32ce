"""`fintune`, the command: one subcommand per pipeline stage, and the scripts
`train_financial_model.py` (= `fintune run`) and `train.py` (= `fintune train`).

- this module: the commands, `main` (the installed `fintune`), and the one place a
  user's error becomes a one-line message and an exit code (`guarded`);
- parsers.py: every command's flags (profiles, one group per config section);
- commands.py: what run, train, plan and the single stages do;
- eval.py: `fintune eval`, scoring any model on eval files;
- chat.py: `fintune chat`, a question or a session with the calculator tool.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from fintune.cli import chat as chat_cli
from fintune.cli import commands, parsers
from fintune.cli import eval as eval_cli
from fintune.errors import FintuneError, report
from fintune.logs import setup_logging


def guarded(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command: an error the user can fix is one line and exit 2 (130 when
    interrupted); a bug is not caught, so it keeps its traceback."""
    try:
        return handler(args)
    except FintuneError as e:
        return report(e)


def _stage(name: str):
    return lambda p: parsers.stage_parser(name, p)


# name: (its line in `fintune --help`, fills its parser (None: parses its own), runs it)
COMMANDS: dict[str, tuple[str, Callable | None, Callable[[argparse.Namespace], int]]] = {
    "run": ("the whole pipeline: data, train, grpo (with --grpo), merge, export, eval (= train_financial_model.py)",
            parsers.pipeline_parser, commands.run_command),
    "plan": ("memory, disk and stages a run would need; runs nothing (= run --dry_run)",
             parsers.plan_parser, commands.plan_command),
    "data": ("prepare the training data alone", _stage("data"), commands.stage_command),
    "train": ("prepare data if needed, train the LoRA adapter, resume (= train.py)",
              parsers.train_parser, commands.train_command),
    "merge": ("merge the adapter into the base model (FP16)", _stage("merge"), commands.stage_command),
    "export": ("GGUF conversion, quantization, Ollama Modelfile", _stage("export"), commands.stage_command),
    "eval": ("score a GGUF or Hugging Face model on eval files", None, eval_cli.eval_command),
    "setup-llama-cpp": ("fetch and build the llama.cpp tools that export and eval run",
                        parsers.setup_llama_cpp_parser, commands.setup_llama_cpp_command),
    "chat": ("ask a GGUF (llama-server) or Ollama model with the calculator tool, printing each call",
             chat_cli.fill_chat_parser, chat_cli.chat_command),
}

EXAMPLES = """examples:
  fintune plan --config r1-distill-qwen-14b-24gb    # will it fit? runs nothing
  fintune run --config r1-distill-qwen-14b-24gb     # the whole pipeline on one 24 GB card
  fintune run                                       # the profile this machine can run
  fintune train --resume_from_checkpoint latest     # continue an interrupted training
  fintune eval --eval_file FILE.jsonl --gguf outputs/financial_model_q4_k_m.gguf --output outputs/eval_q4
  fintune chat --gguf outputs/financial_model_q4_k_m.gguf "What is 10000 at 5% for 3 years?"
  fintune COMMAND --help                            # every flag of one command, by section"""


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="fintune", allow_abbrev=False, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune an open model into a finance specialist and ship it as GGUF for "
                    "llama.cpp and Ollama. Profiles by name: " + ", ".join(parsers.profiles().names()) + ".")
    sub = top.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for name, (summary, fill, _) in COMMANDS.items():
        # eval's parser is its own module's: every argument after `eval` goes to it unparsed
        sp = sub.add_parser(name, help=summary, allow_abbrev=False, add_help=fill is not None)
        if fill is not None:
            fill(sp)
        sp.set_defaults(parser=sp)
    return top


def main(argv: list[str] | None = None) -> int:
    """The installed `fintune` command."""
    argv = sys.argv[1:] if argv is None else argv
    top = build_parser()
    args, rest = top.parse_known_args(argv)
    setup_logging()
    if args.command == "eval":
        return guarded(eval_cli.eval_command, eval_cli.parse(rest))
    if rest:  # perhaps --learning-rate for --learning_rate: parse again with the command's spelling
        args, rest = top.parse_known_args(parsers.hyphens_to_underscores(args.parser, argv))
    parsers.reject_unknown(args.parser, rest)
    return guarded(COMMANDS[args.command][2], args)


def run_main(argv: list[str] | None = None) -> int:
    """train_financial_model.py: the whole pipeline."""
    setup_logging()
    return guarded(commands.run_command, parsers.parse(parsers.pipeline_parser(), argv))


def train_main(argv: list[str] | None = None) -> int:
    """train.py: data if needed, then training."""
    setup_logging()
    return guarded(commands.train_command, parsers.parse(parsers.train_parser(), argv))


def eval_main(argv: list[str] | None = None) -> int:
    """`fintune eval` with its own arguments (argv after `eval`)."""
    setup_logging()
    return guarded(eval_cli.eval_command, eval_cli.parse(argv))
