"""GRPO's rewards: the eval's own judgement of a reply, one TRL reward function per
component, so each is logged on its own (TRL logs `rewards/<function name>/mean`,
trl 1.14.2 trainer/grpo_trainer.py GRPOTrainer._generate_and_score_completions).

A reply is judged as the eval judges it: first cut by the eval's stop rule
(fintune/scoring/stop.py cut: a looping reply ends at its third repeated line, the
rest of the reply after the first final-answer line is dropped), then read by
the eval's scorer (fintune/scoring/extract.py extract / score / expectation). A
reply cut at the token limit is whatever is left: no answer, no reward.

- correct: 1 where the scorer counts the answer right (explicit answer within
  tolerance, rescaled only where marked), else 0.
- format: 1 where the reply states an explicit answer the scorer can read (a
  `Final answer:` line, `\\boxed{}` or JSON). For an R1 model (the prompt opens
  `<think>`) the answer must follow `</think>`: extract reads only the text after
  it, so an unclosed reasoning block has no answer part.
- steps: for generated families, 0.5 for the formula line and 0.5 for the
  substitution line matching the worked solution, as the eval's formula and
  substitution rates count them (fintune/scoring/judge.py step_matches). None for
  rows without a worked solution: TRL leaves a None out of that function's mean
  and of the row's sum (it becomes NaN, summed with nansum).
- length (train.grpo_length_penalty > 0): -penalty x reply tokens / max tokens.

TRL calls each with the batch's `prompts`, `completions`, `completion_ids` and
every other dataset column as a keyword list (GRPOTrainer._calculate_rewards):
here `gold`, `question`, `solution` and `open_think` (fintune/train/grpo.py).
"""
from __future__ import annotations

from fintune.scoring.extract import Extraction, Score, expectation, extract, score
from fintune.scoring.judge import step_matches
from fintune.scoring.stop import cut


def reply_text(completion) -> str:
    """A completion as TRL passes it: text, or (conversational prompts) a list of messages."""
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion)
    return completion


def judge(text: str, gold: float, question: str, open_think: bool) -> tuple[str, Extraction, Score]:
    """(the reply as the stop rule leaves it, what the scorer extracts, its score)."""
    text, _ = cut(text, open_think=open_think)
    ex = extract(text, open_think=open_think)
    return text, ex, score(ex, float(gold), expectation(question))


def correct(completions, gold, question, open_think, **_) -> list[float]:
    return [float(judge(reply_text(c), g, q, o)[2].correct)
            for c, g, q, o in zip(completions, gold, question, open_think)]


def answer_format(completions, open_think, **_) -> list[float]:
    out = []
    for c, o in zip(completions, open_think):
        text, _ = cut(reply_text(c), open_think=o)
        out.append(float(extract(text, open_think=o).explicit))
    return out


def steps(completions, solution, open_think, **_) -> list[float | None]:
    out: list[float | None] = []
    for c, sol, o in zip(completions, solution, open_think):
        matched = step_matches({"meta": {"solution": sol}}, cut(reply_text(c), open_think=o)[0]) if sol else None
        out.append(None if matched is None else 0.5 * matched[0] + 0.5 * matched[1])
    return out


answer_format.__name__ = "format"  # the name TRL logs it under


def length_penalty(penalty: float, max_tokens: int):
    def length(completions, completion_ids, **_) -> list[float]:
        return [-penalty * len(ids) / max_tokens for ids in completion_ids]

    return length


def reward_funcs(train_cfg) -> list:
    """The reward functions of a run, in the order TRL weighs and logs them."""
    funcs = [correct, answer_format, steps]
    if train_cfg.grpo_length_penalty > 0:
        funcs.append(length_penalty(train_cfg.grpo_length_penalty, train_cfg.grpo_max_completion_length))
    return funcs


def component_means(replies: list[str], rows: list[dict], train_cfg, reply_tokens: list[int]) -> dict[str, float]:
    """Each reward function's mean over `replies` to `rows` (prompt rows of
    grpo.prompt_rows or held-out items made into them): how the bench reports them.
    None (no worked solution) is left out of a mean, as TRL leaves it out."""
    cols = {k: [r[k] for r in rows] for k in ("gold", "question", "solution", "open_think")}
    out = {}
    for f in reward_funcs(train_cfg):
        vals = [v for v in f(completions=replies, completion_ids=[[0] * n for n in reply_tokens], **cols)
                if v is not None]
        out[f.__name__] = sum(vals) / len(vals) if vals else float("nan")
    return out
