"""Sampling settings against each other on one GGUF: what the report measures
(greedy), what `ollama run` samples with for the shipped Modelfile, and the
repeat penalty on its own. Prints format / formula / substitution lines per
eval file and the formula and substitution lines right per split.

    python bench/sampling.py --gguf outputs/financial_model_fp16.gguf \\
        --eval_file outputs/data/heldout.jsonl:58 [--eval_file /tmp/gen232.jsonl]

`FILE:N` takes N items round-robin over the families, as the pipeline's eval_limit
does (the report's 58 held-out items); `bench/generated_eval_set.py` writes the 232-item file. Each variant is one
run of `fintune.eval.evaluate` on 16 llama-server slots; the last line counts
the replies of the `ollama` preset that equal greedy's on the first file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def variants(family):
    from dataclasses import replace

    from fintune.sampling import GREEDY, OLLAMA_DEFAULTS, Preset

    before = replace(OLLAMA_DEFAULTS, temperature=0.2)  # the chatml Modelfile until 8d1a0b4
    return [
        ("greedy", GREEDY),
        ("ollama, the Modelfile now", Preset("ollama").resolve(family)),
        ("ollama, temperature 0.2 (the Modelfile before)", before),
        ("the same, repeat_penalty 1.0", replace(before, repeat_penalty=1.0)),
        ("greedy, repeat_penalty 1.1 over 64", replace(GREEDY, repeat_penalty=1.1, repeat_last_n=64)),
    ]


def main(argv=None) -> int:
    from fintune.eval.evaluate import evaluate, load_eval_file
    from fintune.eval.runner import GGUFChatTemplate, GGUFRunner
    from fintune.templates import detect

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gguf", required=True)
    p.add_argument("--eval_file", action="append", required=True, help="FILE or FILE:N; repeatable")
    p.add_argument("--max_new_tokens", type=int, default=400)
    p.add_argument("--llama_cpp_path", default=str(ROOT / "llama.cpp"))
    args = p.parse_args(argv)
    family = detect(GGUFChatTemplate(args.gguf).chat_template)
    sets = []
    for spec in args.eval_file:
        path, _, limit = spec.rpartition(":")
        if not limit.isdigit():
            path, limit = spec, ""
        sets.append((path, load_eval_file(path, int(limit) if limit else None)))
    print("| sampling | eval file | n | format | formula | substitution | per split: formula / substitution right |")
    print("|---|---|---|---|---|---|---|")
    replies = {}
    for name, sampling in variants(family):
        runner = GGUFRunner(args.gguf, args.llama_cpp_path, None, name=name, sampling=sampling, parallel=16)
        for path, items in sets:
            res, rows = evaluate(runner, items, Path(path).stem, True, args.max_new_tokens, 8, eval_file=path)
            replies[name, path] = [r["output"] for r in rows]
            splits = ", ".join(f"{k} {v['formula_right']} / {v['substitution_right']} of {v['n']}"
                               for k, v in res["per_split"].items())
            rates = " | ".join(f"{100 * res[k]:.1f}%" if res[k] is not None else "-"
                               for k in ("format_rate", "formula_rate", "substitution_rate"))
            print(f"| {name} | {Path(path).name} | {res['n']} | {rates} | {splits} |", flush=True)
    first = sets[0][0]
    a, b = replies["greedy", first], replies["ollama, the Modelfile now", first]
    print(f"ollama preset replies equal to greedy's on {Path(first).name}: {sum(x == y for x, y in zip(a, b))} of {len(a)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
