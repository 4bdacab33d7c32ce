"""The eval with the calculator (fintune/eval/tools.py): its loop against a stand-in
llama-server that scripts the replies (cap, error texts, token budget, counts, the
reply cache, rows not run), and one slow test against the real llama-server."""
from __future__ import annotations

import json
import re
from collections import Counter
from types import SimpleNamespace

import pytest

from conftest import LLAMA_CPP, ROOT, require_llama_cpp
from llama_server_standin import StandIn, call, reply

from fintune import llama_cpp
from fintune.calculator import TOOL_SCHEMA, calculate
from fintune.eval import tools
from fintune.eval.evaluate import evaluate
from fintune.eval.report import markdown, write_report
from fintune.eval.rescore import rescore
from fintune.eval.runner import GGUFRunner

TEMPLATE = ROOT / "tests" / "templates" / "chatml_tools.jinja"
USER = [{"role": "user", "content": "What is 1000 at 5% for 2 years?"}]


@pytest.fixture
def standin():
    made = []

    def start(script, caps=None):
        made.append(StandIn(script, caps))
        return made[-1]

    yield start
    for s in made:
        s.close()


def loop_against(server: StandIn, max_new_tokens: int = 1000) -> tools.ToolReply:
    client = server.server_class()(None, None)
    return tools.tool_loop(lambda messages, budget: client.chat(messages, tools.TOOLS, budget), list(USER), max_new_tokens)


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def test_a_model_that_keeps_calling_stops_after_eight_calls_and_scores_no_answer(standin):
    server = standin(lambda body: (200, reply("Final answer: 2", [call("1+1")])))
    r = loop_against(server)
    assert (r.calls, r.stop, r.text) == (tools.MAX_CALLS, "call cap", "")
    # the ninth request is the one whose call is refused: 8 results went back, all the calculator's
    assert len(server.requests) == tools.MAX_CALLS + 1
    assert [m["content"] for m in tool_messages(server.requests[-1])] == [calculate("1+1")] * tools.MAX_CALLS
    assert all(body["tools"] == [TOOL_SCHEMA] for body in server.requests)


def test_calls_in_one_reply_count_each_toward_the_cap(standin):
    # 3 calls a reply: 6 run, the third reply would make 9
    server = standin(lambda body: (200, reply("", [call("2*3", i) for i in range(3)])))
    r = loop_against(server)
    assert (r.calls, r.stop, len(server.requests)) == (6, "call cap", 3)


def test_a_bad_expression_reaches_the_model_as_the_calculators_error_text(standin):
    def script(body):
        if not tool_messages(body):
            return 200, reply("Formula: FV = P(1+r)^n", [call("1000*(1+x)^2")])
        return 200, reply("Final answer: 1102.50")

    server = standin(script)
    r = loop_against(server)
    (sent,) = tool_messages(server.requests[1])
    assert sent["content"].startswith("error:") and "'x'" in sent["content"] and sent["tool_call_id"] == "call_0"
    # the assistant turn with its call precedes the result, as OpenAI clients send it
    assert server.requests[1]["messages"][1]["tool_calls"][0]["function"]["name"] == "calculate"
    assert (r.calls, r.errors, r.stop) == (1, 1, None)
    assert r.text == "Formula: FV = P(1+r)^n\nFinal answer: 1102.50"
    assert r.trace == [{"name": "calculate", "arguments": json.dumps({"expression": "1000*(1+x)^2"}),
                        "result": sent["content"]}]


def test_the_token_budget_covers_every_turn(standin):
    server = standin(lambda body: (200, reply("step", [call("1+1")], tokens=100)))
    r = loop_against(server, max_new_tokens=250)
    assert [b["max_tokens"] for b in server.requests] == [250, 150, 50]
    assert (r.stop, r.calls, r.n_tokens) == ("token budget", 3, 300)


