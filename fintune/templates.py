"""Chat-template families: how a model's turns are rendered for training, and
how Ollama should render them. Keyed on the tokenizer's own chat template.

Training text is built as (prompt text, completion text) so the loss mask is a
plain split point: prompt tokens get label -100, completion tokens keep theirs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from fintune.errors import UsageError
from fintune.registry import Registry, UnknownNameError


@dataclass
class TemplateFamily:
    name: str
    marker: str  # substring of the HF chat template that identifies the family
    ollama_template: str
    stops: list[str]
    params: dict[str, float | int] = field(default_factory=dict)
    system_allowed: bool = True
    # variant for templates whose generation prompt opens the reasoning block
    ollama_template_thinking: str | None = None
    # turn markers for Unsloth's train_on_responses_only
    instruction_part: str = ""
    response_part: str = ""
    # (tokenizer, prompt messages, completion message) -> (prompt text, completion text)
    render: Callable | None = None

    def split(self, tokenizer, prompt: list[dict], completion: dict) -> tuple[str, str]:
        return (self.render or _render_by_difference)(tokenizer, prompt, completion)


FAMILIES: Registry[TemplateFamily] = Registry("chat template family")


def _render_by_difference(tokenizer, prompt, completion):
    """Render prompt alone (with generation prompt) and prompt+completion; the
    completion is what the second adds. Fails loudly if the template renders the
    prompt differently in the two cases, since the loss mask would then be wrong."""
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + [completion], tokenize=False)
    if not full.startswith(prompt_text):
        raise UsageError("chat template renders the prompt differently when a reply follows; "
                         "cannot find where the assistant reply starts")
    return prompt_text, full[len(prompt_text):]


def _render_deepseek_r1(tokenizer, prompt, completion):
    """DeepSeek-R1's template drops everything before `</think>` in assistant turns
    and its generation prompt already ends with `<think>\\n`; render the prompt
    with the template and append the reply verbatim so the reasoning is trained."""
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    reply = completion["content"]
    if prompt_text.endswith("<think>\n") and reply.startswith("<think>"):
        reply = reply[len("<think>"):].lstrip("\n")
    return prompt_text, reply + tokenizer.eos_token


CHATML_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)

# Full-width bars (U+FF5C) and the U+2581 "▁" are part of the real token strings.
R1_USER, R1_ASSISTANT = "<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>"
R1_BOS, R1_EOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"


def _r1_ollama_template(think: bool) -> str:
    # Later revisions of the R1 template end the generation prompt with
    # "<think>\n"; the Modelfile must prompt exactly as training did.
    return (
        "{{- if .System }}{{ .System }}{{ end }}"
        "{{- range $i, $_ := .Messages }}"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
        "{{- if eq .Role \"user\" }}" + R1_USER + "{{ .Content }}"
        "{{- else if eq .Role \"assistant\" }}" + R1_ASSISTANT + "{{ .Content }}"
        "{{- if not $last }}" + R1_EOS + "{{- end }}"
        "{{- end }}"
        "{{- if and $last (ne .Role \"assistant\") }}" + R1_ASSISTANT + ("<think>\n" if think else "")
        # "{{-" would trim the newline after <think>
        + "{{ end }}"
        "{{- end }}"
    )

LLAMA3_TEMPLATE = (
    "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)

FAMILIES.register("deepseek-r1", TemplateFamily(
    name="deepseek-r1", marker=R1_ASSISTANT, ollama_template=_r1_ollama_template(False),
    ollama_template_thinking=_r1_ollama_template(True),
    stops=[R1_BOS, R1_EOS, R1_USER, R1_ASSISTANT],
    params={"temperature": 0.6, "top_p": 0.95, "num_ctx": 8192},
    system_allowed=False, render=_render_deepseek_r1, instruction_part=R1_USER, response_part=R1_ASSISTANT))
# The embedded SmolLM2's family. Greedy without a repeat penalty is what the eval
# measures, so the report is what `ollama run` gives. Ollama's default penalty (1.1
# over the last 64 tokens, applied by its llama.cpp runner) broke more loops (format
# 94.8-96.6% instead of 89.7-92.7%) but cost 5-10 points of substitution lines: the window
# holds the question's numbers that line must copy (README, "Sampling"). num_predict
# ends a loop at 2.5x the longest worked solution instead of at the context size.
FAMILIES.register("chatml", TemplateFamily(
    name="chatml", marker="<|im_start|>", ollama_template=CHATML_TEMPLATE,
    stops=["<|im_start|>", "<|im_end|>"],
    params={"temperature": 0.0, "repeat_penalty": 1.0, "num_predict": 1024, "num_ctx": 4096},
    instruction_part="<|im_start|>user\n", response_part="<|im_start|>assistant\n"))
FAMILIES.register("llama3", TemplateFamily(
    name="llama3", marker="<|start_header_id|>", ollama_template=LLAMA3_TEMPLATE,
    stops=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    params={"temperature": 0.6, "top_p": 0.9, "num_ctx": 8192},
    instruction_part="<|start_header_id|>user<|end_header_id|>\n\n",
    response_part="<|start_header_id|>assistant<|end_header_id|>\n\n"))


def detect(chat_template: str | None) -> TemplateFamily:
    """The family whose marker appears in a Hugging Face chat template."""
    if not chat_template:
        raise UnknownNameError(f"the tokenizer has no chat template; known families: "
                               f"{', '.join(FAMILIES.names())}")
    for _, fam in FAMILIES.items():
        if fam.marker in chat_template:
            return fam
    raise UnknownNameError("no known chat template family matches this tokenizer's template; "
                           f"known families: {', '.join(FAMILIES.names())}")


def default_system_prompt(chat_template: str) -> str | None:
    """The system prompt a template inserts when none is given (SmolLM2 does)."""
    m = re.search(r"\{\{ *'<\|im_start\|>system\n(.*?)<\|im_end\|>", chat_template, re.S)
    return m.group(1) if m else None


def tokenize_example(tokenizer, family: TemplateFamily, messages: list[dict]) -> dict:
    """Messages ending with an assistant turn -> input_ids and labels (-100 on
    everything but that last turn). Special tokens come from the template text
    only (add_special_tokens=False), so there is never a second BOS."""
    if not messages or messages[-1].get("role") != "assistant":
        raise UsageError("conversation must end with an assistant message")
    prompt_text, completion_text = family.split(tokenizer, messages[:-1], messages[-1])
    p = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    if not c:
        raise UsageError("assistant reply renders to no tokens")
    return {"input_ids": p + c, "labels": [-100] * len(p) + list(c)}
