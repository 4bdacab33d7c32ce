"""GRPO after the default run's SFT: N steps, then the held-out set before and after.

    python bench/grpo.py [--steps 10] [--adapter outputs/financial_lora] [--work outputs/bench_grpo]

Starts from the default run's SFT adapter (`make run` leaves it in
outputs/financial_lora, its data in outputs/data and its eval in outputs/eval). The
adapter is copied into --work, and the pipeline's own stages run there with --grpo:
grpo (TRL GRPOTrainer, in a process of its own), merge, export (F16 and Q8_0) and
eval (F16 GGUF on the held-out set, llama.cpp, greedy, the eval's stop rule), under
a manifest of their own; outputs/ of the default run is only read.

Printed: each reward component's mean (fintune/train/rewards.py) over the eval's
replies to the held-out prompts, before (the default run's F16 eval,
outputs/eval/predictions.jsonl) and after (this run's); accuracy, format, formula and
substitution rates of those two evals; GRPO's seconds per step and its generation
tokens/s (TRL's own generation, model.generate, timed by the stage). The last line is
`reward: BEFORE -> AFTER`, the mean over the held-out replies of the summed rewards,
as TRL sums them per reply.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = "F16"


def config(args, work: Path):
    from fintune.cli.parsers import CPU_PROFILE
    from fintune.config import build_config, load_yaml

    return build_config(load_yaml(CPU_PROFILE), {
        "grpo": True, "grpo_max_steps": args.steps, "data_dir": str(args.data),
        "lora_output_dir": str(work / "sft"), "checkpoint_dir": str(work / "checkpoints"),
        "merged_model_dir": str(work / "merged"), "gguf_f16_path": str(work / "financial_model_fp16.gguf"),
        "gguf_q4_path": str(work / "financial_model_q4_k_m.gguf"),
        "gguf_q8_path": str(work / "financial_model_q8_0.gguf"), "modelfile_path": str(work / "Modelfile"),
        "quant_types": "Q8_0", "eval_dir": str(work / "eval"), "eval_models": MODEL, "perplexity": False})


def replies(eval_dir: Path) -> dict[str, str]:
    """{item id: the F16 model's reply} on the held-out set, from an eval's predictions."""
    rows = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()]
    return {r["id"]: r["output"] for r in rows if r["model"].upper() == MODEL and r["eval_set"] == "heldout"}


def report_row(eval_dir: Path) -> dict:
    results = json.loads((eval_dir / "report.json").read_text())["results"]
    return next(r for r in results if r["model"].upper() == MODEL and r["eval_set"] == "heldout")


def reward_means(cfg, eval_dir: Path) -> tuple[dict[str, float], float, int]:
    """(each component's mean, the mean summed reward, replies) over the eval's held-out replies."""
    from transformers import AutoTokenizer

    from fintune.jsonl import read_jsonl
    from fintune.eval.report import asked
    from fintune.eval.runner import build_prompt
    from fintune.train.rewards import reward_funcs

    got = replies(eval_dir)
    items = [it for it in read_jsonl(Path(cfg.data.data_dir) / "heldout.jsonl") if it["id"] in got]
    tok = AutoTokenizer.from_pretrained(cfg.train.lora_output_dir)
    cols = {"gold": [it["answer_numeric"] for it in items], "question": [asked(it, True) for it in items],
            "solution": [(it.get("meta") or {}).get("solution") for it in items],
            "open_think": [build_prompt(tok, it, True, cfg.data.instruction).endswith("<think>\n") for it in items]}
    texts = [got[it["id"]] for it in items]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    per = {f.__name__: f(completions=texts, completion_ids=ids, **cols) for f in reward_funcs(cfg.train)}
    means = {k: _nanmean([v for v in vals if v is not None]) for k, vals in per.items()}
    summed = [sum(v for v in row if v is not None) for row in zip(*per.values())]
    return means, _nanmean(summed), len(texts)


def _nanmean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="GRPO steps (the CPU profile's grpo_max_steps: 10)")
    p.add_argument("--adapter", type=Path, default=ROOT / "outputs" / "financial_lora")
    p.add_argument("--data", type=Path, default=ROOT / "outputs" / "data")
    p.add_argument("--before_eval", type=Path, default=ROOT / "outputs" / "eval")
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_grpo")
    args = p.parse_args()
    for need in (args.adapter / "adapter_model.safetensors", args.data / "train.jsonl",
                 args.before_eval / "predictions.jsonl"):
        if not need.is_file():
            print(f"{need} not found: run `make run` first (the default run's SFT adapter, data and eval)")
            return 2
    from fintune.logs import setup_logging
    from fintune.pipeline import run_pipeline
    from fintune.adapters import grpo_dir

    setup_logging()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(args.adapter, work / "sft")
    cfg = config(args, work)
    start = time.time()
    run_pipeline(cfg, work / "run_manifest.json", only=["grpo", "merge", "export", "eval"])
    took = time.time() - start
    rec = json.loads((grpo_dir(cfg) / "fintune_adapter.json").read_text())["grpo"]
    before, before_sum, n = reward_means(cfg, args.before_eval)
    after, after_sum, n_after = reward_means(cfg, work / "eval")
    rb, ra = report_row(args.before_eval), report_row(work / "eval")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(rec["counts"].items()))
    print(f"\nGRPO: {rec['global_step']} steps from {args.adapter} ({rec['prompts']} training prompts: {counts}); "
          f"{rec['grpo_num_generations']} replies of up to {rec['grpo_max_completion_length']} tokens a step, "
          f"learning rate {rec['grpo_learning_rate']:g}, beta {rec['grpo_beta']:g}")
    print(f"  {rec['seconds'] / max(1, rec['steps_this_run']):.1f} s per step ({rec['seconds']:.0f} s); generation "
          f"{rec['generation_tokens_per_second']} tokens/s ({rec['completion_tokens_this_run']} tokens in "
          f"{rec['generation_seconds']} s of model.generate); mean reward in training "
          f"{rec['reward_first_last'][0]:.3f} at the first step, {rec['reward_first_last'][1]:.3f} at the last")
    print(f"  grpo + merge + export + eval stages: {took:.0f} s")
    print(f"\nheld-out prompts: {n} before, {n_after} after; replies of the {MODEL} GGUF "
          "(greedy, the eval's stop rule)")
    print(f"  {'reward':10s} {'before':>8s} {'after':>8s}")
    for k in before:
        print(f"  {k:10s} {before[k]:8.3f} {after[k]:8.3f}")
    print(f"\nreal eval of the merged model ({MODEL} GGUF, held-out, n={rb['n']} / {ra['n']}): before -> after")
    for key, label in (("accuracy", "accuracy"), ("format_rate", "format"), ("formula_rate", "formula"),
                       ("substitution_rate", "substitution")):
        print(f"  {label:13s} {rb[key]:6.1%} -> {ra[key]:6.1%}")
    speed = [r.get("tokens_per_second") or "- (replies from the reply cache)" for r in (rb, ra)]
    print(f"  eval tokens/s {speed[0]} -> {speed[1]} (llama.cpp)")
    print(f"reward: {before_sum:.3f} -> {after_sum:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
