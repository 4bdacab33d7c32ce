"""A larger generated eval set than the run's 58 held-out items, for comparing
profiles with less sampling noise: N problems in the reserved (unseen) phrasing
and N fresh draws of the training phrasings, interleaved, round-robin over the
families, in the eval schema. Seeds default far from the data stage's (its
training draws, and its held-out draws at data_seed + 1 and + 2), so no draw is
shared with a run's data; still, this is a measuring set: never train on it.

    python bench/generated_eval_set.py --per_split 116 --output /tmp/gen232.jsonl
    python -m fintune.eval --eval_file /tmp/gen232.jsonl --gguf outputs/financial_model_fp16.gguf \\
        --tokenizer outputs/financial_lora --limit 232 --parallel 16 --max_new_tokens 400 --output DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from fintune.data import quant
    from fintune.data.jsonl import write_jsonl
    from fintune.data.prepare import problem_to_eval

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per_split", type=int, default=116, help="items of each split (unseen phrasing, fresh draw)")
    p.add_argument("--seed", type=int, default=9001, help="unseen draws use it, fresh draws seed + 1")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    unseen = quant.generate_unseen(args.per_split, args.seed)
    fresh = quant.generate_set(args.per_split, args.seed + 1)
    pairs = [pair for u, f in zip(unseen, fresh) for pair in (("unseen_template", u), ("random", f))]
    rows = [problem_to_eval(problem, i, split) for i, (split, problem) in enumerate(pairs)]
    write_jsonl(Path(args.output), rows)
    print(f"{len(rows)} items ({args.per_split} unseen phrasing, {args.per_split} fresh draws) -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
