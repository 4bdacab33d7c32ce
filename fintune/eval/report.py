"""Score predictions and write report.json / report.md / predictions.jsonl."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from fintune.eval.chart import write_chart
from fintune.jsonl import write_jsonl
from fintune.llama_cpp import PPL_CHUNKS
from fintune.manifest import write_json_atomic
from fintune.scoring.extract import wilson
from fintune.scoring.judge import SCORING, score_item, step_matches



def category_of(item: dict) -> str:
    meta = item.get("meta") or {}
    return str(meta.get("family") or meta.get("origin") or meta.get("formula") or "all")


def stratified(items: list[dict], limit: int) -> list[dict]:
    """At most `limit` items taken round-robin over categories (families), in file order
    within each, so a small limit still reports every family."""
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        by_cat[category_of(it)].append(it)
    out: list[dict] = []
    for rnd in range(max((len(v) for v in by_cat.values()), default=0)):
        out += [v[rnd] for v in by_cat.values() if rnd < len(v)]
    return out[:limit]


def score_set(model: str, eval_set: str, items: list[dict], outputs: list[str], seconds: float,
              with_context: bool = True, prompts: list[str] | None = None) -> tuple[dict, list]:
    """(the set's result: rates with intervals, per family and split; a prediction row per item)."""
    rows, skipped = [], 0
    total: Counter = Counter()
    per_cat: dict[str, Counter] = defaultdict(Counter)
    per_split: dict[str, Counter] = defaultdict(Counter)
    for i, (item, text) in enumerate(zip(items, outputs)):
        if item.get("answer_numeric") is None:
            skipped += 1
            continue
        marks, row = _mark(item, text, with_context, prompts[i] if prompts else "")
        total.update(marks)
        per_cat[category_of(item)].update(marks)
        per_split[str((item.get("meta") or {}).get("split", "all"))].update(marks)
        rows.append({"model": model, "eval_set": eval_set, **row})
    return _result(model, eval_set, total, per_cat, per_split, skipped, seconds), rows


def _mark(item: dict, text: str, with_context: bool, prompt: str) -> tuple[dict[str, int], dict]:
    """One reply's marks (right, lenient, strict, format, steps ...) and its prediction row."""
    ex, sc = score_item(item, text, with_context, prompt)
    marks = {"n": 1, "correct": sc.correct, "lenient": sc.correct_lenient, "strict": sc.correct_strict,
             "scaled": sc.scaled, "format": ex.method == "final_answer", "explicit": ex.explicit}
    matched = step_matches(item, text)
    if matched is not None:
        marks.update(with_steps=1, formula_right=matched[0], substitution_right=matched[1])
    row = {"id": item["id"], "output": text, "extracted": ex.value, "method": ex.method, "answer_text": ex.raw,
           "gold": item["answer_numeric"], "correct": sc.correct, "correct_lenient": sc.correct_lenient,
           "correct_strict": sc.correct_strict, "scaled": sc.scaled}
    # ints: an empty Counter's update stores bools as given
    return {k: int(v) for k, v in marks.items()}, row


def _result(model: str, eval_set: str, total: Counter, per_cat: dict, per_split: dict, skipped: int,
            seconds: float) -> dict:
    n, steps = total["n"], total["with_steps"]

    def rate(key: str) -> float:
        return total[key] / n if n else 0.0

    def group(v: Counter, *extra: str) -> dict:
        return {"n": v["n"], "correct": v["correct"], "accuracy": v["correct"] / v["n"],
                "formula_right": v["formula_right"], "substitution_right": v["substitution_right"],
                **{k: v[k] for k in extra}}

    return {
        "model": model, "eval_set": eval_set, "n": n, "skipped": skipped,
        "accuracy": rate("correct"), "ci95": list(wilson(total["correct"], n)),
        "accuracy_lenient": rate("lenient"), "ci95_lenient": list(wilson(total["lenient"], n)),
        "accuracy_strict": rate("strict"), "format_rate": rate("format"), "answered_rate": rate("explicit"),
        "correct_via_scale": total["scaled"], "correct_via_last_number": total["lenient"] - total["correct"],
        "seconds": round(seconds, 1),
        "formula_rate": total["formula_right"] / steps if steps else None,
        "substitution_rate": total["substitution_right"] / steps if steps else None,
        "per_category": {c: group(v) for c, v in sorted(per_cat.items())},
        "per_split": {c: group(v, "format") for c, v in sorted(per_split.items())},
        "scoring": SCORING,
    }


def with_tool(r: dict) -> bool:
    return r.get("tools") == "on"


def label(r: dict) -> str:
    """A result's model, marked where the calculator was offered."""
    return f"{r['model']} + tool" if with_tool(r) else r["model"]


def scored(results: list[dict]) -> list[dict]:
    """The results that have numbers: not those the eval could not run (`not_run`)."""
    return [r for r in results if "not_run" not in r]


def quant_notes(results: list[dict], ppl: dict[str, float]) -> list[str]:
    notes = []
    results = scored(results)
    for r in results:
        if r["model"] != "q4_k_m":
            continue
        ref = next((x for x in results if x["eval_set"] == r["eval_set"] and x["model"] in ("f16", "bf16")
                    and with_tool(x) == with_tool(r)), None)
        if ref:
            notes.append(f"Q4_K_M vs {ref['model'].upper()} on {r['eval_set']}{' with the tool' * with_tool(r)}: "
                         f"{100 * (r['accuracy'] - ref['accuracy']):+.1f} points accuracy")
    if ppl:
        notes.append(f"Perplexity on held-out worked solutions (llama-perplexity, ctx 128, first {PPL_CHUNKS} chunks): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in ppl.items()))
    return notes


def write_report(out_dir: Path, results: list[dict], predictions: list[dict], extra: dict | None = None,
                 notes: list[str] | None = None) -> Path:
    """report.json (+ extra sections), report.md, predictions.jsonl, report.png. In report.json
    the rows with the calculator offered are `tool_results`, so `results` reads as before."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "predictions.jsonl", predictions)
    write_chart(out_dir / "report.png", scored(results))
    text = markdown(results) + "".join(f"\n{n}\n" for n in notes or [])
    (out_dir / "report.md").write_text(text, encoding="utf-8")
    tool_rows = [r for r in results if with_tool(r)]
    return write_json_atomic(out_dir / "report.json", {"results": [r for r in results if not with_tool(r)],
                                                       **({"tool_results": tool_rows} if tool_rows else {}),
                                                       **(extra or {})})


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _speed(r: dict) -> str:
    if r.get("tokens_per_second") is not None:
        return str(r["tokens_per_second"])
    return "cached" if r.get("replies_from_cache") == r["n"] else "-"


def _tool_cells(r: dict) -> str:
    """Tool calls per item, calls whose result was an error, items offered the tool that made no call."""
    if not with_tool(r):
        return "- | - | - |"
    return f"{r['tool_calls_per_item']:.2f} | {r['tool_errors']} | {r['tool_not_called']}/{r['n']} |"


def markdown(results: list[dict]) -> str:
    """Every result a row; a model offered the calculator has a second row (tool: on)."""
    lines = ["| model | tool | eval set | n | accuracy | 95% CI | lenient (+ last number) | strict (0.2%) | format | "
             "formula | substitution | tokens/s | tool calls / item | tool errors | tool not called |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        head = f"| {r['model']} | {'on' if with_tool(r) else 'off'} | {r['eval_set']} | {r['n']} |"
        if "not_run" in r:
            lines.append(f"{head} {r['not_run']} |" + " - |" * 10)
            continue
        lo, hi = r["ci95"]
        lenient = r.get("accuracy_lenient")
        lines.append(f"{head} {r['accuracy']:.1%} | "
                     f"[{lo:.1%}, {hi:.1%}] | {_rate(lenient)} | {r['accuracy_strict']:.1%} | {r['format_rate']:.1%} | "
                     f"{_rate(r.get('formula_rate'))} | {_rate(r.get('substitution_rate'))} | "
                     f"{_speed(r)} | {_tool_cells(r)}")
    legend = _tool_legend(results)
    results = scored(results)
    legend += f"\nScoring: {results[0].get('scoring', SCORING)}\n" if results else ""
    devices = dict.fromkeys(f"{r['model']} {r['device']} ({r['dtype']})" for r in results if r.get("device"))
    legend += f"Ran on: {', '.join(devices)}\n" if devices else ""
    if any("stop_rule" in r for r in results):
        cut = ", ".join(f"{label(r)} {sum(r['stopped_by_rule'].values())}/{r['n']}" for r in results
                        if r.get("stopped_by_rule") is not None)
        legend += f"Stop rule: {next(r['stop_rule'] for r in results if 'stop_rule' in r)}; replies it ended: {cut}\n"
    cached = [f"{label(r)} {r['replies_from_cache']}/{r['n']}" for r in results if r.get("replies_from_cache")]
    legend += f"Replies from the reply cache (same model file, prompt and settings): {', '.join(cached)}\n" if cached else ""
    return "\n".join(lines) + "\n" + legend + "".join(per_category_table(results, s) for s in
                                                        dict.fromkeys(r["eval_set"] for r in results))


def _tool_legend(results: list[dict]) -> str:
    ends = {label(r) + f" on {r['eval_set']}": r["tool_loop_ends"] for r in results if r.get("tool_loop_ends")}
    cap = next((r["tool_max_calls"] for r in results if r.get("tool_max_calls")), None)
    if not any(with_tool(r) for r in results):
        return ""
    text = ("\nTool: on = the calculator offered through llama-server's /v1/chat/completions (tools, --jinja); "
            "a call llama.cpp does not parse is no call" + (f"; at most {cap} calls, one more scores no answer; "
                                                           "the token budget covers all turns of an item" * bool(cap))
            + ". Tool errors: calls the calculator answered with an error text; tool not called: items "
              "answered without a call.\n")
    if ends:
        text += "How the tool loops ended: " + "; ".join(
            f"{k}: " + ", ".join(f"{why} {n}" for why, n in v.items()) for k, v in ends.items()) + "\n"
    return text


def per_category_table(results: list[dict], eval_set: str) -> str:
    """Correct / n per family (per split too), one column per model: a gain made by
    dropping a family would show as a row that stays at zero."""
    rows = [r for r in scored(results) if r["eval_set"] == eval_set]
    cats = sorted({c for r in rows for c in r["per_category"]})
    if len(cats) < 2:
        return ""
    out = [f"\nPer family on {eval_set} (correct / n; formula and substitution lines right):\n",
           "| family | " + " | ".join(label(r) for r in rows) + " |",
           "|---|" + "---|" * len(rows)]
    for c in cats + ["[" + s + "]" for s in sorted({s for r in rows for s in r.get("per_split", {})})]:
        cells = []
        for r in rows:
            v = r["per_split"].get(c[1:-1]) if c.startswith("[") else r["per_category"].get(c)
            if v is None:
                cells.append("-")
            elif "formula_right" in v:
                cells.append(f"{v['correct']}/{v['n']} (f {v['formula_right']}, s {v['substitution_right']})")
            else:
                cells.append(f"{v['correct']}/{v['n']}")
        out.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
