"""fintune eval --rescore DIR: recompute a report from its predictions.jsonl
with the current scoring rules, so runs scored under older rules can be
compared. Generation is not repeated: the replies are as they were.

The new report goes beside the old one (DIR/rescored/ unless --output says
where), never over it: DIR may be the pipeline's eval folder, whose report the
run manifest records, and a changed file there would make the next `fintune
run` evaluate every model again. What generation measured (device, speed,
stop rule, replies from the cache) and the report's notes on sampling and
speed are carried over; only the scores and the notes made from them change.

Each (model, eval set) group is matched to its items by id, from the eval file
recorded in report.json, or from a --eval_file of the same name (reports
written before the file was recorded).
"""
from __future__ import annotations

import json
from pathlib import Path

from fintune.jsonl import read_jsonl
from fintune.errors import MissingError, UsageError
from fintune.eval.evaluate import EvalFileError, load_eval_file
from fintune.eval.report import quant_notes, score_set, write_report

# fields of a result that scoring does not produce: kept from the old report
KEPT = ("tokens_per_second", "seconds", "sampling", "sampling_settings", "skipped", "device", "dtype",
        "instruction", "stop_rule", "stopped_by_rule", "replies_from_cache", "tools", "tool_calls_per_item",
        "tool_calls", "tool_errors", "tool_not_called", "tool_loop_ends", "tool_max_calls")
# report.md lines of a report written before report.json kept its notes: generation's, not scoring's
GENERATION_NOTES = ("Sampling:", "Speed:")
RESCORED = "rescored"


def _groups(predictions: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Rows by (model, eval set, tool off/on): a model's replies with the calculator are another group."""
    out: dict[tuple[str, str, str], list[dict]] = {}
    for row in predictions:
        out.setdefault((row["model"], row["eval_set"], row.get("tools", "off")), []).append(row)
    return out


def _items(eval_set: str, prev: dict, by_stem: dict[str, str], cache: dict) -> dict[str, dict]:
    path = prev.get("eval_file") or by_stem.get(eval_set.split("[")[0])
    if not path:
        raise EvalFileError(f"{eval_set}: report.json records no eval file; pass --eval_file "
                            f"{eval_set.split('[')[0]}.jsonl")
    if path not in cache:
        cache[path] = {it["id"]: it for it in load_eval_file(path)}
    return cache[path]


def output_dir(report_dir: Path, output: Path | None) -> Path:
    out = output or report_dir / RESCORED
    if out.resolve() == report_dir.resolve():
        raise UsageError(f"--output {output}: that is the report being rescored; the new one goes beside it "
                         f"(default {report_dir / RESCORED})")
    return out


def kept_notes(report_dir: Path, old: dict) -> list[str]:
    """The old report's notes but those made from its scores (quant_notes), which are made again."""
    if "notes" in old:
        remade = set(quant_notes(old.get("results", []), old.get("perplexity") or {}))
        return [n for n in old["notes"] if n not in remade]
    md = report_dir / "report.md"
    lines = md.read_text(encoding="utf-8").splitlines() if md.is_file() else []
    return [line for line in lines if line.startswith(GENERATION_NOTES)]


def rescore(report_dir: Path, eval_files: list[str] | None = None, output: Path | None = None) -> tuple[Path, list]:
    """(report.json written, [(model, eval set, old result, new result)])."""
    preds_path = report_dir / "predictions.jsonl"
    if not preds_path.is_file():
        raise MissingError(f"--rescore {report_dir}: no predictions.jsonl there")
    out_dir = output_dir(report_dir, output)
    report_path = report_dir / "report.json"
    old = json.loads(report_path.read_text()) if report_path.is_file() else {"results": []}
    old_results = {(r["model"], r["eval_set"], r.get("tools", "off")): r
                   for r in old.get("results", []) + old.get("tool_results", [])}
    by_stem = {Path(f).stem: f for f in eval_files or []}
    cache: dict = {}
    results, predictions, compared = [], [], []
    for (model, eval_set, tools), rows in _groups(list(read_jsonl(preds_path))).items():
        prev = old_results.get((model, eval_set, tools), {})
        items = _items(eval_set, prev, by_stem, cache)
        missing = [r["id"] for r in rows if r["id"] not in items]
        if missing:
            raise EvalFileError(f"{eval_set}: ids {missing[:3]} of predictions.jsonl are not in its eval file")
        res, new_rows = score_set(model, eval_set, [items[r["id"]] for r in rows], [r["output"] for r in rows],
                                  prev.get("seconds", 0.0), not eval_set.endswith("[no_context]"),
                                  [r.get("prompt", "") for r in rows])
        res.update({k: prev[k] for k in KEPT if k in prev})
        res["eval_file"] = prev.get("eval_file") or by_stem.get(eval_set.split("[")[0])
        for new, old_row in zip(new_rows, rows):
            new.update({k: old_row[k] for k in ("prompt", "tools", "tool_calls", "tool_stop") if k in old_row})
        results.append(res)
        predictions += new_rows
        compared.append((model, eval_set, prev, res))
    # rows that were not run have no predictions: kept as they were
    results += [r for r in old.get("tool_results", []) if "not_run" in r]
    extra = {k: v for k, v in old.items() if k not in ("results", "tool_results", "notes")}
    notes = quant_notes(results, extra.get("perplexity") or {}) + kept_notes(report_dir, old)
    return write_report(out_dir, results, predictions, extra={**extra, "notes": notes}, notes=notes), compared


def comparison_table(compared: list) -> str:
    lines = ["| model | eval set | n | accuracy before | accuracy now | lenient now | strict now | via scale now |",
             "|---|---|---|---|---|---|---|---|"]
    for model, eval_set, prev, res in compared:
        model = f"{model} + tool" if res.get("tools") == "on" else model
        before = f"{prev['accuracy']:.1%}" if "accuracy" in prev else "-"
        lines.append(f"| {model} | {eval_set} | {res['n']} | {before} | {res['accuracy']:.1%} | "
                     f"{res['accuracy_lenient']:.1%} | {res['accuracy_strict']:.1%} | {res['correct_via_scale']} |")
    return "\n".join(lines)
