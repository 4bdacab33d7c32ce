"""A larger generated eval set than the run's 58 held-out items, for comparing
profiles with less sampling noise: N problems in the reserved (unseen) phrasing
and N fresh draws of the training phrasings, interleaved, round-robin over the
families, in the eval schema. Seeds default far from the data stage's, and a
draw whose question the data stage of the profile (--config) also draws, for
training or held-out (families with few parameters repeat questions: 3 of 232
here), is skipped. A measuring set: never train on it.

    python bench/generated_eval_set.py --per_split 116 --output /tmp/gen232.jsonl
    python -m fintune eval --eval_file /tmp/gen232.jsonl --gguf outputs/financial_model_fp16.gguf \\
        --tokenizer outputs/financial_lora --limit 232 --parallel 16 --max_new_tokens 400 --output DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from fintune.config import build_config, load_yaml
    from fintune.data import quant
    from fintune.jsonl import write_jsonl
    from fintune.data.prepare import problem_to_eval, quant_draws

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "cpu-smollm2.yaml"),
                   help="profile whose data stage's draws are left out")
    p.add_argument("--per_split", type=int, default=116, help="items of each split (unseen phrasing, fresh draw)")
    p.add_argument("--seed", type=int, default=9001, help="unseen draws use it, fresh draws seed + 1")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    train, held_unseen, held_fresh = quant_draws(build_config(load_yaml(args.config)).data)
    taken = {p.question for p in train + held_unseen + held_fresh}

    names = quant.FAMILIES.names()

    def new(problems):
        """Round-robin over the families again, each family's draws that are taken skipped."""
        queues = {n: iter([p for p in problems if p.family == n and p.question not in taken]) for n in names}
        out = [next(queues[names[i % len(names)]], None) for i in range(args.per_split)]
        if None in out:
            raise SystemExit(f"--per_split {args.per_split}: a family ran out of draws the data stage does not take")
        return out

    # draws are round-robin over the families and prefix-stable: 4x as many leave spares
    unseen = new(quant.generate_unseen(4 * args.per_split, args.seed))
    fresh = new(quant.generate_set(4 * args.per_split, args.seed + 1))
    pairs = [pair for u, f in zip(unseen, fresh) for pair in (("unseen_template", u), ("random", f))]
    rows = [problem_to_eval(problem, i, split) for i, (split, problem) in enumerate(pairs)]
    write_jsonl(Path(args.output), rows)
    print(f"{len(rows)} items ({args.per_split} unseen phrasing, {args.per_split} fresh draws) -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
