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
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    start = time.time()
    with pytest.raises(TrainingInterrupted, match=f"eval stopped by SIGINT; {HINT}"):
        with interrupt.stop_on_signal(HINT):
            first.generate(prompts, 16)
    assert time.time() - start < 2.0  # not the 10 s the 40 replies take
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
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


def _eval_only_run(tmp_path: Path, smollm2_dir: Path) -> list[str]:
    """`fintune run` with every stage but eval skipped, on the embedded SmolLM2's GGUF as
    the Q8_0 export, its Hugging Face checkpoint as the base."""
    from fintune.models import smollm2_gguf_path

    lora, data = tmp_path / "lora", tmp_path / "data"
    data.mkdir()
    shutil.copytree(smollm2_dir, lora, ignore=shutil.ignore_patterns("*.safetensors"))  # the tokenizer
    (lora / "fintune_adapter.json").write_text(json.dumps({"base_model_path": str(smollm2_dir)}))
    (data / "heldout.jsonl").write_text("".join(json.dumps(it) + "\n" for it in _items(24)))
    gguf = tmp_path / "m_q8_0.gguf"
    gguf.symlink_to(smollm2_gguf_path())
    over = {"base_model": str(smollm2_dir), "lora_output_dir": str(lora), "data_dir": str(data),
            "eval_dir": str(tmp_path / "eval"), "eval_models": "Q8_0", "eval_files": "", "eval_limit": 24,
            "eval_max_new_tokens": 200, "eval_parallel": 2, "perplexity": False,
            "llama_cpp_path": str(LLAMA_CPP), "gguf_q8_path": str(gguf)}
    return [sys.executable, "train_financial_model.py", "--config", "configs/cpu-smollm2.yaml",
            "--manifest", str(tmp_path / "m.json"), "--skip_dataset_prep", "--skip_training", "--skip_merge",
            "--skip_quantization"] + as_flags(over)


def _cached(cache: Path) -> int:
    return sum(len(f.read_text().splitlines()) for f in cache.glob("eval-replies/*.jsonl"))


@pytest.mark.slow
def test_ctrl_c_during_the_eval_stage_stops_in_seconds_keeps_the_replies_and_exits_130(tmp_path, smollm2_dir):
    require_llama_cpp()
    env = {**os.environ, "FINTUNE_CACHE": str(tmp_path / "cache")}
    cmd = _eval_only_run(tmp_path, smollm2_dir)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while _cached(tmp_path / "cache") < 2:  # llama-server is decoding
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the orchestrator
    start = time.time()
    out, _ = proc.communicate(timeout=120)
    elapsed = time.time() - start
    assert proc.returncode == 130, out
    assert elapsed < 5, (elapsed, out)
    assert out.count(HINT) == 1 and "eval stopped by SIGINT" in out, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out and "failed in its process" not in out, out
    kept = _cached(tmp_path / "cache")
    assert 2 <= kept < 24
    servers = subprocess.run(["pgrep", "-f", str(tmp_path / "m_q8_0.gguf")], capture_output=True, text=True)
    assert servers.stdout == ""  # no llama-server left behind
    rec = json.loads((tmp_path / "m.json").read_text())["stages"]["eval"]
    assert rec["status"] == "interrupted"
    assert not (tmp_path / "eval" / "report.json").exists()
    # the same command again: the kept replies come from the cache
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (res,) = json.loads((tmp_path / "eval" / "report.json").read_text())["results"]
    assert res["replies_from_cache"] == kept and res["n"] == 24
