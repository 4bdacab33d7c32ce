"""A stand-in for llama-server's chat endpoint: a real HTTP server on a free port that
answers /v1/chat/completions from a script, in the response shape llama-server writes
(tools/server/server-task.cpp server_task_result_cmpl_final::to_json_oaicompat_chat and
common/chat.cpp common_chat_msg::to_json_oaicompat: choices[0].message with content
and tool_calls of {id, type: function, function: {name, arguments as JSON text}},
finish_reason "tool_calls", usage.completion_tokens), and records every request.

For the loop's own logic only (cap, error texts, counts, cache): whether llama.cpp
parses a template's calls is tested against the real server (test_eval_tools.py)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fintune.llama_cpp import LlamaServer


def call(expression: str, i: int = 0) -> dict:
    return {"id": f"call_{i}", "type": "function",
            "function": {"name": "calculate", "arguments": json.dumps({"expression": expression})}}


def reply(content: str = "", calls: list[dict] | None = None, tokens: int = 10) -> dict:
    msg = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = calls
    return {"choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"completion_tokens": tokens, "prompt_tokens": 50}}


class StandIn:
    """`script(request body) -> (status, response body)`; `caps`: /props chat_template_caps."""

    def __init__(self, script, caps: dict | None = None):
        self.script, self.caps, self.requests = script, caps or {"supports_tools": True}, []
        self.lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/health":
                    self._send(200, {"status": "ok"})
                elif self.path == "/props":
                    self._send(200, {"chat_template_caps": standin.caps})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with standin.lock:
                    standin.requests.append(body)
                self._send(*standin.script(body))

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()

    def server_class(self):
        """A LlamaServer whose start and stop are this stand-in's: its chat, props and post
        are LlamaServer's own client code. Records the arguments it was made with."""
        standin = self

        class Served(LlamaServer):
            made: list = []

            def __init__(self, lc, gguf, **kw):
                Served.made.append(kw)
                self.url = standin.url

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        return Served
