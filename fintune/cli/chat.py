"""`fintune chat`: ask a model with the calculator tool, as a user's client would, and
see each call and its result: one question, or a session (a line per question).

    fintune chat --gguf outputs/financial_model_q4_k_m.gguf "What is 10000 at 5% for 3 years?"
    fintune chat --ollama financial-model            # a session; an empty line or Ctrl-D ends it

A GGUF is served by llama-server (--jinja), started and stopped by the command, and
asked through /v1/chat/completions; an Ollama model through Ollama's /api/chat. Both
parse the model's tool calls with their own parsers: a call they do not recognise
stays text in the answer.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from fintune.errors import FintuneError, MissingError
from fintune.eval.tools import MAX_CALLS, TOOLS, tool_loop
from fintune.llama_cpp import LlamaCpp, LlamaServer
from fintune.prompts import INSTRUCTIONS, user_prompt

OLLAMA_URL = "http://127.0.0.1:11434"


class OllamaError(FintuneError, RuntimeError):
    pass


def fill_chat_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("question", nargs="?", help="one question; without it, a session reads questions from stdin")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--gguf", help="GGUF file, served by llama-server for this command")
    which.add_argument("--ollama", metavar="NAME", help="an Ollama model (ollama create NAME -f Modelfile)")
    p.add_argument("--ollama_url", default=OLLAMA_URL, help="where Ollama listens")
    p.add_argument("--llama_cpp_path", default="llama.cpp")
    p.add_argument("--chat_template_file", help="with --gguf: a Jinja template in place of the GGUF's own")
    p.add_argument("--no_tool", action="store_true", help="ask without offering the calculator")
    p.add_argument("--instruction", choices=INSTRUCTIONS.names(), default=None,
                   help="add the answer instruction the model was trained with (e.g. final_answer)")
    p.add_argument("--max_tokens", type=int, default=512, help="tokens per question, all turns together")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--ctx", type=int, default=4096, help="with --gguf: llama-server's context")


def ollama_chat(url: str, model: str, messages: list[dict], tools: list[dict] | None, max_tokens: int,
                temperature: float = 0.0) -> dict:
    """One turn through Ollama's /api/chat (docs/api.md, "Chat request (with tools)"), as an
    OpenAI chat completion: Ollama's calls carry arguments as an object and no id, and
    it takes them back in that shape."""
    body = {"model": model, "messages": [_to_ollama(m) for m in messages], "stream": False,
            "options": {"temperature": temperature, "num_predict": max_tokens}}
    if tools:
        body["tools"] = tools
    req = urllib.request.Request(url.rstrip("/") + "/api/chat", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            out = json.loads(r.read().decode("utf-8", errors="replace"))
    except urllib.error.HTTPError as e:
        raise OllamaError(f"Ollama /api/chat: HTTP {e.code}: {e.read().decode('utf-8', 'replace')[:300]}") from None
    except OSError as e:
        raise OllamaError(f"cannot reach Ollama at {url} ({e}); is `ollama serve` running?") from None
    msg = out.get("message") or {}
    calls = [{"id": f"call_{i}", "type": "function",
              "function": {"name": (c.get("function") or {}).get("name"),
                           "arguments": json.dumps((c.get("function") or {}).get("arguments") or {})}}
             for i, c in enumerate(msg.get("tool_calls") or [])]
    return {"choices": [{"message": {"role": "assistant", "content": msg.get("content") or "",
                                     **({"tool_calls": calls} if calls else {})}}],
            "usage": {"completion_tokens": out.get("eval_count") or 0}}


def _to_ollama(m: dict) -> dict:
    if m.get("tool_calls"):
        calls = [{"function": {"name": c["function"]["name"], "arguments": _arguments(c["function"]["arguments"])}}
                 for c in m["tool_calls"]]
        return {"role": "assistant", "content": m.get("content") or "", "tool_calls": calls}
    if m["role"] == "tool":
        return {"role": "tool", "content": m["content"], "tool_name": m.get("name")}
    return m


def _arguments(text) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def chat_command(args: argparse.Namespace, out=None, lines=None) -> int:
    """`out`: where the conversation is printed (stdout); `lines`: questions of a session (stdin)."""
    out = out or sys.stdout
    if args.gguf:
        if not Path(args.gguf).is_file():
            raise MissingError(f"--gguf {args.gguf}: no such file")
        server = LlamaServer(LlamaCpp(Path(args.llama_cpp_path)), Path(args.gguf), slots=1, ctx_per_slot=args.ctx,
                             jinja=True, chat_template_file=args.chat_template_file)
        with server:
            tools = None if args.no_tool else _served_tools(server, out)

            def ask(messages, budget):
                return server.chat(messages, tools, budget, temperature=args.temperature)

            return converse(args, ask, out, lines)

    tools = None if args.no_tool else TOOLS

    def ask(messages, budget):
        return ollama_chat(args.ollama_url, args.ollama, messages, tools, budget, args.temperature)

    return converse(args, ask, out, lines)


def _served_tools(server: LlamaServer, out) -> list[dict] | None:
    """The tools, unless llama.cpp finds none in the template (it would then describe them its own way)."""
    if (server.props().get("chat_template_caps") or {}).get("supports_tools", True):
        return TOOLS
    print("(the chat template renders no tools: asking without the calculator)", file=out)
    return None


def converse(args: argparse.Namespace, ask, out, lines=None) -> int:
    """One question, or one a line until an empty line or the end of input; the history is kept."""
    messages: list[dict] = []
    questions = [args.question] if args.question else _session(lines, out)
    for question in questions:
        content = user_prompt(question, None, args.instruction) if args.instruction else question
        messages.append({"role": "user", "content": content})
        reply = tool_loop(ask, messages, args.max_tokens,
                          on_call=lambda c: print(f"  [{c['name']}] {_expression(c['arguments'])} -> {c['result']}",
                                                  file=out, flush=True))
        print(reply.text or "(no answer)", file=out, flush=True)
        if reply.stop:
            print(f"(stopped: {reply.stop}{f'; at most {MAX_CALLS} tool calls' * (reply.stop == 'call cap')})",
                  file=out, flush=True)
    return 0


def _session(lines, out):
    lines = iter(lines if lines is not None else sys.stdin)
    while True:
        print("> ", end="", file=out, flush=True)
        line = next(lines, None)
        if line is None or not line.strip():
            return
        yield line.strip()


def _expression(arguments) -> str:
    args = _arguments(arguments)
    return str(args["expression"]) if "expression" in args else str(arguments)
