"""Can the model do the arithmetic inside the worked solutions?

    python bench/arithmetic_probe.py [--model PATH] [--adapter DIR] [--n 20]

The generated answers break every problem into one-operation lines
("p × W = 0.45 × 430 = 193.5"). Whether fine-tuning can teach a family then
depends on whether the model gets those single operations right. This probe
asks the model (greedy, four worked examples in the prompt, no chat template)
for `n` operations of each kind, drawn like the generators draw them, and
prints the share within the evaluation's tolerance (1% relative, 0.005
absolute), next to how many of the 29 families need that kind of step.

The default model is the embedded SmolLM2-135M-Instruct base; `--adapter`
probes a trained LoRA on top of it, so base and tuned can be compared.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

Op = Callable[[random.Random], tuple[str, float]]


def _add(r):
    a, b = r.randint(10, 99), r.randint(10, 99)
    return f"{a} + {b} =", a + b


def _sub_int(r):
    a, b = r.randrange(100, 1000), r.randrange(10, 100)
    return f"{a} - {b} =", a - b


def _sub_dec(r):
    a, b = round(r.uniform(5, 25), 1), round(r.uniform(0.5, 5), 1)
    return f"{a} - {b} =", round(a - b, 1)


def _mul_small(r):
    a, b = r.randint(10, 99), r.randint(2, 9)
    return f"{a} × {b} =", a * b


def _mul_dec(r):
    a, b = round(r.uniform(0.3, 0.7), 2), r.randrange(100, 1000, 10)
    return f"{a} × {b} =", round(a * b, 2)


def _div(r):
    a, b = round(r.uniform(1, 20), 1), round(r.uniform(5, 35), 1)
    return f"{a} / {b} =", round(a / b, 4)


# name -> (draw, which generator steps need it); the step counts come from the
# families in fintune/data/quant*.py and are approximate.
OPS: dict[str, tuple[Op, str]] = {
    "add 2-digit": (_add, "sums of cash flows, running totals"),
    "subtract 3-digit - 2-digit": (_sub_int, "peak - trough, entry - stop"),
    "subtract decimals": (_sub_dec, "R - Rf, Rm - Rf"),
    "multiply 2-digit by 1-digit": (_mul_small, "rarely alone"),
    "multiply decimal by integer": (_mul_dec, "p × W, A × r, P × growth"),
    "divide decimals": (_div, "Sharpe, Treynor, drawdown, every ratio"),
}


def probe(model, tokenizer, op: Op, n: int, seed: int) -> float:
    import torch

    rng = random.Random(seed)
    shots = [op(rng) for _ in range(4)]
    prefix = "".join(f"{q} {a}\n" for q, a in shots)
    right = 0
    for _ in range(n):
        q, gold = op(rng)
        ids = tokenizer(prefix + q, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=12, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0]
        try:
            value = float(text.strip().replace(",", ""))
        except ValueError:
            continue
        right += abs(value - gold) <= max(0.01 * abs(gold), 0.005)
    return right / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--adapter", help="LoRA adapter directory to probe on top of --model")
    p.add_argument("--n", type=int, default=20, help="operations per kind")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fintune.models import resolve_base_model

    torch.manual_seed(args.seed)
    path = resolve_base_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    model.eval()
    print(f"{args.model}{' + ' + args.adapter if args.adapter else ''}: {args.n} per kind, 4-shot, greedy")
    for name, (op, used_by) in OPS.items():
        acc = probe(model, tokenizer, op, args.n, args.seed)
        print(f"  {name:30s} {acc:6.1%}   (steps: {used_by})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
