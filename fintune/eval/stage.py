"""Pipeline eval stage: base vs tuned on the generated held-out set."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from fintune.config import PipelineConfig
from fintune.data.jsonl import read_jsonl
from fintune.eval.report import markdown, score_set, write_report
from fintune.eval.runner import HFRunner, build_prompt

log = logging.getLogger(__name__)


def evaluate(runner, items: list[dict], eval_set: str, cfg: PipelineConfig, with_context: bool = True):
    prompts = [build_prompt(runner.tokenizer, it, with_context) for it in items]
    start = time.time()
    outputs = runner.generate(prompts, cfg.eval.eval_max_new_tokens, cfg.eval.eval_batch_size)
    return score_set(runner.name, eval_set, items, outputs, time.time() - start)


def run(cfg: PipelineConfig) -> Path:
    from fintune.train.trainer import read_adapter_record

    adapter = cfg.train.lora_output_dir
    base = read_adapter_record(adapter)["base_model_path"]
    heldout = Path(cfg.data.data_dir) / "heldout.jsonl"
    items = list(read_jsonl(heldout))[: cfg.eval.eval_limit]
    results, predictions = [], []
    for name, runner_args in (("base", (base, None)), ("tuned", (base, adapter))):
        runner = HFRunner(*runner_args, name=name)
        res, rows = evaluate(runner, items, heldout.stem, cfg)
        results.append(res)
        predictions += rows
        log.info("eval: %s accuracy %.1f%% [%.1f, %.1f] format %.0f%% (n=%d, %.0fs)", name,
                 100 * res["accuracy"], 100 * res["ci95"][0], 100 * res["ci95"][1],
                 100 * res["format_rate"], res["n"], res["seconds"])
    out = write_report(Path(cfg.eval.eval_dir), results, predictions)
    print(markdown(results))
    return out
