"""Pipeline eval stage: base vs tuned (and the shipped Q4_K_M) on the held-out set.

On a CUDA GPU the Hugging Face runner generates in large batches. On CPU the
GGUF files go through llama.cpp instead, which measured faster than batched
transformers generation here (see runner.GGUFRunner); the base model is
converted to an F16 GGUF once for that and cached.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from fintune.config import PipelineConfig
from fintune.data.jsonl import read_jsonl
from fintune.eval.report import markdown, score_set, write_report
from fintune.eval.runner import GGUFRunner, HFRunner, build_prompt

log = logging.getLogger(__name__)


def evaluate(runner, items: list[dict], eval_set: str, cfg: PipelineConfig, with_context: bool = True):
    prompts = [build_prompt(runner.tokenizer, it, with_context) for it in items]
    start = time.time()
    outputs = runner.generate(prompts, cfg.eval.eval_max_new_tokens, cfg.eval.eval_batch_size)
    return score_set(runner.name, eval_set, items, outputs, time.time() - start)


def base_gguf(cfg: PipelineConfig, base_path: str) -> Path:
    """F16 GGUF of the base checkpoint, converted once into the cache."""
    from fintune.export.llama_cpp import LlamaCpp
    from fintune.manifest import atomic_path
    from fintune.models import cache_dir

    key = hashlib.sha256(str(Path(base_path).resolve()).encode()).hexdigest()[:10]
    out = cache_dir() / f"base-{Path(base_path).name}-{key}-f16.gguf"
    if not out.is_file():
        with atomic_path(out) as tmp:
            LlamaCpp(Path(cfg.export.llama_cpp_path)).convert(Path(base_path), tmp, "f16")
    return out


def runners(cfg: PipelineConfig, base_path: str):
    from fintune.train.backends import cuda_available

    adapter = cfg.train.lora_output_dir
    if cuda_available():
        yield HFRunner(base_path, None, name="base")
        yield HFRunner(base_path, adapter, name="tuned")
        return
    lcp = cfg.export.llama_cpp_path
    yield GGUFRunner(base_gguf(cfg, base_path), lcp, adapter, name="base")
    yield GGUFRunner(cfg.export.unquantized_gguf, lcp, adapter, name="tuned")
    q4 = Path(cfg.export.gguf_q4_path)
    if q4.is_file():
        yield GGUFRunner(q4, lcp, adapter, name="tuned-q4_k_m")


def run(cfg: PipelineConfig) -> Path:
    from fintune.train.trainer import read_adapter_record

    base = read_adapter_record(cfg.train.lora_output_dir)["base_model_path"]
    heldout = Path(cfg.data.data_dir) / "heldout.jsonl"
    items = list(read_jsonl(heldout))[: cfg.eval.eval_limit]
    results, predictions = [], []
    for runner in runners(cfg, base):
        res, rows = evaluate(runner, items, heldout.stem, cfg)
        results.append(res)
        predictions += rows
        log.info("eval: %s accuracy %.1f%% [%.1f, %.1f] format %.0f%% (n=%d, %.0fs)", runner.name,
                 100 * res["accuracy"], 100 * res["ci95"][0], 100 * res["ci95"][1],
                 100 * res["format_rate"], res["n"], res["seconds"])
    out = write_report(Path(cfg.eval.eval_dir), results, predictions)
    print(markdown(results))
    return out
