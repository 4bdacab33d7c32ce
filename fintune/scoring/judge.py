"""Whether a reply is right: its stated answer against the gold (extract.score, under
the question's own precision and unit), and its formula and substitution lines
against the worked solution, which tells a wrong formula from wrong arithmetic."""
from __future__ import annotations

from fintune.scoring.extract import Extraction, Score, expectation, extract, score


def _line(text: str, prefix: str) -> str | None:
    hit = next((ln for ln in text.splitlines() if ln.strip().startswith(prefix)), None)
    return " ".join(hit.split()) if hit is not None else None


def step_matches(item: dict, text: str) -> tuple[bool, bool] | None:
    """(formula line right, substitution line right) against the worked solution,
    or None when the item has none: tells a wrong formula from wrong arithmetic."""
    solution = (item.get("meta") or {}).get("solution")
    if not solution:
        return None
    return tuple(_line(solution, p) is not None and _line(text, p) == _line(solution, p)
                 for p in ("Formula:", "Substitute:"))


SCORING = ("accuracy: explicit answer (Final answer / \\boxed / JSON) within 1% (|gold| < 0.01: within 1e-4 "
           "or half the precision the question names); percent or basis-point rescaling only where the reply or "
           "the question marks it. lenient: also the last number of replies without an explicit answer. "
           "strict: explicit answer within 0.2%, no rescaling.")


def asked(item: dict, with_context: bool) -> str:
    """The text whose wording sets the answer's precision and unit: the question,
    plus its context when the model was shown it."""
    ctx = item.get("context") if with_context else None
    return f"{item['question']}\n{ctx}" if ctx else item["question"]


def score_item(item: dict, text: str, with_context: bool, prompt: str = "") -> tuple[Extraction, Score]:
    # a prompt that opens <think> (DeepSeek-R1) leaves a cut reply with no answer part
    ex = extract(text, open_think=prompt.endswith("<think>\n"))
    return ex, score(ex, float(item["answer_numeric"]), expectation(asked(item, with_context)))
