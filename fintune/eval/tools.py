"""The eval with the calculator: each question asked through llama-server's
OpenAI-compatible /v1/chat/completions with `tools=[calculate]`, as users' clients
ask it. A reply with `tool_calls` has each call run by the calculator, its result
appended as a `tool` message, and the model is asked again, until it answers
without a call.

What llama.cpp's chat parser does not recognise as a call is no call: the reply
text is scored as it is, so a model whose calls only this project could parse gains
nothing here. A model that keeps calling is stopped after MAX_CALLS calls and scores
no answer. The reply's token budget (eval_max_new_tokens) covers every turn of an
item together, as it covers the one reply without the tool.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from fintune import llama_cpp
from fintune.calculator import TOOL_SCHEMA, run_tool_call
from fintune.eval.report import score_set
from fintune.gguf import read_header
from fintune.prompts import user_prompt
from fintune.scoring import stop

log = logging.getLogger(__name__)

MAX_CALLS = 8
TOOLS = [TOOL_SCHEMA]
# in the reply cache's key of a reply generated with the tool (absent: without it)
CACHE_SETTING = {"tools": [TOOL_SCHEMA], "max_calls": MAX_CALLS, "endpoint": "/v1/chat/completions"}
NO_TOOL_LOOP = "not run: Hugging Face models have no tool loop (it runs through llama-server)"
NO_TOOLS = "template offers no tools"
NO_TOOLS_LLAMA_CPP = "llama.cpp finds no tools in the template (chat_template_caps)"


@dataclass
class ToolReply:
    text: str                 # what is scored: the model's own words over all its turns
    calls: int = 0            # tool calls run
    errors: int = 0           # of them, those whose result was an error text
    stop: str | None = None   # "call cap", "token budget", "server error: ..." or None (it answered)
    n_tokens: int = 0
    seconds: float = 0.0
    trace: list = field(default_factory=list)  # {"name", "arguments", "result"} per call
    cut: str | None = None    # why the stop rule ended the last turn's text, if it did


def tool_loop(chat: Callable[[list[dict], int], dict], messages: list[dict], max_new_tokens: int,
              max_calls: int = MAX_CALLS, on_call: Callable[[dict], None] | None = None) -> ToolReply:
    """Ask, run the calls the reply makes, ask again. `chat(messages, max_tokens)` returns an
    OpenAI chat completion; a LlamaCppError from it (the server could not parse the reply
    into its format) ends the loop with what was said so far. `messages` grows by the
    turns, the last answer included (a chat goes on from there); `on_call` sees each call's
    {"name", "arguments", "result"} as it is run."""
    said, reply, start = [], ToolReply(""), time.time()
    while True:
        budget = max_new_tokens - reply.n_tokens
        if budget <= 0:
            reply.stop = "token budget"
            break
        try:
            out = chat(messages, budget)
        except llama_cpp.LlamaCppError as e:
            reply.stop = f"server error: {str(e)[:200]}"
            break
        msg = out["choices"][0]["message"]
        reply.n_tokens += int((out.get("usage") or {}).get("completion_tokens") or 0)
        words, reply.cut = _words(msg)
        said.append(words)
        calls = msg.get("tool_calls") or []
        if not calls:
            messages.append({"role": "assistant", "content": msg.get("content") or ""})
            break
        if reply.calls + len(calls) > max_calls:
            reply.stop = "call cap"
            break
        messages.append({"role": "assistant", "content": msg.get("content") or "", "tool_calls": calls})
        for call in calls:
            fn = call.get("function") or {}
            result = run_tool_call(fn.get("name"), fn.get("arguments"))
            reply.calls += 1
            reply.errors += result.startswith("error:")
            reply.trace.append({"name": fn.get("name"), "arguments": fn.get("arguments"), "result": result})
            if on_call:
                on_call(reply.trace[-1])
            messages.append({"role": "tool", "tool_call_id": call.get("id") or "", "name": fn.get("name"),
                             "content": result})
    reply.text = "" if reply.stop == "call cap" else "\n".join(s for s in said if s)
    reply.seconds = time.time() - start
    return reply


def _words(msg: dict) -> tuple[str, str | None]:
    """(a turn's text under the stop rule, why the rule cut it): reasoning that llama-server
    split off is put back in its <think> block, so it is scored as the reply without the tool is."""
    text = msg.get("content") or ""
    if msg.get("reasoning_content"):
        text = f"<think>\n{msg['reasoning_content']}\n</think>\n{text}"
    text, why = stop.cut(text)
    return text.strip(), why


def offers_tools(chat_template: str) -> bool:
    """Whether the template renders a `tools` list at all: with none it renders the same
    prompt, and llama.cpp would describe the tools its own way (common/jinja/caps.cpp asks
    the same: whether the template reads tools[0].function.name)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    chat = [[{"role": "user", "content": "What is 2+2?"}]]
    # templates that write the BOS/EOS (R1's) need them defined; both renders get the same
    marks = {"bos_token": "<bos>", "eos_token": "<eos>"}
    with_tools, _ = render_jinja_template(chat, tools=TOOLS, chat_template=chat_template, add_generation_prompt=True,
                                          **marks)
    without, _ = render_jinja_template(chat, chat_template=chat_template, add_generation_prompt=True, **marks)
    return with_tools[0] != without[0]


def served_template(gguf: Path, chat_template_file: Path | None) -> str:
    """The template llama-server renders chats with: the file given, else the GGUF's own."""
    if chat_template_file:
        return Path(chat_template_file).read_text(encoding="utf-8")
    return read_header(gguf).get("tokenizer.chat_template") or ""


def generate(runner, chats: list[list[dict]], max_new_tokens: int, expected: list[int] | None = None):
    """ToolReply per chat from a GGUFRunner, cached like its replies without the tool; None
    where llama.cpp finds no tools in the template."""
    seeds = [runner.sampling.seed + i + 1 for i in range(len(chats))]
    keys = [runner.cache.key(json.dumps(c, sort_keys=True), seed, max_new_tokens, CACHE_SETTING)
            for c, seed in zip(chats, seeds)] if runner.cache else [None] * len(chats)
    out: list = [None] * len(chats)
    for i, key in enumerate(keys):
        if key and (rec := runner.cache.get(key)):
            out[i] = ToolReply(**rec["tool_reply"])
            runner.cached += 1
    todo = [i for i, r in enumerate(out) if r is None]
    if expected:
        todo.sort(key=lambda i: -expected[i])
    if todo:
        replies = _run(runner, [chats[i] for i in todo], [seeds[i] for i in todo], max_new_tokens)
        if replies is None:
            return None
        for i, r in zip(todo, replies):
            out[i] = r
            if keys[i]:
                runner.cache.put(keys[i], r.text, r.n_tokens, r.seconds, r.stop, tool_reply=asdict(r))
    runner.stops.update(r.cut for r in out if r.cut)
    return out


def _run(runner, chats: list[list[dict]], seeds: list[int], n: int) -> list[ToolReply] | None:
    from concurrent.futures import ThreadPoolExecutor

    s, start = runner.sampling, time.time()
    # the rendered tools, tool results and turn markers add to the question's own length
    ctx = runner.context_size([json.dumps(TOOLS) + c[-1]["content"] for c in chats], n + 256)
    with llama_cpp.LlamaServer(runner.lc, runner.gguf, slots=max(1, runner.parallel), ctx_per_slot=ctx,
                               threads=runner.threads, jinja=True,
                               chat_template_file=runner.chat_template_file) as server:
        if not (server.props().get("chat_template_caps") or {}).get("supports_tools", True):
            return None

        def one(i):
            def chat(messages, budget):
                return server.chat(messages, TOOLS, budget, temperature=s.temperature, top_p=s.top_p,
                                   seed=seeds[i], extra=s.extra())
            return tool_loop(chat, list(chats[i]), n)

        with ThreadPoolExecutor(max_workers=max(1, runner.parallel)) as pool:
            replies = list(pool.map(one, range(len(chats))))
    runner.tokens += sum(r.n_tokens for r in replies)
    runner.seconds += time.time() - start
    return replies


def evaluate_with_tools(runner, items: list[dict], eval_set: str, with_context: bool, max_new_tokens: int,
                        instruction: str, prompts: list[str]) -> tuple[dict, list[dict]]:
    """(result, prediction rows) with the tool offered; a result with `not_run` and no rows
    where the runner has no tool loop or its template offers no tools."""
    base = {"model": runner.name, "eval_set": eval_set, "tools": "on",
            "n": sum(it.get("answer_numeric") is not None for it in items)}
    if not hasattr(runner, "chat_template_file"):
        return {**base, "not_run": NO_TOOL_LOOP}, []
    if not offers_tools(served_template(runner.gguf, runner.chat_template_file)):
        return {**base, "not_run": NO_TOOLS}, []
    chats = [[{"role": "user", "content": user_prompt(it["question"], it.get("context") if with_context else None,
                                                      instruction)}] for it in items]
    lengths = [len((it.get("meta") or {}).get("solution") or "") for it in items]
    start = time.time()
    replies = generate(runner, chats, max_new_tokens, lengths if all(lengths) else None)
    if replies is None:
        return {**base, "not_run": NO_TOOLS_LLAMA_CPP}, []
    result, rows = score_set(runner.name, eval_set, items, [r.text for r in replies], time.time() - start,
                             with_context, prompts)
    by_id = {it["id"]: r for it, r in zip(items, replies)}
    for row in rows:
        r = by_id[row["id"]]
        row.update(tools="on", tool_calls=r.trace, tool_stop=r.stop)
    result.update(tools="on", **tool_stats([by_id[row["id"]] for row in rows]))
    return result, rows


def tool_stats(replies: list[ToolReply]) -> dict:
    n = len(replies)
    stops = Counter((r.stop or "answered").split(":")[0] for r in replies)
    return {"tool_calls_per_item": sum(r.calls for r in replies) / n if n else 0.0,
            "tool_calls": sum(r.calls for r in replies), "tool_errors": sum(r.errors for r in replies),
            "tool_not_called": sum(r.calls == 0 for r in replies), "tool_loop_ends": dict(stops),
            "tool_max_calls": MAX_CALLS}
