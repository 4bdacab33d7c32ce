"""Ollama Modelfiles: golden files per chat-template family, exact R1 token
strings, and quoting that a system prompt cannot break."""
from pathlib import Path

import pytest

from fintune.export.modelfile import quote, render
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
    assert "<\uff5cAssistant\uff5c><think>\n{{ end }}" in text


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
