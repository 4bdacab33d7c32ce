"""Run one model over one eval file and score it (shared by the pipeline's eval
stage and ``fintune eval``)."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from fintune.errors import FintuneError
from fintune.jsonl import DataError, read_jsonl_numbered
from fintune.eval.report import score_set, stratified
from fintune.eval.runner import build_prompt
from fintune.eval.tools import evaluate_with_tools
from fintune.scoring.stop import RULE

REQUIRED = ("id", "question", "answer_numeric")


class EvalFileError(FintuneError, ValueError):
    """An eval file is unreadable or an item lacks a field; names file and line."""


def load_eval_file(path: str | Path, limit: int | None = None) -> list[dict]:
    """Items in the schema of ../shared/eval/README.md (id, question, context,
    answer, answer_numeric, meta); with `limit`, that many taken round-robin over
    the items' categories (meta family / origin / formula), so every one is measured."""
    path = Path(path)
    if not path.is_file():
        raise EvalFileError(f"eval file not found: {path}")
    items = []
    try:
        for n, item in read_jsonl_numbered(path):
            missing = [k for k in REQUIRED if k not in item]
            if missing:
                raise EvalFileError(f"{path}:{n}: missing field(s) {', '.join(missing)}")
            if not isinstance(item["question"], str) or not item["question"].strip():
                raise EvalFileError(f"{path}:{n}: field question must be a non-empty string")
            if item["answer_numeric"] is not None and not isinstance(item["answer_numeric"], (int, float)):
                raise EvalFileError(f"{path}:{n}: field answer_numeric must be a number or null")
            items.append(item)
    except DataError as e:
        raise EvalFileError(str(e)) from None
    if not items:
        raise EvalFileError(f"{path}: no items")
    return stratified(items, limit) if limit else items


def set_name(path: str | Path, with_context: bool, has_context: bool) -> str:
    stem = Path(path).stem
    if not has_context:
        return stem
    return f"{stem}[{'context' if with_context else 'no_context'}]"


def expected_lengths(items: list[dict]) -> list[int] | None:
    """Each item's reference solution length in characters, where every item has one."""
    lengths = [len((it.get("meta") or {}).get("solution") or "") for it in items]
    return lengths if all(lengths) else None


def evaluate(runner, items: list[dict], eval_set: str, with_context: bool, max_new_tokens: int,
             batch_size: int, eval_file: str | Path | None = None,
             instruction: str = "final_answer", tools: bool = False) -> tuple[dict, list[dict]]:
    """`instruction`: the profile's data.instruction (fintune/prompts.py), as trained; `tools`:
    offer the calculator (eval/tools.py), else the model answers alone."""
    prompts = [build_prompt(runner.tokenizer, it, with_context, instruction) for it in items]
    tokens0, seconds0, start = runner.tokens, runner.seconds, time.time()
    cached0, stops0 = runner.cached, Counter(runner.stops)
    if tools:
        result, rows = evaluate_with_tools(runner, items, eval_set, with_context, max_new_tokens, instruction, prompts)
        if "not_run" in result:
            result["eval_file"] = str(eval_file) if eval_file else None
            return result, rows
    else:
        outputs = runner.generate(prompts, max_new_tokens, batch_size, expected=expected_lengths(items))
        result, rows = score_set(runner.name, eval_set, items, outputs, time.time() - start, with_context, prompts)
    # --rescore finds the items (gold, wording, family) here
    result["eval_file"] = str(eval_file) if eval_file else None
    result["instruction"] = instruction
    result["device"], result["dtype"] = runner.device, runner.dtype
    result["sampling_settings"] = {k: v for k, v in asdict(runner.sampling).items() if v is not None}
    result["replies_from_cache"] = runner.cached - cached0
    result["stopped_by_rule"] = dict(Counter(runner.stops) - stops0)
    result["stop_rule"] = RULE
    gen_tokens, gen_seconds = runner.tokens - tokens0, runner.seconds - seconds0
    result["tokens_per_second"] = round(gen_tokens / gen_seconds, 1) if gen_seconds else None
    by_id = {it["id"]: p for it, p in zip(items, prompts)}
    for row in rows:
        row["prompt"] = by_id[row["id"]]
    return result, rows
