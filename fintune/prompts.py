"""The one place that turns a question into the user turn (and a row back into its
question), for training and evaluation alike: a prompt the model was trained on must be the prompt it is
evaluated with. A profile names its instruction (`data.instruction`); the data
stage, the eval, the merge check and the export smoke test all build prompts
from that one entry, and the trained replies state their answer the way it asks."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable

from fintune.registry import Registry

FINAL_ANSWER_INSTRUCTION = (
    "Show the formula, the numbers and each step, then end with a line 'Final answer: <number>'."
)
# DeepSeek's recommended instruction for math-style questions to R1 models (model card, "Usage Recommendations")
R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

_FINAL_LINE = re.compile(r"^Final answer:\s*(.+?)\s*$")


@dataclass(frozen=True)
class Instruction:
    text: str
    # the answer as written in a worked solution -> the line a trained reply ends with
    answer_line: Callable[[str], str]


INSTRUCTIONS: Registry[Instruction] = Registry("instruction")
INSTRUCTIONS.register("final_answer", Instruction(FINAL_ANSWER_INSTRUCTION, lambda a: f"Final answer: {a}"))
# eval/extract.py reads the last \boxed{} (outermost, braces balanced); "$" and "%" inside stay readable
INSTRUCTIONS.register("boxed", Instruction(R1_INSTRUCTION, lambda a: f"\\boxed{{{a}}}"))


def instruction_text(name: str) -> str:
    return INSTRUCTIONS.get(name).text


def restate_answer(solution: str, instruction: str) -> str:
    """A worked solution (ending `Final answer: X`, fintune/data/quant.py) with its
    answer line written the way `instruction` asks; a solution without one is unchanged."""
    lines = solution.rstrip("\n").split("\n")
    m = _FINAL_LINE.match(lines[-1]) if lines else None
    if not m:
        return solution
    return "\n".join(lines[:-1] + [INSTRUCTIONS.get(instruction).answer_line(m.group(1))])


def user_prompt(question: str, context: str | None = None, instruction: str = "final_answer") -> str:
    """`instruction`: a name in INSTRUCTIONS (a profile's data.instruction)."""
    parts = [question.strip()]
    if context:
        parts.append(f"Context:\n{context.strip()}")
    parts.append(instruction_text(instruction))
    return "\n\n".join(parts)


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def text_hash(text: str) -> str:
    """A question's identity for deduplication and decontamination: case and spacing ignored."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()[:20]


def first_user_text(messages: list[dict]) -> str:
    return next(m["content"] for m in messages if m["role"] == "user")
