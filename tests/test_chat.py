"""`fintune chat` (fintune/cli/chat.py) against Ollama's /api/chat, played by a stand-in
HTTP server in the request and response shapes of Ollama's docs/api.md ("Chat request
(with tools)": stream false, `tools`, a reply's `message.tool_calls` of
{function: {name, arguments as an object}} without ids, `eval_count`). Ollama is not
installed here; the GGUF path runs against the real llama-server in test_eval_tools.py."""
from __future__ import annotations

import json

from llama_server_standin import StandIn

from fintune.calculator import TOOL_SCHEMA, calculate
from fintune.cli import main


def ollama_reply(content: str = "", calls: list[dict] | None = None) -> dict:
    msg = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = [{"function": c} for c in calls]
    return {"model": "m", "created_at": "2026-01-01T00:00:00Z", "message": msg, "done_reason": "stop",
            "done": True, "eval_count": 12}


def compounding(body):
    """Calls the calculator once per question, then answers with its result."""
    tool = [m for m in body["messages"] if m["role"] == "tool"]
    asked = sum(m["role"] == "user" for m in body["messages"])
    if len(tool) < asked:
        return 200, ollama_reply("Formula: FV = P(1+r)^n",
                                 [{"name": "calculate", "arguments": {"expression": "10000*(1+0.05)^3"}}])
    return 200, ollama_reply(f"Final answer: {tool[-1]['content']}")


def test_one_question_runs_the_calculator_loop_and_prints_each_call(capsys):
    server = StandIn(compounding)
    try:
        rc = main(["chat", "--ollama", "m", "--ollama_url", server.url, "What is 10000 at 5% for 3 years?"])
    finally:
        server.close()
    printed = capsys.readouterr().out
    result = calculate("10000*(1+0.05)^3")
    assert rc == 0 and f"[calculate] 10000*(1+0.05)^3 -> {result}" in printed
    assert f"Final answer: {result}" in printed
    first, second = server.requests
    assert first["tools"] == [TOOL_SCHEMA] and first["stream"] is False and first["model"] == "m"
    # the call goes back as Ollama sent it: arguments an object, then the tool's result
    assistant, tool = second["messages"][1:]
    assert assistant["tool_calls"] == [{"function": {"name": "calculate",
                                                     "arguments": {"expression": "10000*(1+0.05)^3"}}}]
    assert tool == {"role": "tool", "content": result, "tool_name": "calculate"}
    # one budget for the question: the second turn gets what the first left
    assert (first["options"]["num_predict"], second["options"]["num_predict"]) == (512, 500)


def test_a_session_keeps_the_conversation(monkeypatch, capsys):
    import io

    server = StandIn(lambda body: (200, ollama_reply(f"Final answer: {len(body['messages'])}")))
    monkeypatch.setattr("sys.stdin", io.StringIO("first question\nsecond question\n\n"))
    try:
        rc = main(["chat", "--ollama", "m", "--ollama_url", server.url, "--no_tool"])
    finally:
        server.close()
    assert rc == 0 and all("tools" not in body for body in server.requests)
    last = server.requests[-1]["messages"]
    assert [m["content"] for m in last if m["role"] == "user"] == ["first question", "second question"]
    # two questions, then the empty line that ends it
    assert capsys.readouterr().out == "> Final answer: 1\n> Final answer: 3\n> "


def test_an_unreachable_ollama_is_one_line_and_exit_2(capsys):
    server = StandIn(compounding)
    url = server.url
    server.close()
    assert main(["chat", "--ollama", "m", "--ollama_url", url, "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach Ollama" in err[0]


def test_a_missing_gguf_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["chat", "--gguf", str(tmp_path / "none.gguf"), "hi"]) == 2
    assert "no such file" in capsys.readouterr().err
