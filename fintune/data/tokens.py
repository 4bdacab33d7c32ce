"""Data-stage checks with the base model's own tokenizer and chat template:
length against max_seq_length, a single BOS, special tokens kept whole, and a
loss mask that is not empty. Failures are rejects with a reason, counted."""
from __future__ import annotations

import logging

from fintune import models
from fintune.errors import MissingError
from fintune.templates import segments, tokenize_example, use_tools_template

log = logging.getLogger(__name__)


def load_tokenizer(base_model: str):
    """The base model's tokenizer, or None (with one log line) when it cannot be
    had here, e.g. a hub model with no network; training still checks lengths."""
    try:
        path = models.resolve_base_model(base_model)
    except MissingError as e:
        if not models.is_hub_id(base_model):
            raise  # a folder that is not there is a mistake, not the hub being away
        log.warning("data: tokenizer of %s not available (%s); length and template checks left to training",
                    base_model, e)
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        log.warning("data: tokenizer of %s not available (%s); length and template checks left to training",
                    base_model, str(e).splitlines()[0][:200])
        return None


def problem(tokenizer, family, row: dict, max_len: int) -> tuple[str | None, int]:
    """(reason the row cannot be trained on or None, token count)."""
    if "text" in row:
        ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels, text = ids, row["text"] + tokenizer.eos_token
    else:
        text = "".join(t for t, _ in segments(tokenizer, family, row["messages"], row.get("tools")))
        ex = tokenize_example(tokenizer, family, row["messages"], row.get("tools"))
        ids, labels = ex["input_ids"], ex["labels"]
    bos = tokenizer.bos_token_id
    if bos is not None and ids[:2] == [bos, bos]:
        return "double BOS at the start", len(ids)
    for tok in tokenizer.all_special_tokens:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tok and text.count(tok) != ids.count(tid):
            return f"special token {tok} split into pieces ({text.count(tok)} in text, {ids.count(tid)} as a token)", len(ids)
    if all(l == -100 for l in labels):
        return "no assistant tokens to train on (empty loss mask)", len(ids)
    if len(ids) > max_len:
        return f"{len(ids)} tokens, over max_seq_length={max_len}", len(ids)
    return None, len(ids)


def check_rows(rows: list[dict], base_model: str, max_len: int, rejects: list, counts) -> tuple[list[dict], dict]:
    tokenizer = load_tokenizer(base_model)
    if tokenizer is None:
        return rows, {"checked": False}
    family = use_tools_template(tokenizer)  # the template training renders with
    kept, lengths = [], []
    for r in rows:
        try:
            reason, n = problem(tokenizer, family, r, max_len)
        except Exception as e:  # the tokenizer or the template's Jinja code failing on this row's text
            reason, n = f"cannot tokenize ({type(e).__name__}: {str(e)[:160]})", 0
        if reason:
            rejects.append({"where": r["id"], "field": "tokens", "reason": reason})
            key = "too_long" if "max_seq_length" in reason else "template"
            counts[f"dropped_{key}"] += 1
            continue
        kept.append(r)
        lengths.append(n)
    lengths.sort()
    pct = {f"p{q}": lengths[min(len(lengths) - 1, int(q / 100 * len(lengths)))] for q in (50, 90, 99)} \
        if lengths else {}
    return kept, {"checked": True, "template": family.name, "max": lengths[-1] if lengths else 0, **pct}