def test_a_reply_the_server_cannot_parse_ends_the_loop_with_what_was_said(standin):
    def script(body):
        if not tool_messages(body):
            return 200, reply("Substitute: 1000*1.05^2", [call("1000*1.05^2")])
        # what llama-server answers when its chat parser rejects a reply (common/chat.cpp common_chat_peg_parse)
        return 500, {"error": {"code": 500, "message": "The model produced output that does not match the "
                                                          "expected peg-native format"}}

    r = loop_against(standin(script))
    assert r.stop.startswith("server error:") and "does not match" in r.stop
    assert (r.text, r.calls) == ("Substitute: 1000*1.05^2", 1)


ITEMS = [
    {"id": "a", "question": "1000 at 5% for 2 years?", "answer_numeric": 1102.5, "meta": {"family": "fv"}},
    {"id": "b", "question": "What is 3+5?", "answer_numeric": 8.0, "meta": {"family": "add"}},
    {"id": "c", "question": "Loop forever?", "answer_numeric": 1.0, "meta": {"family": "loop"}},
]


def _script(body):
    """Item a: one call, then the result as the answer; b: no call, a wrong answer; c: calls forever."""
    question = body["messages"][0]["content"]
    results = tool_messages(body)
    if question.startswith("1000"):
        return 200, (reply(f"Final answer: {results[0]['content']}") if results else
                     reply("Formula: FV = P(1+r)^n", [call("1000*(1+0.05)^2")]))
    if question.startswith("What"):
        return 200, reply("Final answer: 7")
    return 200, reply("", [call("1/0")])


def _runner(tmp_path, tokenizer_dir, template=TEMPLATE, parallel=2):
    gguf = tmp_path / "model.gguf"
    if not gguf.exists():
        gguf.write_bytes(b"GGUF stand-in: only its sha256 is read")
    return GGUFRunner(gguf, LLAMA_CPP, tokenizer_dir, name="m", parallel=parallel,
                      cache_dir=tmp_path / "cache", chat_template_file=template)


def test_the_eval_with_the_tool_counts_calls_errors_and_items_not_called_and_caches(
        tmp_path, standin, smollm2_dir, monkeypatch):
    server = standin(_script)
    served = server.server_class()
    monkeypatch.setattr(llama_cpp, "LlamaServer", served)
    res, rows = evaluate(_runner(tmp_path, smollm2_dir), ITEMS, "set", True, 320, 1, tools=True)
    assert served.made[0]["jinja"] and served.made[0]["chat_template_file"] == TEMPLATE
    assert res["tools"] == "on" and res["n"] == 3 and res["accuracy"] == pytest.approx(1 / 3)
    assert res["tool_calls"] == 1 + tools.MAX_CALLS and res["tool_calls_per_item"] == pytest.approx(3.0)
    assert res["tool_errors"] == tools.MAX_CALLS  # 1/0, each time
    assert res["tool_not_called"] == 1 and res["tool_loop_ends"] == {"answered": 2, "call cap": 1}
    by_id = {r["id"]: r for r in rows}
    assert by_id["a"]["correct"] and by_id["a"]["tool_calls"][0]["result"] == "1102.5"
    assert by_id["c"]["output"] == "" and by_id["c"]["tool_stop"] == "call cap" and not by_id["c"]["correct"]
    asked = len(server.requests)

    # a second runner on the same file and settings: every reply from the cache, nothing asked
    again, _ = evaluate(_runner(tmp_path, smollm2_dir), ITEMS, "set", True, 320, 1, tools=True)
    assert len(server.requests) == asked and again["replies_from_cache"] == 3
    assert {k: again[k] for k in ("accuracy", "tool_calls", "tool_errors", "tool_not_called")} == \
        {k: res[k] for k in ("accuracy", "tool_calls", "tool_errors", "tool_not_called")}
    # another token budget is another key
    evaluate(_runner(tmp_path, smollm2_dir), ITEMS, "set", True, 300, 1, tools=True)
    assert len(server.requests) > asked


def test_the_cache_key_holds_the_tool_setting(tmp_path, smollm2_dir):
    cache = _runner(tmp_path, smollm2_dir).cache
    plain = cache.key("prompt", 1, 320)
    assert plain != cache.key("prompt", 1, 320, tools.CACHE_SETTING)
    assert cache.key("prompt", 1, 320, tools.CACHE_SETTING) != cache.key("prompt", 1, 320,
                                                                         {**tools.CACHE_SETTING, "max_calls": 9})
    assert plain == cache.key("prompt", 1, 320, None)  # keys of replies without the tool are as before


