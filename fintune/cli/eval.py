"""`fintune eval`: score a model on eval files (JSONL, schema of ../shared/eval/README.md)
and write report.json, report.md, predictions.jsonl and report.png to --output.

    fintune eval --eval_file ../shared/eval/finlora_formula_test.jsonl \\
        --gguf outputs/financial_model_q4_k_m.gguf --no_context --limit 50 --output outputs/eval_q4
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fintune.cli.parsers import hyphens_to_underscores, reject_unknown
from fintune.errors import MissingError
from fintune.models import check_source
from fintune.eval import interrupt
from fintune.eval.evaluate import evaluate, load_eval_file, set_name
from fintune.eval.report import markdown, write_report
from fintune.eval.rescore import comparison_table, rescore
from fintune.eval.runner import GGUFRunner, HFRunner
from fintune.prompts import INSTRUCTIONS
from fintune.sampling import PRESETS, Preset

log = logging.getLogger("fintune")
TOOL_MODES = {"off": [False], "on": [True], "both": [False, True]}

EXAMPLES = """examples:
  {prog} --eval_file ../shared/eval/finlora_formula_test.jsonl \\
      --gguf outputs/financial_model_q4_k_m.gguf --no_context --limit 50 --output outputs/eval_q4
  {prog} --eval_file outputs/data/heldout.jsonl --model outputs/merged_financial_fp16 \\
      --instruction boxed --max_new_tokens 2048 --output outputs/eval_merged     # an R1 profile's model
  {prog} --rescore outputs/eval              # the current scoring rules, into outputs/eval/rescored/
"""


def eval_parser(prog: str = "fintune eval") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                epilog=EXAMPLES.format(prog=prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _set_args(p.add_argument_group("eval sets"))
    _model_args(p.add_argument_group("model (one of --model, --gguf)"))
    _generation_args(p.add_argument_group("prompts and generation"))
    out = p.add_argument_group("output")
    out.add_argument("--output", help="report directory (with --rescore: default DIR/rescored; never DIR itself)")
    out.add_argument("--rescore", metavar="DIR",
                     help="recompute DIR's report from its predictions.jsonl with the current scoring rules, "
                          "into DIR/rescored/ (nothing is generated and DIR is left as it is; --eval_file only "
                          "for reports that do not record their files)")
    return p


def _set_args(sets) -> None:
    sets.add_argument("--eval_file", action="append", help="JSONL eval set; repeatable")
    sets.add_argument("--limit", type=int, help="N items of each file, round-robin over its families")
    ctx = sets.add_mutually_exclusive_group()
    ctx.add_argument("--with_context", dest="with_context", action="store_true", default=None,
                     help="include each item's context (default)")
    ctx.add_argument("--no_context", dest="with_context", action="store_false")
    sets.add_argument("--both_context_modes", action="store_true",
                      help="run each file with and without its context")


def _model_args(model) -> None:
    which = model.add_mutually_exclusive_group()
    which.add_argument("--model", help="Hugging Face checkpoint directory or hub name")
    which.add_argument("--gguf", help="GGUF file, run through llama.cpp")
    model.add_argument("--adapter", help="LoRA adapter directory (with --model)")
    model.add_argument("--tokenizer", help="tokenizer directory for --gguf (default: the GGUF's own chat template)")
    model.add_argument("--name", help="model name in the report")
    model.add_argument("--llama_cpp_path", default="llama.cpp")


def _generation_args(gen) -> None:
    gen.add_argument("--instruction", choices=INSTRUCTIONS.names(), default="final_answer",
                     help="the answer instruction of each prompt: the model's profile's data.instruction "
                          "(R1 profiles: boxed), the one it was trained with")
    gen.add_argument("--max_new_tokens", type=int, default=320)
    gen.add_argument("--sampling", choices=PRESETS.names(), default="greedy",
                     help="greedy (reproducible, CI); r1: DeepSeek's R1 settings (temperature 0.6, top_p 0.95); "
                          "ollama (GGUF only): Ollama's defaults under the shipped Modelfile's parameters")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch_size", type=int, default=16, help="HF runner batch size")
    gen.add_argument("--parallel", type=int, default=4,
                     help="GGUF: llama-server slots decoding together; 1 = one llama-completion per prompt")
    gen.add_argument("--tools", choices=("off", "on", "both"), default="both",
                     help="score without the calculator tool, with it (GGUF through llama-server's "
                          "/v1/chat/completions with tools), or both, a row each")
    gen.add_argument("--chat_template_file", help="GGUF with the tool: a Jinja chat template llama-server uses "
                                                  "in place of the GGUF's own")


def parse(argv, prog: str = "fintune eval") -> argparse.Namespace:
    p = eval_parser(prog)
    args, unknown = p.parse_known_args(hyphens_to_underscores(p, sys.argv[1:] if argv is None else argv))
    reject_unknown(p, unknown)
    if not args.rescore:
        for needed, ok in (("--eval_file", args.eval_file), ("--model or --gguf", args.model or args.gguf),
                           ("--output", args.output)):
            if not ok:
                p.error(f"{needed} is required (or --rescore DIR)")
    if args.adapter and not args.model:
        p.error("--adapter needs --model")
    if args.limit is not None and args.limit <= 0:
        p.error("--limit must be > 0")
    return args


def make_runner(args):
    sampling = Preset(args.sampling, args.seed)
    if args.gguf:
        if not Path(args.gguf).is_file():
            raise MissingError(f"--gguf {args.gguf}: no such file")
        return GGUFRunner(args.gguf, args.llama_cpp_path, args.tokenizer, name=args.name, sampling=sampling,
                          parallel=args.parallel, chat_template_file=args.chat_template_file)
    check_source(args.model, "--model")
    if args.adapter and not Path(args.adapter).is_dir():
        raise MissingError(f"--adapter {args.adapter}: no such directory")
    return HFRunner(args.model, args.adapter, name=args.name, sampling=sampling)


def eval_command(args: argparse.Namespace) -> int:
    if args.rescore:
        return rescore_command(args)
    sets = [(f, load_eval_file(f, args.limit)) for f in args.eval_file]
    with interrupt.stop_on_signal("no report written; rerun the same command to evaluate again"):
        return _evaluate(args, sets)


def _evaluate(args: argparse.Namespace, sets: list) -> int:
    runner = make_runner(args)
    results, predictions = [], []
    for path, items in sets:
        has_context = any(it.get("context") for it in items)
        modes = [True, False] if args.both_context_modes else \
            [True if args.with_context is None else args.with_context]
        for with_context, tools in ((c, t) for c in modes for t in TOOL_MODES[args.tools]):
            res, rows = evaluate(runner, items, set_name(path, with_context, has_context), with_context,
                                 args.max_new_tokens, args.batch_size, eval_file=path, instruction=args.instruction,
                                 tools=tools)
            res["sampling"] = args.sampling
            results.append(res)
            predictions += rows
    out = write_report(Path(args.output), results, predictions)
    print(markdown(results))
    log.info("report: %s (+ report.md, predictions.jsonl, report.png)", out)
    return 0


def rescore_command(args: argparse.Namespace) -> int:
    out, compared = rescore(Path(args.rescore), args.eval_file, Path(args.output) if args.output else None)
    print(markdown([res for *_, res in compared]))
    print("Before (the rules the report was written with) and now:\n" + comparison_table(compared))
    log.info("report: %s (+ report.md, predictions.jsonl, report.png)", out)
    return 0
