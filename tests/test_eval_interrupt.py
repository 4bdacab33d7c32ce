"""Ctrl-C during the eval: it stops within seconds, ends its llama.cpp processes,
keeps every finished reply in the reply cache, exits 130 and says once how to
continue; the next run takes the kept replies from the cache."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import LLAMA_CPP, ROOT, as_flags, require_llama_cpp
from fintune.errors import TrainingInterrupted

HINT = "continue with the same command"


def _items(n: int) -> list[dict]:
    return [{"id": f"i{i}", "question": f"A bond pays {i + 1} coupons of $50. What is the total paid?",
             "answer_numeric": 50.0 * (i + 1), "meta": {"family": f"f{i % 3}"}} for i in range(n)]


def test_a_signal_stops_the_gguf_runner_between_replies_and_keeps_the_finished_ones(tmp_path, smollm2_dir,
                                                                                   monkeypatch):
    from test_eval_speed import stand_in_gguf

    from fintune.eval import interrupt
    from fintune.eval import runner as rn
    from fintune.llama_cpp import Completion, LlamaCpp

    def complete(self, gguf, prompt, n, temperature=0.0, top_p=1.0, seed=0, ctx=2048, flags=()):
        time.sleep(0.25)  # one llama-completion's reply
        return Completion(f"Final answer: {seed}", 5, 0.25)

    monkeypatch.setattr(LlamaCpp, "complete", complete)
    monkeypatch.setattr(LlamaCpp, "version", lambda self: "stand-in")
    stand_in_gguf(tmp_path / "m.gguf", "stand-in weights")

    def runner():
        return rn.GGUFRunner(tmp_path / "m.gguf", tmp_path, smollm2_dir, "m", parallel=1, cache_dir=tmp_path / "c")

    prompts = [f"question {i}" for i in range(40)]
    first = runner()
    # what SIGINT did before (SIG_IGN where pytest itself runs in the background)
    before = signal.getsignal(signal.SIGINT)
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    start = time.time()
    with pytest.raises(TrainingInterrupted, match=f"eval stopped by SIGINT; {HINT}"):
        with interrupt.stop_on_signal(HINT):
            first.generate(prompts, 16)
    assert time.time() - start < 2.0  # not the 10 s the 40 replies take
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    kept = len((tmp_path / "c").glob("*.jsonl").__next__().read_text().splitlines())
    assert 2 <= kept < 10
    again = runner()
    assert again.generate(prompts[:kept], 16) == [f"Final answer: {i + 1}" for i in range(kept)]
    assert again.cached == kept


def test_a_signal_stops_hf_generation_within_the_batch(tiny_llama_dir):
    """The stopping criterion ends every sequence of the batch at the next decoding step,
    well before max_new_tokens; the cut batch is not returned as replies."""
    from fintune.eval import interrupt
    from fintune.eval import runner as rn

    runner = rn.HFRunner(str(tiny_llama_dir), name="tiny", device=("cpu", "float32"))
    prompts = [f"<|im_start|>user\nquestion {i}<|im_end|>\n<|im_start|>assistant\n" for i in range(8)]
    sent = []
    timer = threading.Timer(1.0, lambda: (sent.append(time.time()), os.kill(os.getpid(), signal.SIGINT)))
    timer.start()
    with pytest.raises(TrainingInterrupted, match="eval stopped by SIGINT"):
        with interrupt.stop_on_signal(HINT):
            runner.generate(prompts, max_new_tokens=4000, batch_size=4)
    assert time.time() - sent[0] < 1.5  # 4 x 4000 tokens take this model far longer


STANDIN_SERVER = """#!{python}
# llama-server as the eval uses it: /health, and /completion streaming one token every 0.1 s
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{{"status": "ok"}}')

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        words = [f"step{{i}} " for i in range(12)] + ["\\nFinal answer: 50\\n"]
        for word in words[:body["n_predict"]]:
            time.sleep(0.1)
            self.wfile.write(("data: " + json.dumps({{"content": word, "stop": False}}) + "\\n\\n").encode())
            self.wfile.flush()
        self.wfile.write(("data: " + json.dumps({{"content": "", "stop": True}}) + "\\n\\n").encode())

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Handler).serve_forever()
"""


STANDIN_QUANTIZE = """#!/bin/sh
# llama-quantize --help as the preflight reads it (fintune/llama_cpp.py quant_types)
echo '   7  or  Q8_0    :  7.96G'
echo '  15  or  Q4_K_M  :  4.58G'
"""


def _stand_in_llama_cpp(root: Path) -> Path:
    """A llama.cpp tree whose llama-server is STANDIN_SERVER; the preflight before the first
    stage finds its converter, gguf-py and a llama-quantize that lists its types."""
    (root / "gguf-py" / "gguf").mkdir(parents=True)
    (root / "convert_hf_to_gguf.py").write_text("")
    bin_dir = root / "build" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("llama-server", STANDIN_SERVER.format(python=sys.executable)),
                       ("llama-quantize", STANDIN_QUANTIZE), ("llama-completion", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return root


def _eval_only_run(tmp_path: Path, smollm2_dir: Path, gguf_file: Path | None = None,
                   llama_cpp: Path = LLAMA_CPP) -> list[str]:
    """`fintune run` with every stage but eval skipped: the Q8_0 export is `gguf_file`
    (default: the embedded SmolLM2's GGUF), its Hugging Face checkpoint the base."""
    from fintune.models import smollm2_gguf_path

    lora, data = tmp_path / "lora", tmp_path / "data"
    data.mkdir()
    shutil.copytree(smollm2_dir, lora, ignore=shutil.ignore_patterns("*.safetensors"))  # the tokenizer
    (lora / "fintune_adapter.json").write_text(json.dumps({"base_model_path": str(smollm2_dir)}))
    (data / "heldout.jsonl").write_text("".join(json.dumps(it) + "\n" for it in _items(24)))
    gguf = tmp_path / "m_q8_0.gguf"
    gguf.symlink_to(gguf_file or smollm2_gguf_path())
    over = {"base_model": str(smollm2_dir), "lora_output_dir": str(lora), "data_dir": str(data),
            "eval_dir": str(tmp_path / "eval"), "eval_models": "Q8_0", "eval_files": "", "eval_limit": 24,
            "eval_max_new_tokens": 200, "eval_parallel": 2, "perplexity": False,
            "eval_tools": "off",  # the stop is the subject; one pass over the items is enough
            "llama_cpp_path": str(llama_cpp), "gguf_q8_path": str(gguf)}
    return [sys.executable, "train_financial_model.py", "--config", "configs/cpu-smollm2.yaml",
            "--manifest", str(tmp_path / "m.json"), "--skip_dataset_prep", "--skip_training", "--skip_merge",
            "--skip_quantization"] + as_flags(over)


def _cached(cache: Path) -> int:
    return sum(len(f.read_text().splitlines()) for f in cache.glob("eval-replies/*.jsonl"))


def _interrupt_and_continue(tmp_path: Path, cmd: list[str], limit: float = 5) -> None:
    """Run `cmd`, SIGINT once two replies are cached, check the stop; then run it again."""
    env = {**os.environ, "FINTUNE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while _cached(tmp_path / "cache") < 2:  # the server is decoding
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the orchestrator
    start = time.time()
    out, _ = proc.communicate(timeout=120)
    elapsed = time.time() - start
    assert proc.returncode == 130, out
    print(f"stopped {elapsed:.1f} s after SIGINT:\n{out}")
    assert elapsed < limit, (elapsed, out)
    assert out.count(HINT) == 1 and out.count("eval stopped by SIGINT") == 1, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out and "failed in its process" not in out, out
    kept = _cached(tmp_path / "cache")
    assert 2 <= kept < 24
    left = subprocess.run(["pgrep", "-f", f"llama-server -m {tmp_path / 'm_q8_0.gguf'}"], capture_output=True,
                          text=True)
    assert left.stdout == ""  # no llama-server left behind
    rec = json.loads((tmp_path / "m.json").read_text())["stages"]["eval"]
    assert rec["status"] == "interrupted"
    assert not (tmp_path / "eval" / "report.json").exists()
    # the same command again: the kept replies come from the cache
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (res,) = json.loads((tmp_path / "eval" / "report.json").read_text())["results"]
    assert res["replies_from_cache"] == kept and res["n"] == 24


def test_ctrl_c_during_the_eval_stage_on_a_stand_in_server(tmp_path, smollm2_dir):
    """The whole path but llama.cpp's decoding: `fintune run`, the stage process, the
    runner, llama-server started, streamed from and ended (a script that streams a
    token every 0.1 s), the reply cache."""
    from test_eval_speed import stand_in_gguf

    stand_in_gguf(tmp_path / "standin.gguf", "stand-in weights")
    _interrupt_and_continue(tmp_path, _eval_only_run(tmp_path, smollm2_dir, tmp_path / "standin.gguf",
                                                     _stand_in_llama_cpp(tmp_path / "lc")))


@pytest.mark.slow
def test_ctrl_c_during_the_eval_stage_stops_in_seconds_keeps_the_replies_and_exits_130(tmp_path, smollm2_dir):
    require_llama_cpp()
    # 5.1 s measured on 2 cores shared with other jobs (load average 7): the stage process,
    # with torch imported, takes a part of it to exit
    _interrupt_and_continue(tmp_path, _eval_only_run(tmp_path, smollm2_dir), limit=8)


def test_ctrl_c_during_fintune_eval_on_a_stand_in_server(tmp_path, smollm2_dir):
    from test_eval_speed import stand_in_gguf

    _stand_in_llama_cpp(tmp_path / "lc")
    stand_in_gguf(tmp_path / "m.gguf", "stand-in weights")
    (tmp_path / "set.jsonl").write_text("".join(json.dumps(it) + "\n" for it in _items(24)))
    proc = subprocess.Popen([sys.executable, "-m", "fintune", "eval", "--gguf", str(tmp_path / "m.gguf"),
                             "--llama_cpp_path", str(tmp_path / "lc"), "--tokenizer", str(smollm2_dir),
                             "--eval_file", str(tmp_path / "set.jsonl"), "--parallel", "2",
                             "--output", str(tmp_path / "out")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while subprocess.run(["pgrep", "-f", f"llama-server -m {tmp_path / 'm.gguf'}"], capture_output=True).returncode:
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    time.sleep(1.0)  # decoding
    proc.send_signal(signal.SIGINT)
    start = time.time()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and time.time() - start < 5, out
    assert out.count("eval stopped by SIGINT; no report written; rerun the same command") == 1, out
    assert "Traceback" not in out and not (tmp_path / "out" / "report.json").exists()
    assert subprocess.run(["pgrep", "-f", f"llama-server -m {tmp_path / 'm.gguf'}"], capture_output=True).stdout == b""
