"""Serving a model trained to call the calculator: its GGUFs carry the tools-aware
chat template, and llama-server --jinja turns a reply that calls the tool into
OpenAI `tool_calls`."""
from __future__ import annotations

import json

import pytest

from conftest import LLAMA_CPP
from fintune.gguf import read_header
from fintune.templates.tools import renders_tools


def _converter():
    if not (LLAMA_CPP / "convert_hf_to_gguf.py").is_file():
        pytest.skip("llama.cpp source not present (scripts/setup_llama_cpp.sh)")


def test_base_gguf_carries_the_tools_template(tiny_llama_dir, tmp_path, monkeypatch):
    """The eval runs the base model with and without the tool from its GGUF, whose
    tokenizer.chat_template must list tools; the checkpoint folder is left as it was."""
    from fintune import models
    from fintune.config import PipelineConfig

    _converter()
    monkeypatch.setenv("FINTUNE_CACHE", str(tmp_path))
    before = {p.name: p.read_bytes() for p in tiny_llama_dir.iterdir() if p.is_file()}
    cfg = PipelineConfig()
    cfg.export.llama_cpp_path = str(LLAMA_CPP)
    out = models.base_gguf(cfg, str(tiny_llama_dir))
    template = read_header(out)["tokenizer.chat_template"]
    assert renders_tools(template) and "<tool_call>" in template and "<tool_response>" in template
    assert {p.name: p.read_bytes() for p in tiny_llama_dir.iterdir() if p.is_file()} == before
    own = json.loads((tiny_llama_dir / "tokenizer_config.json").read_text()).get("chat_template") or \
        (tiny_llama_dir / "chat_template.jinja").read_text()
    assert not renders_tools(own)


QUESTION = "What does $1,000 grow to in 2 years at 5% a year?"
CALL = {"expression": "1000*(1+0.05)^2"}


def _overfit_tool_call(model_dir, out, messages, tools, steps: int = 200):
    """The tiny model trained on one reply, a call to the calculator, until greedy
    decoding writes it back; saved with its tools template into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fintune.templates import tokenize_example, use_tools_template

    tok = AutoTokenizer.from_pretrained(model_dir)
    family = use_tools_template(tok)
    reply = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "calculate", "arguments": CALL}}]}
    ex = tokenize_example(tok, family, messages + [reply], tools)
    ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
    first = next(i for i, l in enumerate(ex["labels"]) if l != -100)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            with torch.no_grad():
                pred = model(input_ids=ids).logits[0, first - 1:-1].argmax(-1)
            if torch.equal(pred, ids[0, first:]):
                print(f"learned in {step + 1} steps")
                break
    else:
        raise AssertionError(f"the tiny model did not learn the reply (loss {loss.item():.3f})")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return tok.decode(ex["input_ids"][first:])


@pytest.mark.slow
def test_llama_server_parses_the_chatml_tool_call_into_openai_tool_calls(tiny_llama_dir, tmp_path):
    """A GGUF carrying the ChatML tools template, served by llama-server --jinja: the
    reply `<tool_call>{"name": "calculate", ...}</tool_call>` comes back as OpenAI
    `tool_calls`, parsed by llama.cpp's own chat parser (common/chat.cpp
    common_chat_templates_apply_jinja, whose parser common/chat-diff-analyzer.cpp
    builds from the template), not as text."""
    import urllib.request

    from conftest import require_llama_cpp
    from fintune.calculator import TOOL_SCHEMA, run_tool_call
    from fintune.llama_cpp import LlamaCpp, LlamaServer

    require_llama_cpp()
    lc = LlamaCpp(LLAMA_CPP)
    lc.binary("llama-server")
    messages = [{"role": "user", "content": QUESTION}]
    written = _overfit_tool_call(tiny_llama_dir, tmp_path / "model", messages, [TOOL_SCHEMA])
    assert written.startswith("<tool_call>\n{") and "calculate" in written
    gguf = tmp_path / "tiny.gguf"
    lc.convert(tmp_path / "model", gguf, "f16")
    server = LlamaServer(lc, gguf, slots=1, ctx_per_slot=1024, threads=2)
    server.cmd.append("--jinja")
    body = {"messages": messages, "tools": [TOOL_SCHEMA], "temperature": 0, "max_tokens": 64}
    with server:
        req = urllib.request.Request(server.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            reply = json.loads(r.read())
    choice = reply["choices"][0]
    calls = choice["message"].get("tool_calls")
    assert calls, choice
    assert choice["finish_reason"] == "tool_calls"
    fn = calls[0]["function"]
    assert fn["name"] == "calculate" and json.loads(fn["arguments"]) == CALL
    assert "<tool_call>" not in (choice["message"].get("content") or "")
    assert run_tool_call(fn["name"], fn["arguments"]) == "1102.5"
