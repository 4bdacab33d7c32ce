"""The one place that turns a question into the user turn, for training and
evaluation alike: a prompt the model was trained on must be the prompt it is
evaluated with."""
from __future__ import annotations

FINAL_ANSWER_INSTRUCTION = (
    "Show the formula, the numbers and each step, then end with a line 'Final answer: <number>'."
)


# DeepSeek's recommended instruction for math-style questions to R1 models
R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def user_prompt(question: str, context: str | None = None, instruction: str = FINAL_ANSWER_INSTRUCTION) -> str:
    parts = [question.strip()]
    if context:
        parts.append(f"Context:\n{context.strip()}")
    parts.append(instruction)
    return "\n\n".join(parts)
