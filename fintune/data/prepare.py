"""Data stage: generated quant problems + user files -> train / held-out JSONL.

Writes into ``data_dir``: ``train.jsonl`` (chat ``messages`` + ``source`` + ``id``),
``heldout.jsonl`` (the evaluation schema of ``../shared/eval``), ``rejects.jsonl``
(every dropped row with its reason) and ``stats.json``.
"""
from __future__ import annotations

import glob
import json
import logging
import random
from collections import Counter
from pathlib import Path

from fintune.calculator import TOOL_NAME, TOOL_SCHEMA
from fintune.config import PipelineConfig
from fintune.data import market, quant
from fintune.data.hub import load_source
from fintune.data.quant_tools import tool_solution
from fintune.data.formats import FORMATS, RowError, describe_formats, detect
from fintune.data.sources import EXTENSIONS, NO_ROWS, read_rows, user_files
from fintune.data.tokens import check_rows
from fintune.jsonl import DataError, read_jsonl, write_jsonl
from fintune.manifest import atomic_path, write_json_atomic
from fintune.prompts import first_user_text, restate_answer, text_hash, user_prompt
from fintune.templates import ThinkTagError, check_think_tags

log = logging.getLogger(__name__)


def market_problems(d) -> tuple[list, list]:
    """(train, held-out) market questions; every tenth goes to the held-out set."""
    if not (d.market_files or d.market_tickers):
        return [], []
    series = market.load_series(d.market_files, d.market_tickers, d.market_optional)
    problems = market.generate(series, d.market_samples, d.data_seed + 3) if series else []
    return [p for i, p in enumerate(problems) if i % 10], [p for i, p in enumerate(problems) if not i % 10]


