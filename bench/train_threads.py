"""Thread settings for the CPU training stage: OpenMP's wait policy and binding, A/B.

    python bench/train_threads.py [--steps 20] [--rounds 2] [--variants default,omp_active,...]

Each variant runs the stage's own training (bench/train_throughput.py's
"fintune": precision, compiled layers, batches as the stage makes them) for
`--steps` steps in a process of its own, since OpenMP reads these variables
once, at start-up, with the allocator the stage's process gets (mimalloc where
installed). Variants alternate within each round, so a machine whose speed
drifts affects them alike. Tokens/s counts from the end of the first step (the
one that compiles the layers) to the last.

The last line is `best: NAME X.XX x default` (medians over the rounds).
Settings that leave the cores to other processes (PASSIVE) or idle-spin them
(ACTIVE) only matter where the step is many small operations, as on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> environment the training process starts with (on top of this one's)
VARIANTS = {
    "default": {},
    "omp_active": {"OMP_WAIT_POLICY": "ACTIVE"},    # idle threads spin instead of sleeping
    "omp_passive": {"OMP_WAIT_POLICY": "PASSIVE"},  # idle threads sleep at once
    "omp_bind": {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"},  # one thread per core, pinned
}


def child(config: str, steps: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import train_throughput as tt
    from transformers import AutoTokenizer

    from fintune.config import build_config, load_yaml
    from fintune.models import resolve_base_model
    from fintune.train.trainer import pick_precision

    cfg = build_config(load_yaml(config), {"max_steps": steps, "val_fraction": 0.0})
    path = resolve_base_model(cfg.model.base_model)
    data = tt.examples(cfg, AutoTokenizer.from_pretrained(path), 512)
    precision = pick_precision(cfg, on_cuda=False)
    with tempfile.TemporaryDirectory() as tmp:
        clock, _ = tt.run_fintune(cfg, path, data, precision, tmp)
    rate, tokens, seconds = tt.steady_rate(clock.marks)
    print("RESULT " + json.dumps({"precision": precision, "tokens_per_s": rate, "tokens": tokens,
                                  "seconds": seconds}), flush=True)


def run_variant(name: str, config: str, steps: int) -> dict:
    from fintune.config import build_config, load_yaml
    from fintune.pipeline import allocator_env
    from fintune.train import steps as train_steps

    env = dict(os.environ, **VARIANTS[name])
    cfg = build_config(load_yaml(config))
    env.update(allocator_env(train_steps(cfg)[0], cfg))  # the allocator the training stage's process gets
    proc = subprocess.run([sys.executable, __file__, "--child", "--config", config, "--steps", str(steps)],
                          env=env, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"variant {name}: the training process failed (exit code {proc.returncode})")
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "cpu-smollm2.yaml"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.config, args.steps)
        return 0
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or "default" not in names:
        p.error(f"variants must include default and come from: {', '.join(VARIANTS)} (got {args.variants})")
    rates: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(args.rounds):
        for name in names:
            r = run_variant(name, args.config, args.steps)
            rates[name].append(r["tokens_per_s"])
            print(f"round {rnd} {name:12s} {r['tokens_per_s']:7.1f} tokens/s ({r['precision']}, {r['tokens']} tokens "
                  f"in {r['seconds']:.1f} s)", flush=True)
    base = statistics.median(rates["default"])
    for name in names:
        print(f"{name:12s} median {statistics.median(rates[name]):7.1f} tokens/s = "
              f"{statistics.median(rates[name]) / base:.2f} x default", flush=True)
    best = max(names, key=lambda n: statistics.median(rates[n]))
    print(f"best: {best} {statistics.median(rates[best]) / base:.2f} x default")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
