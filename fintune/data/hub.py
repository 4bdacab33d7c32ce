"""Instruction corpora through ``datasets.load_dataset``: a hub id (for example
FinLang/investopedia-instruction-tuning-dataset) or a local copy (a file or a
folder). Question/answer columns are found by name; a source the network cannot
reach is one log line when the config marks hub sources optional."""
from __future__ import annotations

import logging
from pathlib import Path

from fintune.jsonl import DataError

log = logging.getLogger(__name__)
QUESTION = ("question", "instruction", "prompt", "input_text", "query")
ANSWER = ("answer", "output", "response", "completion")
CONTEXT = ("context", "input")
_LOCAL_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _load(spec: str):
    from datasets import load_dataset

    p = Path(spec)
    if p.is_file():
        if p.suffix.lower() not in _LOCAL_BUILDERS:
            raise DataError(f"{spec}: local copies must be one of {', '.join(_LOCAL_BUILDERS)}")
        return load_dataset(_LOCAL_BUILDERS[p.suffix.lower()], data_files=str(p), split="train")
    return load_dataset(spec, split="train")


def _column(names: list[str], wanted: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in names}
    return next((lower[w] for w in wanted if w in lower), None)


def load_source(spec: str, limit: int, optional: bool) -> list[dict]:
    """Rows in the output schema (messages + source + id), at most `limit`."""
    try:
        ds = _load(spec)
    except DataError:
        raise
    except Exception as e:  # offline hub, missing dataset, bad file: many exception types
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if optional:
            log.warning("data: could not load %s (%s); continuing without it (hub sources marked optional)",
                        spec, reason)
            return []
        raise DataError(f"could not load {spec} ({reason}); set data.hub_optional: true to continue without it") from None
    q, a = _column(ds.column_names, QUESTION), _column(ds.column_names, ANSWER)
    c = _column([n for n in ds.column_names if n not in (q, a)], CONTEXT)
    if not q or not a:
        raise DataError(f"{spec}: no question/answer columns among {ds.column_names}; "
                        f"expected one of {QUESTION} and one of {ANSWER}")
    rows = []
    for i, rec in enumerate(ds.select(range(min(limit, len(ds))))):
        question, answer = rec.get(q), rec.get(a)
        if not isinstance(question, str) or not question.strip() or not isinstance(answer, str) or not answer.strip():
            continue  # counted by the caller as the difference between read and kept
        ctx = rec.get(c) if c else None
        content = f"{question.strip()}\n\nContext:\n{ctx.strip()}" if isinstance(ctx, str) and ctx.strip() else question.strip()
        rows.append({"id": f"{Path(spec).name}-{i}", "source": f"hub:{spec}", "format": "hub",
                     "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer.strip()}]})
    log.info("data: %s: %d rows read, %d kept (question %r, answer %r%s)", spec, min(limit, len(ds)), len(rows),
             q, a, f", context {c!r}" if c else "")
    return rows
