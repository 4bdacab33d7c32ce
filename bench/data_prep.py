"""Wall time of the data stage for 30,000 samples.

    python bench/data_prep.py [--samples 30000]

Runs the real stage (generators, user files, dedup, contamination guard, and
the token checks with the embedded base model's tokenizer) into a temporary
directory on 30,000 generated quant problems plus 1,000 user rows in each file
format, and prints the wall time of each part and the total.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def user_files(folder: Path, n: int) -> None:
    import pandas as pd

    folder.mkdir()
    q = [f"Explain term number {i} of the glossary." for i in range(n)]
    a = [f"Term {i} is a finance concept; here is what it means ..." for i in range(n)]
    with open(folder / "chat.jsonl", "w") as f:
        for x, y in zip(q, a):
            f.write(json.dumps({"messages": [{"role": "user", "content": x}, {"role": "assistant", "content": y}]}) + "\n")
    pd.DataFrame({"instruction": [x + " (csv)" for x in q], "output": a}).to_csv(folder / "alpaca.csv", index=False)
    pd.DataFrame({"prompt": [x + " (pref)" for x in q], "chosen": a, "rejected": ["No idea."] * n}).to_parquet(
        folder / "pairs.parquet")
    (folder / "share.json").write_text(json.dumps(
        [{"conversations": [{"from": "human", "value": x + " (sg)"}, {"from": "gpt", "value": y}]} for x, y in zip(q, a)]))


def main(argv=None) -> int:
    from fintune import data
    from fintune.config import build_config
    from fintune.models import resolve_base_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=30000)
    p.add_argument("--user_rows", type=int, default=1000, help="rows per user file (4 files)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    resolve_base_model("embedded:smollm2-135m-instruct")  # converted once and cached; not timed
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        user_files(root / "datasets", args.user_rows)
        timings = {}
        for check in (False, True):
            cfg = build_config(overrides={"dataset_folder": str(root / "datasets"), "data_dir": str(root / f"out{check}"),
                                          "num_generated": args.samples, "token_check": check,
                                          "contamination_files": str(ROOT.parent / "shared" / "eval" / "*.jsonl")})
            start = time.perf_counter()
            out = data.run(cfg)
            timings[check] = time.perf_counter() - start
        stats = json.loads((out / "stats.json").read_text())
    print(f"rows: {stats['train']} train, {stats['heldout']} held-out, {stats['dpo_pairs']} DPO pairs; "
          f"token p50/p99 {stats['tokens'].get('p50')}/{stats['tokens'].get('p99')}")
    print(f"data stage without token checks: {timings[False]:.1f} s")
    print(f"data stage with token checks:    {timings[True]:.1f} s  (wall time for {args.samples:,} generated "
          f"+ {4 * args.user_rows:,} user rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
