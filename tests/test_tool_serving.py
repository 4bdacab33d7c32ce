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