def test_a_template_without_tools_gets_a_row_that_says_so_and_asks_nothing(
        tmp_path, standin, smollm2_dir, tokenizer, monkeypatch):
    server = standin(_script)
    monkeypatch.setattr(llama_cpp, "LlamaServer", server.server_class())
    plain = tmp_path / "smollm2.jinja"
    plain.write_text(tokenizer.chat_template)  # SmolLM2's own ChatML renders no tools
    assert not tools.offers_tools(tokenizer.chat_template) and tools.offers_tools(TEMPLATE.read_text())
    res, rows = evaluate(_runner(tmp_path, smollm2_dir, plain), ITEMS, "set", True, 320, 1, tools=True)
    assert res["not_run"] == tools.NO_TOOLS and rows == [] and server.requests == []


def test_llama_cpp_finding_no_tools_in_the_template_is_said_too(tmp_path, standin, smollm2_dir, monkeypatch):
    server = standin(_script, caps={"supports_tools": False})
    monkeypatch.setattr(llama_cpp, "LlamaServer", server.server_class())
    res, _ = evaluate(_runner(tmp_path, smollm2_dir), ITEMS, "set", True, 320, 1, tools=True)
    assert res["not_run"] == tools.NO_TOOLS_LLAMA_CPP and server.requests == []


def test_a_runner_without_a_tool_loop_is_reported_not_run(tokenizer):
    hf_like = SimpleNamespace(name="adapter", tokenizer=tokenizer, tokens=0, seconds=0.0, cached=0, stops=Counter())
    res, rows = evaluate(hf_like, ITEMS, "set", True, 320, 1, tools=True)
    assert res["not_run"] == tools.NO_TOOL_LOOP and res["n"] == 3 and rows == []


def test_the_report_has_a_row_with_and_without_the_tool_and_rescore_keeps_them_apart(
        tmp_path, standin, smollm2_dir, monkeypatch):
    monkeypatch.setattr(llama_cpp, "LlamaServer", standin(_script).server_class())
    eval_file = tmp_path / "set.jsonl"
    eval_file.write_text("".join(json.dumps(it) + "\n" for it in ITEMS))
    on, on_rows = evaluate(_runner(tmp_path, smollm2_dir), ITEMS, "set", True, 320, 1, eval_file=eval_file,
                           tools=True)
    # the same model without the tool, from replies as the no-tool path scores them
    from fintune.eval.report import score_set

    off, off_rows = score_set("m", "set", ITEMS, ["Final answer: 1102.5", "Final answer: 8", "x"], 1.0)
    off["eval_file"] = str(eval_file)
    hf = {"model": "adapter", "eval_set": "set", "tools": "on", "n": 3, "not_run": tools.NO_TOOL_LOOP}
    out = write_report(tmp_path / "rep", [off, on, hf], off_rows + on_rows)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| m | off | set | 3 | 66.7% |" in md and "| m | on | set | 3 | 33.3% |" in md
    assert "| 3.00 | 8 | 1/3 |" in md  # calls per item, tool errors, not called
    assert f"| adapter | on | set | 3 | {tools.NO_TOOL_LOOP} |" in md
    report = json.loads(out.read_text())
    assert [r.get("tools") for r in report["results"]] == [None]
    assert [r["model"] for r in report["tool_results"]] == ["m", "adapter"]

    _, compared = rescore(tmp_path / "rep")
    again = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert again["results"][0]["accuracy"] == pytest.approx(2 / 3)
    with_tool = {r["model"]: r for r in again["tool_results"]}
    assert with_tool["m"]["accuracy"] == pytest.approx(1 / 3) and with_tool["m"]["tool_not_called"] == 1
    assert with_tool["adapter"]["not_run"] == tools.NO_TOOL_LOOP


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_llama_dir):
    require_llama_cpp()
    gguf = tmp_path_factory.mktemp("tiny-gguf") / "m.gguf"
    llama_cpp.LlamaCpp(LLAMA_CPP).convert(tiny_llama_dir, gguf, "f16")
    return gguf