def quant_draws(d) -> tuple[list, list, list]:
    """The generated problems of data settings `d`: (training, held-out unseen phrasings,
    held-out fresh draws of the training phrasings). Held-out is half of each,
    interleaved per family by the caller; the eval stage takes --eval_limit items
    round-robin over families."""
    n_heldout = max(1, int(d.num_generated * d.heldout_fraction))
    train = (quant.generate_set(d.num_generated, seed=d.data_seed, paraphrase=d.paraphrase)
             if "quant" in d.generators else [])
    unseen = quant.generate_unseen(n_heldout - n_heldout // 2, d.data_seed + 1)
    fresh = quant.generate_set(n_heldout // 2, d.data_seed + 2)
    return train, unseen, fresh


def problem_to_chat(p: quant.Problem, idx: int, source: str = "generator:quant",
                    instruction: str = "final_answer", tools: bool = False) -> dict:
    """A generated problem as a chat row, asked with `instruction` (data.instruction)
    and answered the way it asks (fintune/prompts.py restate_answer). `answer_numeric`, the
    generator's exact answer, is GRPO's gold (fintune/train/grpo.py); SFT reads `messages`
    (and `tools`). With `tools` the row offers the calculator and is answered with it
    (tool_messages); without, by hand."""
    row = {"id": f"{source.split(':')[1]}-{p.family}-{idx}", "source": f"{source}/{p.family}",
           "answer_numeric": float(p.answer)}
    ask = {"role": "user", "content": user_prompt(p.question, instruction=instruction)}
    if tools:
        return {**row, "tools": [TOOL_SCHEMA], "messages": [ask] + tool_messages(tool_solution(p), instruction)}
    return {**row, "messages": [ask, {"role": "assistant", "content": restate_answer(p.solution(), instruction)}]}


def tool_messages(sol, instruction: str) -> list[dict]:
    """A tool solution as OpenAI-style turns: the Formula and Substitute lines with the
    first call, each result as a `tool` turn, one call per turn after it (a later
    expression may use an earlier result), then the result line and the answer."""
    out = []
    for i, (expression, result) in enumerate(sol.calls):
        call = {"type": "function", "function": {"name": TOOL_NAME, "arguments": {"expression": expression}}}
        out += [{"role": "assistant", "content": sol.opening if i == 0 else "", "tool_calls": [call]},
                {"role": "tool", "content": result}]
    return out + [{"role": "assistant", "content": restate_answer(sol.closing, instruction)}]


def offers_tools(d, n: int) -> list[bool]:
    """Which of `n` generated training rows offer the tool: data.tool_fraction of them,
    drawn with their own random stream so the questions are those of tool_fraction=0."""
    rng = random.Random(f"tools-{d.data_seed}")
    return [rng.random() < d.tool_fraction for _ in range(n)]


def problem_to_eval(p: quant.Problem, idx: int, split: str) -> dict:
    return {"id": f"heldout-{p.family}-{idx}", "question": p.question, "context": None,
            "answer": quant.fmt(p.answer), "answer_numeric": float(p.answer),
            "source": "generator:market" if p.family.startswith("market") else "generator:quant",
            "license": "generated",
            "meta": {"family": p.family, "template": p.template, "unit": p.unit, "split": split,
                     # worked solution: the held-out text for perplexity, never shown to the model
                     "solution": p.solution()}}


def read_user_files(cfg_data, rejects: list[dict], counts: Counter) -> tuple[list[dict], list[dict], list[dict]]:
    """(SFT rows, DPO rows, files that gave no row) from every file in the dataset folder."""
    folder = Path(cfg_data.dataset_folder)
    overrides = dict(item.split("=", 1) for item in cfg_data.dataset_formats)
    files, ignored = user_files(folder)
    empty_files = []
    for p in ignored:
        reason = f"unsupported file type {p.suffix or '(none)'}; supported: {', '.join(EXTENSIONS)}"
        _reject(rejects, counts, str(p), "file", reason)
        empty_files.append({"file": str(p), "reason": reason})
    unknown = set(overrides) - {p.name for p in files}
    if unknown:
        raise DataError(f"data.dataset_formats names {sorted(unknown)}, not found in {folder}")
    sft, dpo = [], []
    for path in files:
        first_reject = len(rejects)
        counts[f"kept:{path.name}"] += 0  # listed in the summary even when it gives nothing
        fmt = FORMATS.get(overrides[path.name]) if path.name in overrides else None
        read_file(path, fmt, cfg_data, sft, dpo, rejects, counts)
        if not counts[f"kept:{path.name}"]:
            empty_files.append({"file": str(path), "reason": _why_no_rows(path, rejects[first_reject:])})
    for f in empty_files:
        log.warning("data: %s contributed 0 rows (%s)", f["file"], f["reason"])
    return sft, dpo, empty_files


def read_file(path: Path, fmt, cfg_data, sft: list, dpo: list, rejects: list, counts: Counter) -> None:
    """Rows of one file, converted by its format (named, or detected from the first row)."""
    for raw in read_rows(path, cfg_data.max_line_bytes):
        if raw.row is None:
            _reject(rejects, counts, raw.where, raw.field, raw.reason, path.name)
            continue
        fmt = fmt or detect(raw.row)
        if fmt is None:
            _reject(rejects, counts, raw.where, "format", f"cannot detect the format from keys "
                    f"{sorted(raw.row)}; known formats: {describe_formats()}", path.name)
            continue
        try:
            missing = [k for k in fmt.keys if k not in raw.row]
            if missing:
                raise RowError(missing[0], f"missing: {path.name} holds {fmt.name} rows (keys "
                               f"{', '.join(fmt.keys)}); this row has keys {sorted(raw.row)}")
            conv = fmt.convert(raw.row)
        except RowError as e:
            _reject(rejects, counts, raw.where, e.field, e.reason, path.name)
            continue
        if (bad := _think_problem(conv.messages)) is not None:
            _reject(rejects, counts, raw.where, bad[0], bad[1].args[0], path.name)
            counts[f"think_tags:{bad[1].name}"] += 1
            continue
        rid = f"{path.stem}-{raw.where.rsplit(':', 1)[1].replace('row ', 'r')}"
        base = {"id": rid, "source": f"file:{path.name}", "format": fmt.name}
        if conv.dpo:
            dpo.append({**base, **conv.dpo})
        if conv.text is not None:
            sft.append({**base, "text": conv.text})
        elif conv.messages and (not conv.dpo or cfg_data.dpo_to_sft):
            sft.append({**base, "messages": conv.messages, **({"tools": conv.tools} if conv.tools else {})})
        counts[f"kept:{path.name}"] += 1
        counts[f"format:{fmt.name}"] += 1


def _think_problem(messages: list[dict] | None) -> tuple[str, ThinkTagError] | None:
    """(field, error) of the first assistant turn whose <think> tags do not form one
    block at its start (unclosed, unopened, nested, doubled): a model trained on it
    would learn to leave its reasoning open or to reason twice."""
    for i, m in enumerate(messages or []):
        if m["role"] == "assistant":
            try:
                check_think_tags(m["content"])
            except ThinkTagError as e:
                return f"messages[{i}].content", e
    return None


def _why_no_rows(path: Path, file_rejects: list[dict]) -> str:
    whole = next((r for r in file_rejects if r["where"] == str(path)), None)
    if whole:
        return whole["reason"]
    if file_rejects:
        return f"every row rejected ({len(file_rejects)}; see rejects.jsonl)"
    return NO_ROWS[path.suffix.lower()]


def _reject(rejects, counts, where, field, reason, source=None):
    rejects.append({"where": where, "field": field, "reason": reason})
    counts[f"rejected:{source or Path(where.split(':')[0]).name}"] += 1
    counts[f"reason:{field}"] += 1


def contamination_hashes(patterns: list[str]) -> dict[str, str]:
    """Normalized-question hash -> 'file:id' for every evaluation item."""
    hashes: dict[str, str] = {}
    for pattern in patterns:
        for f in sorted(glob.glob(pattern)):
            for row in read_jsonl(f):
                if isinstance(row.get("question"), str):
                    hashes[text_hash(row["question"])] = f"{f}:{row.get('id')}"
    return hashes


def run(cfg: PipelineConfig) -> Path:
    """Gather every source, drop duplicates and evaluation items, check tokens and the
    reject rate, then write the split (nothing is written when a check fails but the
    rejects, to read why)."""
    d = cfg.data
    out = Path(d.data_dir)
    rejects: list[dict] = []
    counts: Counter = Counter()
    rows, heldout, dpo_rows, empty_files, families = gather(d, rejects, counts)
    if empty_files and d.strict_inputs:
        _write_rejects(out, rejects)
        raise DataError("--strict_inputs: " + "; ".join(f"{f['file']} gave no rows ({f['reason']})"
                                                       for f in empty_files))
    rows = dedupe(rows, rejects, counts)
    rows, guarded = decontaminate(rows, heldout, dpo_rows, d.contamination_files, counts)
    if d.token_check:
        rows, token_stats = check_rows(rows, cfg.model.base_model, cfg.model.max_seq_length, rejects, counts)
    else:
        token_stats = {"checked": False}
    n_rejected = reject_gate(d, out, rejects, counts)
    heldout_rows = [problem_to_eval(p, i, split) for i, (split, p) in enumerate(heldout)]
    stats = {"train": len(rows), "heldout": len(heldout_rows), "dpo_pairs": len(dpo_rows), "counts": dict(counts),
             "files_without_rows": empty_files, "families": families,
             "external_eval_items_guarded": guarded, "tokens": token_stats}
    write(out, rows, heldout_rows, rejects, dpo_rows, stats)
    log.info("data: %d train rows, %d held-out items, %d rejected, %d duplicates removed -> %s",
             len(rows), len(heldout_rows), n_rejected, counts["duplicates_removed"], out)
    print(stats_table(stats))
    return out


def gather(d, rejects: list[dict], counts: Counter) -> tuple[list, list, list, list, dict]:
    """(training rows, held-out (split, problem) pairs, DPO pairs, user files that gave no
    row, generated families drawn) from the generators, the hub and the user's files."""
    train_problems, unseen, fresh = quant_draws(d)
    heldout = [pair for i in range(len(unseen)) for pair in
               [("unseen_template", unseen[i])] + ([("random", fresh[i])] if i < len(fresh) else [])]
    offered = offers_tools(d, len(train_problems))
    rows = [problem_to_chat(p, i, instruction=d.instruction, tools=t)
            for i, (p, t) in enumerate(zip(train_problems, offered))]
    counts["kept:generator:quant"] = len(rows)
    counts["generated_with_tool"] = sum(offered)
    market_train, market_held = market_problems(d)
    rows += [problem_to_chat(p, len(rows) + i, source="generator:market", instruction=d.instruction)
             for i, p in enumerate(market_train)]
    if market_train:
        counts["kept:generator:market"] = len(market_train)
    heldout += [("random", p) for p in market_held]
    for spec in d.hub_datasets:
        hub_rows = load_source(spec, d.hub_limit, d.hub_optional)
        counts[f"kept:hub:{spec}"] = len(hub_rows)
        rows += hub_rows
    user_rows, dpo_rows, empty_files = read_user_files(d, rejects, counts)
    return rows + user_rows, heldout, dpo_rows, empty_files, dict(Counter(p.family for p in train_problems))


def dedupe(rows: list[dict], rejects: list[dict], counts: Counter) -> list[dict]:
    """Exact duplicates (normalized full conversation) are dropped, and counted."""
    seen, unique = set(), []
    for r in rows:
        h = text_hash(json.dumps(r.get("messages") or r.get("text")))
        if h in seen:
            counts["duplicates_removed"] += 1
            rejects.append({"where": r["id"], "field": "messages", "reason": "exact duplicate"})
            continue
        seen.add(h)
        unique.append(r)
    return unique


def decontaminate(rows: list[dict], heldout: list, dpo_rows: list[dict], patterns: list[str],
                  counts: Counter) -> tuple[list[dict], int]:
    """Evaluation items never reach training: a row asking a held-out question is dropped
    (and counted); one asking an external eval set's question stops the stage. Returns the
    rows and how many external items were guarded."""
    heldout_q = {text_hash(p.question) for _, p in heldout}
    kept = [r for r in rows if text_hash(_question_of(r)) not in heldout_q]
    counts["dropped_overlapping_heldout"] = len(rows) - len(kept)
    external = contamination_hashes(patterns)
    for r in kept + [{**p, "messages": p["prompt"]} for p in dpo_rows]:
        hit = external.get(text_hash(_question_of(r)))
        if hit:
            raise DataError(f"training row {r['id']} ({r['source']}) is an evaluation item: {hit}")
    return kept, len(external)


def reject_gate(d, out: Path, rejects: list[dict], counts: Counter) -> int:
    """Stop when more than max_reject_fraction of the user's rows were rejected (the
    rejects are written, to read why); returns how many were."""
    user_total = sum(v for k, v in counts.items() if k.startswith("rejected:") or
                     (k.startswith("kept:") and ":" not in k[5:]))  # user files only
    n_rejected = sum(v for k, v in counts.items() if k.startswith("rejected:"))
    if user_total and n_rejected / user_total > d.max_reject_fraction:
        _write_rejects(out, rejects)
        raise DataError(f"{n_rejected} of {user_total} user rows rejected (more than "
                        f"{d.max_reject_fraction:.0%}); see {out / 'rejects.jsonl'}")
    return n_rejected


def write(out: Path, rows: list[dict], heldout_rows: list[dict], rejects: list[dict], dpo_rows: list[dict],
          stats: dict) -> None:
    """Every file at once: the folder appears under its name only when complete."""
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        write_jsonl(tmp / "train.jsonl", rows)
        write_jsonl(tmp / "heldout.jsonl", heldout_rows)
        write_jsonl(tmp / "rejects.jsonl", rejects)
        if dpo_rows:
            write_jsonl(tmp / "dpo.jsonl", dpo_rows)
        write_json_atomic(tmp / "stats.json", stats)


def _question_of(row: dict) -> str:
    text = first_user_text(row["messages"]) if "messages" in row else row["text"]
    # Generated prompts carry the answer-format instruction; compare the question alone.
    return text.split("\n\n")[0]


def _write_rejects(out: Path, rejects: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "rejects.jsonl", rejects)


def stats_table(stats: dict) -> str:
    """The summary printed at the end of the stage (stats.json has it all)."""
    c = stats["counts"]
    lines = ["| source | kept | rejected |", "|---|---|---|"]
    sources = sorted({k.split(":", 1)[1] for k in c if k.startswith(("kept:", "rejected:"))})
    for s in sources:
        lines.append(f"| {s} | {c.get('kept:' + s, 0)} | {c.get('rejected:' + s, 0)} |")
    fmts = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(c.items()) if k.startswith("format:"))
    reasons = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(c.items()) if k.startswith("reason:"))
    t = stats["tokens"]
    lines += [f"formats: {fmts or 'generated only'}",
              f"rejects by field: {reasons or 'none'}; duplicates removed {c.get('duplicates_removed', 0)}; "
              f"over max_seq_length {c.get('dropped_too_long', 0)}; template problems {c.get('dropped_template', 0)}",
              f"token lengths: p50 {t.get('p50')}, p90 {t.get('p90')}, p99 {t.get('p99')}, max {t.get('max')}"
              if t.get("checked") else "token lengths: not checked (tokenizer unavailable or token_check off)",
              f"train rows {stats['train']}, held-out items {stats['heldout']}, DPO pairs {stats['dpo_pairs']}"]
    lines += [f"contributed 0 rows: {Path(f['file']).name} ({f['reason']})" for f in stats.get("files_without_rows", [])]
    return "\n".join(lines)
