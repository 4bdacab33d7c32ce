"""The llama.cpp tree: find its tools before long work, and run them."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fintune import machine
from fintune.errors import FintuneError

# the installed package ships the build script (fintune/scripts/), so the hint works outside a checkout
SETUP_HINT = ("build it with `fintune setup-llama-cpp {root}`, or point --llama_cpp_path at a llama.cpp "
              "checkout with its tools built")


# chunks of the eval text llama-perplexity scores (of 128 tokens each)
PPL_CHUNKS = 16


class LlamaCppError(FintuneError, RuntimeError):
    pass


@dataclass
class LlamaCpp:
    root: Path

    @property
    def convert_script(self) -> Path:
        return self.root / "convert_hf_to_gguf.py"

    def binary(self, name: str) -> Path:
        for cand in (self.root / "build" / "bin" / name, self.root / name):
            if cand.is_file() and os.access(cand, os.X_OK):
                return cand
        raise LlamaCppError(f"{name} not found under {self.root}/build/bin; "
                            + SETUP_HINT.format(root=self.root))

    def preflight(self) -> None:
        """Fail fast, naming what is missing, before any long step runs."""
        if not self.root.is_dir():
            raise LlamaCppError(f"llama.cpp not found at {self.root}; " + SETUP_HINT.format(root=self.root))
        for p in (self.convert_script, self.root / "gguf-py" / "gguf"):
            if not p.exists():
                raise LlamaCppError(f"{p} missing: {self.root} is not a llama.cpp source tree; "
                                    + SETUP_HINT.format(root=self.root))
        for name in ("llama-quantize", "llama-completion"):
            self.binary(name)

    def version(self) -> str:
        """Source release and the instruction sets it was built for: builds for
        different sets round differently, so greedy replies can differ."""
        src = self.root / ".fintune-source"
        version = src.read_text().strip() if src.is_file() else "unknown"
        stamp = self.root / ".fintune-build"
        isa = re.search(r"isa=(.*)$", stamp.read_text().strip()) if stamp.is_file() else None
        return f"{version} ({isa.group(1)})" if isa else version

    @property
    def cuda_build(self) -> bool:
        """Whether the tools were built with CUDA: the setup script's stamp says so
        (cuda=ON), or CMake's cache does for a tree built by hand."""
        stamp = self.root / ".fintune-build"
        if stamp.is_file():
            return " cuda=ON" in stamp.read_text()
        cache = self.root / "build" / "CMakeCache.txt"
        return cache.is_file() and "GGML_CUDA:BOOL=ON" in cache.read_text(errors="replace")

    def offload(self, fits: bool = True) -> list[str]:
        """-ngl for a CUDA build: every layer where the plan says the model fits the GPU
        (the eval leaves out one that does not), else `auto`, which with llama.cpp's
        default --fit on offloads what fits (a smoke test, a perplexity); nothing for a
        CPU build. common/arg.cpp accepts a number, 'auto' or 'all' for -ngl."""
        if not self.cuda_build:
            return []
        return ["-ngl", "all" if fits else "auto"]

    def quant_types(self) -> list[str]:
        """Quantization type names as llama-quantize itself lists them."""
        out = subprocess.run([str(self.binary("llama-quantize")), "--help"], capture_output=True, text=True,
                             preexec_fn=machine.die_with_parent())
        text = out.stdout + out.stderr
        return re.findall(r"^\s+\d+\s+or\s+([A-Z0-9_]+)\s*:", text, re.M)

    def convert(self, model_dir: Path, outfile: Path, outtype: str = "f16") -> None:
        env = dict(os.environ)
        # the converter must use the gguf-py beside it, not an older pip copy
        env["PYTHONPATH"] = os.pathsep.join([str(self.root / "gguf-py"), env.get("PYTHONPATH", "")])
        _run([sys.executable, str(self.convert_script), str(model_dir), "--outfile", str(outfile),
              "--outtype", outtype], env=env, what="convert_hf_to_gguf.py")

    def quantize(self, src: Path, dst: Path, qtype: str, threads: int | None = None) -> None:
        cmd = [str(self.binary("llama-quantize")), str(src), str(dst), qtype]
        if threads:
            cmd.append(str(threads))
        _run(cmd, what="llama-quantize")

    def generate(self, gguf: Path, prompt: str, n_tokens: int, seed: int = 0, ctx: int = 2048) -> str:
        """Greedy completion of a raw (already templated) prompt; a smoke test, so on a
        GPU that the model may not fit whole (an F16 export), what fits is offloaded."""
        return self.complete(gguf, prompt, n_tokens, seed=seed, ctx=ctx, fits=False).text

    def complete(self, gguf: Path, prompt: str, n_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, ctx: int = 2048, flags: list[str] = (),
                 fits: bool = True) -> "Completion":
        """`flags`: further sampling flags (e.g. --repeat-penalty 1.1); `fits`: the plan
        says the whole model fits the GPU (every layer is offloaded; else what fits)."""
        cmd = [str(self.binary("llama-completion")), "-m", str(gguf), "-p", prompt, "-n", str(n_tokens),
               "-no-cnv", "--temp", str(temperature), "--top-p", str(top_p), "-s", str(seed),
               "--no-display-prompt", "-c", str(ctx), "--no-warmup", *self.offload(fits), *flags]
        proc = _run_proc(cmd, what="llama-completion")
        m = re.search(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", proc.stderr)
        # llama-completion marks a stop on an end-of-generation token this way
        text = proc.stdout.replace("[end of text]", "").strip()
        return Completion(text, int(m.group(2)) if m else 0, float(m.group(1)) / 1000 if m else 0.0)

    def perplexity(self, gguf: Path, text_file: Path, ctx: int = 128, chunks: int = PPL_CHUNKS) -> float:
        # a batch of several ctx-long chunks: the same estimate, 2.8x faster than one chunk a batch (measured);
        # 16 chunks score 2,048 tokens in 5 s a model on 2 cores, enough to rank quant types of one model:
        # each scores the same text, so their difference is paired (F16 2.8213 vs Q4_K_M 2.8216 at 16 chunks,
        # 3.4804 vs 3.4828 at 32, same order)
        out = _run_proc([str(self.binary("llama-perplexity")), "-m", str(gguf), "-f", str(text_file),
                         "-c", str(ctx), "-b", str(max(ctx, 512)), "--chunks", str(chunks), *self.offload(False)],
                        what="llama-perplexity")
        m = re.search(r"Final estimate: PPL = ([\d.]+)", out.stdout + out.stderr)
        if not m:
            raise LlamaCppError(f"llama-perplexity printed no final estimate for {gguf}")
        return float(m.group(1))


class LlamaServer:
    """llama-server with `slots` parallel sequences, for many completions of one
    model: continuous batching decodes the slots together, which is what a CPU
    with few cores gains from (measured in the eval closing note)."""

    def __init__(self, lc: LlamaCpp, gguf: Path, slots: int = 4, ctx_per_slot: int = 1024, port: int = 0,
                 threads: int | None = None, jinja: bool = False, chat_template_file: Path | None = None):
        """`jinja`: render chats with the model's Jinja template and parse tool calls
        from its replies into OpenAI `tool_calls` (/v1/chat/completions with `tools`);
        `chat_template_file`: a template in place of the GGUF's own."""
        import socket

        if not port:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.slots = slots
        self.cmd = [str(lc.binary("llama-server")), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                    "-np", str(slots), "-c", str(slots * ctx_per_slot), "-cb", "--no-warmup", *lc.offload()]
        if threads:
            self.cmd += ["-t", str(threads), "-tb", str(threads)]
        if jinja or chat_template_file:
            self.cmd.append("--jinja")
        if chat_template_file:
            self.cmd += ["--chat-template-file", str(chat_template_file)]
        self.proc = None
        self.log = None

    def __enter__(self):
        import tempfile
        import time
        import urllib.request

        # the server logs every request: into a file, since a pipe nobody reads fills
        # (64 KiB, about 120 requests) and then blocks the server mid-run
        self.log = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        # dies with this process even when it is SIGKILLed (machine.die_with_parent): a
        # server left behind would hold the GPU and its port into the next step
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self.log,
                                     preexec_fn=machine.die_with_parent())
        _LIVE.add(self.proc)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise LlamaCppError(f"llama-server exited ({self.proc.returncode}): "
                                    + "\n".join(self.log.read().splitlines()[-10:]))
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.__exit__()
        raise LlamaCppError("llama-server did not become ready in 120 s")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        _LIVE.discard(self.proc)
        if self.log:
            self.log.close()

    def complete(self, prompt: str, n_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, stop=None, extra: dict | None = None) -> "Completion":
        """One completion. `stop(text) -> (text, reason | None)`: the reply streams in
        and the request is dropped as soon as it returns a reason, which frees the
        slot for the next prompt (llama-server cancels a task whose client left). `extra`:
        further /completion fields (e.g. repeat_penalty)."""
        import json
        import time
        import urllib.request

        body = json.dumps({"prompt": prompt, "n_predict": n_tokens, "temperature": temperature, "top_p": top_p,
                           "seed": seed, "cache_prompt": False, "stream": stop is not None, **(extra or {})}).encode()
        req = urllib.request.Request(self.url + "/completion", data=body, headers={"Content-Type": "application/json"})
        if stop is None:
            with urllib.request.urlopen(req, timeout=600) as r:
                out = json.loads(r.read().decode("utf-8", errors="replace"))
            t = out.get("timings") or {}
            return Completion(out.get("content", "").strip(), int(t.get("predicted_n", out.get("tokens_predicted", 0))),
                              float(t.get("predicted_ms", 0.0)) / 1000)
        text, n, reason, start = "", 0, None, time.time()
        with urllib.request.urlopen(req, timeout=600) as r:
            for raw in r:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: "):])
                if event.get("content"):
                    text += event["content"]
                    n += 1
                if event.get("stop"):
                    break
                text, reason = stop(text)
                if reason:
                    break
        return Completion(text.strip(), n, time.time() - start, reason)

    def post(self, path: str, body: dict, timeout: float = 600) -> dict:
        """POST JSON to an endpoint; an HTTP error becomes LlamaCppError with the server's message."""
        import json
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read().decode("utf-8", errors="replace"))
        except urllib.error.HTTPError as e:
            raise LlamaCppError(f"llama-server {path}: HTTP {e.code}: "
                                f"{e.read().decode('utf-8', errors='replace')[:500]}") from None

    def chat(self, messages: list[dict], tools: list[dict] | None, max_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, extra: dict | None = None) -> dict:
        """One turn through the OpenAI-compatible /v1/chat/completions, as users' clients
        call it: the response's `choices[0].message` has `content` and, where llama.cpp's
        chat parser found calls in the reply, `tool_calls`. Needs `jinja`."""
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
                "seed": seed, "cache_prompt": False, **(extra or {})}
        if tools:
            body["tools"] = tools
        return self.post("/v1/chat/completions", body)

    def apply_template(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """The prompt llama-server renders for a chat (its /apply-template endpoint)."""
        return self.post("/apply-template", {"messages": messages, **({"tools": tools} if tools else {})})["prompt"]

    def props(self) -> dict:
        """/props: among others `chat_template_caps`, what llama.cpp found the template supports."""
        import json
        import urllib.request

        with urllib.request.urlopen(self.url + "/props", timeout=30) as r:
            return json.loads(r.read().decode("utf-8", errors="replace"))


@dataclass
class Completion:
    text: str
    n_tokens: int      # generated tokens, as llama.cpp counts them
    eval_seconds: float
    stop_reason: str | None = None  # why the stop rule ended it, if it did


def _run(cmd: list[str], what: str, env: dict | None = None) -> str:
    return _run_proc(cmd, what, env).stdout


def _run_proc(cmd: list[str], what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # errors="replace": a generation cut off inside a multi-byte character is
    # still an answer to score, not a crash
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                             env=env, preexec_fn=machine.die_with_parent())
    _LIVE.add(child)
    try:
        out, err = child.communicate()
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        _LIVE.discard(child)
    proc = subprocess.CompletedProcess(cmd, child.returncode, out, err)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise LlamaCppError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


# llama.cpp processes of this one still running: a stop on Ctrl-C ends them (terminate_children)
_LIVE: set[subprocess.Popen] = set()


def terminate_children() -> None:
    """SIGKILL to every llama.cpp tool this process started that still runs: the
    replies they were decoding end at once (their callers see a failed tool or a
    closed connection). Not SIGTERM: on it llama-server stops decoding but keeps its
    streaming connections open, and their readers wait (seen: 120 s, then the test's
    limit). Safe from another thread while they start and end."""
    while True:
        try:
            procs = list(_LIVE)
            break
        except RuntimeError:  # the set changed size while copied
            continue
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