@pytest.mark.slow
def test_the_real_llama_server_renders_the_tool_and_the_loop_ends_and_is_scored(tiny_gguf, tiny_llama_dir, tmp_path,
                                                                                 capsys):
    """Through llama-server --jinja --chat-template-file with a Hermes-style template (tests/
    templates/chatml_tools.jinja): llama.cpp finds tools in it (/props chat_template_caps,
    common/jinja/caps.cpp), renders the calculator's schema into the prompt (/apply-template,
    the prompt /v1/chat/completions decodes), and the loop over a random model ends and is scored."""
    lc = llama_cpp.LlamaCpp(LLAMA_CPP)
    with llama_cpp.LlamaServer(lc, tiny_gguf, slots=1, jinja=True, chat_template_file=TEMPLATE) as server:
        assert server.props()["chat_template_caps"]["supports_tools"]
        offered = server.apply_template(USER, tools.TOOLS)
        plain = server.apply_template(USER)
        assert json.dumps(TOOL_SCHEMA["function"]["parameters"]) in offered or '"calculate"' in offered
        assert "<tools>" in offered and "calculate" not in plain and plain.endswith("<|im_start|>assistant\n")
        # a conversation with a call and its result renders as the template writes them
        turn = [*USER, {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c0", "type": "function", "function": {"name": "calculate",
                                                          "arguments": json.dumps({"expression": "2+2"})}}]},
                {"role": "tool", "tool_call_id": "c0", "name": "calculate", "content": "4"}]
        rendered = server.apply_template(turn, tools.TOOLS)
        assert re.search(r'<tool_call>\n\{"name": "calculate", "arguments": \{"expression": ?"2\+2"\}\}\n</tool_call>',
                         rendered) and "<tool_response>\n4\n</tool_response>" in rendered

    items = [{"id": f"i{i}", "question": f"What is {i} + 1?", "answer_numeric": i + 1.0,
              "meta": {"family": "sum"}} for i in range(2)]
    runner = GGUFRunner(tiny_gguf, LLAMA_CPP, tiny_llama_dir, parallel=2, chat_template_file=TEMPLATE)
    res, rows = evaluate(runner, items, "set", True, 24, 1, tools=True)
    assert res["tools"] == "on" and res["n"] == 2 and len(rows) == 2
    assert sum(res["tool_loop_ends"].values()) == 2 and 0 <= res["tool_calls"] <= 2 * tools.MAX_CALLS
    assert res["tokens_per_second"] is not None and all(isinstance(r["output"], str) for r in rows)

    # the same template through `fintune chat`
    from fintune.cli import main

    assert main(["chat", "--gguf", str(tiny_gguf), "--chat_template_file", str(TEMPLATE), "--llama_cpp_path",
                 str(LLAMA_CPP), "--max_tokens", "8", "What is 2+2?"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.slow
def test_the_gguf_template_without_tools_is_found_by_llama_cpp_too(tiny_gguf):
    """The tiny GGUF carries SmolLM2's own ChatML, which renders no tools: llama.cpp's caps say
    the same as offers_tools, so the eval's 'template offers no tools' row is what it would find."""
    lc = llama_cpp.LlamaCpp(LLAMA_CPP)
    with llama_cpp.LlamaServer(lc, tiny_gguf, slots=1, jinja=True) as server:
        caps = server.props()["chat_template_caps"]
    assert not tools.offers_tools(tools.served_template(tiny_gguf, None))
    assert caps["supports_tools"] is False


@pytest.mark.parametrize("family", ["chatml", "deepseek-r1", "llama3"])
def test_every_shipped_tools_template_is_seen_to_offer_tools(family):
    """The check renders the template alone, with no tokenizer: R1's writes {{ bos_token }},
    which must be defined there too (an undefined one stopped the R1 rehearsal's eval)."""
    from fintune.templates.tools import tools_template

    assert tools.offers_tools(tools_template(family, ""))
