"""What makes the eval fast without changing what it measures: the stop rule,
the reply cache (reused only when every part of its key matches), and --quick
(a slice in its own folder, leaving the real run alone)."""
import json
from pathlib import Path

import pytest

from conftest import as_flags, require_llama_cpp, tiny_overrides
from fintune.scoring.stop import cut

STOP_CASES = [
    ("Formula: x\nFinal answer: 25\nFinal answer: 26\n", "Formula: x\nFinal answer: 25\n", "final answer"),
    ("Formula: x\nFinal answer: 1000000", "Formula: x\nFinal answer: 1000000", None),   # line not finished
    ("z = 1\nz = 1\nq\nz = 1\nmore", "z = 1\nz = 1\nq\nz = 1\n", "repeated line"),
    ("b = 1.1111111111111111111111111", "b = 1.1111111111111111111111111", "repeated text"),
    ("Final answer: 1,000,000,000", "Final answer: 1,000,000,000", None),  # zeros are not a loop
    ("<think>maybe Final answer: 3\n", "<think>maybe Final answer: 3\n", None),  # still reasoning
    ("<think>x</think>\nFinal answer: 3\nmore", "<think>x</think>\nFinal answer: 3\n", "final answer"),
]


@pytest.mark.parametrize("text,kept,reason", STOP_CASES)
def test_stop_rule(text, kept, reason):
    assert cut(text) == (kept, reason)


def test_stop_rule_after_an_opened_think_block():
    assert cut("Final answer: 3\n", open_think=True) == ("Final answer: 3\n", None)



def stand_in_gguf(path: Path, tag: str) -> None:
    """A GGUF header without tensors: enough for the runner, which reads whether
    llama.cpp adds BOS (templates.for_llama_cpp) and hashes the file for its cache."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.name", tag)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

@pytest.fixture
def counting_runner(tmp_path, smollm2_dir, monkeypatch):
    """GGUFRunner on a stand-in model file, llama-completion replaced by a counter."""
    from fintune.eval import runner as rn
    from fintune.llama_cpp import Completion, LlamaCpp

    calls = []

    def complete(self, gguf, prompt, n, temperature=0.0, top_p=1.0, seed=0, ctx=2048, flags=()):
        calls.append((Path(gguf).name, prompt, n, temperature, seed, list(flags)))
        return Completion(f"Final answer: {len(calls)}\nmore", 5, 0.1)

    monkeypatch.setattr(LlamaCpp, "complete", complete)
    monkeypatch.setattr(LlamaCpp, "version", lambda self: "llama-cpp-python==0.3.36")
    model = tmp_path / "base.gguf"
    stand_in_gguf(model, "stand-in weights")

    def make(gguf=model, sampling=rn.GREEDY):
        return rn.GGUFRunner(gguf, tmp_path, smollm2_dir, "base", sampling, parallel=1,
                             cache_dir=tmp_path / "cache")

    return make, calls, tmp_path


def test_cached_replies_are_reused_only_when_every_part_of_the_key_matches(counting_runner, monkeypatch):
    from fintune.eval import runner as rn
    from fintune.llama_cpp import LlamaCpp

    make, calls, tmp = counting_runner
    prompts = ["p1", "p2"]
    first = make().generate(prompts, 64)
    assert first == ["Final answer: 1\n", "Final answer: 2\n"] and len(calls) == 2  # stop rule applied
    again = make()
    assert again.generate(prompts, 64) == first and len(calls) == 2 and again.cached == 2

    def misses(runner, ps=prompts, n=64):
        before = len(calls)
        runner.generate(ps, n)
        return len(calls) - before

    assert misses(make(), ["p1", "p3"]) == 1                                  # prompt
    assert misses(make(), n=65) == 2                                          # token limit
    assert misses(make(sampling=rn.Sampling(0.6, 0.95, 0))) == 2              # sampling
    assert misses(make(sampling=rn.Sampling(0.0, 1.0, 7))) == 2               # seed
    assert misses(make(sampling=rn.Sampling(repeat_penalty=1.1))) == 2        # any other setting
    assert calls[-1][-1] == ["--repeat-penalty", "1.1"]
    other = tmp / "tuned.gguf"
    stand_in_gguf(other, "other weights")
    assert misses(make(gguf=other)) == 2                                      # model file content
    monkeypatch.setattr(LlamaCpp, "version", lambda self: "llama-cpp-python==0.3.37")
    assert misses(make()) == 2                                                # llama.cpp build
    monkeypatch.setattr("fintune.scoring.stop.RULE", "another rule")
    assert misses(make()) == 2                                                # stop rule
    assert misses(make()) == 0                                                # and now cached under it


def test_quick_leaves_the_real_run_untouched(tmp_path, tiny_llama_dir):
    require_llama_cpp()
    from fintune.cli import run_main as main

    real = tmp_path / "run_manifest.json"
    real.write_text('{"stages": {"train": {"status": "complete"}}}\n')
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_model.safetensors").write_bytes(b"the real run's adapter")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    overrides = tiny_overrides(tmp_path, tiny_llama_dir)
    del overrides["eval_models"]  # from the profile (base, F16, Q8_0, Q4_K_M), so --quick slices them
    flags = as_flags(overrides)
    assert main(["--config", "configs/cpu-smollm2.yaml", "--manifest", str(real), "--quick"] + flags) == 0
    assert {p: p.read_bytes() for p in before} == before               # every real file as it was
    quick = tmp_path / "quick"
    stages = json.loads((quick / "run_manifest.json").read_text())["stages"]
    assert all(rec["status"] == "complete" for rec in stages.values()) and len(stages) == 5
    assert (quick / "m_q4_k_m.gguf").is_file() and not (quick / "m_q8_0.gguf").exists()  # first quant only
    report = json.loads((quick / "eval" / "report.json").read_text())
    assert {r["model"] for r in report["results"]} == {"base", "q4_k_m"} and report["results"][0]["n"] == 4
    assert json.loads((quick / "lora" / "fintune_adapter.json").read_text())["global_step"] == 3  # flag kept


def test_llama_server_serves_more_requests_than_its_log_pipe_holds():
    """The server logs each request; 300 requests write well past a pipe's 64 KiB,
    which blocked the server mid-run while its log went to an unread pipe."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import LLAMA_CPP
    from fintune.llama_cpp import LlamaCpp, LlamaServer
    from fintune.models import smollm2_gguf_path

    require_llama_cpp()
    with LlamaServer(LlamaCpp(LLAMA_CPP), smollm2_gguf_path(), slots=4, ctx_per_slot=256) as server:
        with ThreadPoolExecutor(4) as pool:
            done = list(pool.map(lambda i: server.complete(f"Count {i}:", 1, seed=i), range(300)))
        server.log.seek(0, 2)
        assert server.log.tell() > 64 * 1024
    assert len(done) == 300 and all(c.n_tokens == 1 for c in done)


def test_llama_cpp_version_names_the_instruction_sets_it_was_built_for(tmp_path):
    from fintune.llama_cpp import LlamaCpp

    lc = LlamaCpp(tmp_path)
    assert lc.version() == "unknown"
    (tmp_path / ".fintune-source").write_text("llama-cpp-python==0.3.36\n")
    assert lc.version() == "llama-cpp-python==0.3.36"
    stamp = "llama-cpp-python==0.3.36 targets=llama-quantize llama-server isa={}\n"
    (tmp_path / ".fintune-build").write_text(stamp.format("avx2"))
    avx2 = lc.version()
    (tmp_path / ".fintune-build").write_text(stamp.format("-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON"))
    # the reply cache's key and the export record change with the build
    assert avx2 == "llama-cpp-python==0.3.36 (avx2)" and lc.version() != avx2


def test_longest_expected_replies_go_first_and_come_back_in_prompt_order(counting_runner):
    make, calls, _ = counting_runner
    plain = make().generate(["a", "b", "c"], 64)  # cached under (prompt, seed, limit)
    seeds = {c[1]: c[4] for c in calls}
    calls.clear()
    runner = make()
    runner.cache = None  # generate every reply again
    out = runner.generate(["a", "b", "c"], 64, expected=[10, 300, 40])
    assert [c[1] for c in calls] == ["b", "c", "a"]                  # dispatched longest first
    assert {c[1]: c[4] for c in calls} == seeds                      # each prompt keeps its seed
    assert [o.split(": ")[1] for o in out] == ["3\n", "1\n", "2\n"]  # in prompt order: a ran third
    assert plain == ["Final answer: 1\n", "Final answer: 2\n", "Final answer: 3\n"]


def test_loop_check_answers_as_the_regex_it_replaced():
    """ends_in_loop is the rule's `(.{1,40}?)\\1{4,}$` (a match of 20 characters or
    more) without the regex's cost, on strings built to end in loops and near-loops."""
    import random
    import re

    from fintune.scoring.stop import ends_in_loop

    regex = re.compile(r"(.{1,40}?)\1{4,}$", re.S)
    rng, positives = random.Random(0), 0
    for _ in range(20000):
        chars = rng.choice(["ab", "0123456789., -", "x1 \n", "\n\na"])
        draw = lambda k: "".join(rng.choice(chars) for _ in range(k))  # noqa: E731
        text = (draw(rng.randint(0, 60)) + draw(rng.randint(1, 45)) * rng.randint(0, 12)
                + draw(rng.choice([0, 0, 1, 2])))[-400:]
        m = regex.search(text)
        expected = bool(m and len(m.group(0)) >= 20)
        positives += expected
        assert ends_in_loop(text) == expected, repr(text)
    assert 2000 < positives < 18000  # both answers were exercised


def test_the_base_gguf_is_converted_beside_the_export_once_and_only_where_the_eval_needs_it(tmp_path, monkeypatch):
    import threading

    from fintune.config import build_config
    from fintune import models as stage  # the base GGUF's helpers live in fintune.models

    monkeypatch.setenv("FINTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("fintune.machine.cuda_available", lambda: False)
    converted, release = [], threading.Event()

    def convert(self, model_dir, outfile, outtype="f16"):
        release.wait(5)  # still converting while the caller goes on
        converted.append((Path(model_dir), outtype))
        Path(outfile).write_bytes(b"GGUF")

    monkeypatch.setattr("fintune.llama_cpp.LlamaCpp.convert", convert)
    lora, base = tmp_path / "lora", tmp_path / "base-model"
    cfg = build_config(overrides={"lora_output_dir": str(lora), "eval_models": "base,F16"})
    assert stage.convert_base_beside(cfg) is None                    # no adapter record: nothing to read
    lora.mkdir()
    (lora / "fintune_adapter.json").write_text(json.dumps({"base_model_path": str(base)}))
    job = stage.convert_base_beside(cfg)
    assert job is not None and not job.done()                        # runs in the background
    release.set()
    assert job.result() == stage.base_gguf_path(str(base)) and job.result().read_bytes() == b"GGUF"
    assert converted == [(base, "f16")]
    assert stage.convert_base_beside(cfg) is None                    # cached: not again
    assert stage.base_gguf(cfg, str(base)) == job.result() and len(converted) == 1  # the eval stage reuses it
    no_base = build_config(overrides={"lora_output_dir": str(lora), "eval_models": "F16,Q4_K_M"})
    (job.result()).unlink()
    assert stage.convert_base_beside(no_base) is None                # the eval runs no base model
    monkeypatch.setattr("fintune.machine.cuda_available", lambda: True)
    assert stage.convert_base_beside(cfg) is None                    # on a GPU the base runs in transformers
    assert len(converted) == 1


@pytest.mark.parametrize("setting, cores, models, cuda, expected", [
    (0, 2, 4, False, (2, 1)),     # auto on 2 cores: two models, one thread each
    (0, 16, 4, False, (2, 8)),
    (0, 2, 1, False, (1, None)),  # one model: alone, on llama.cpp's own thread count
    (0, 1, 4, False, (1, None)),  # one core: one at a time
    (0, 16, 4, True, (1, None)),  # a GPU machine: as before
    (1, 16, 4, False, (1, None)),
    (4, 2, 4, False, (2, 1)),     # never more models than cores
    (3, 16, 4, False, (3, 5)),
])
def test_gguf_models_at_once_and_their_threads(setting, cores, models, cuda, expected, monkeypatch):
    from fintune.config import build_config
    from fintune.eval import stage

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr("fintune.machine.cuda_available", lambda: cuda)
    assert stage.concurrency(build_config(overrides={"eval_concurrency": setting}), models) == expected


def test_side_by_side_eval_keeps_the_model_order_and_gives_each_server_its_threads(tmp_path, monkeypatch,
                                                                                   smollm2_dir):
    """GGUF models evaluated two at a time: each llama-server gets half the cores, the
    report lists the models in eval_models order whichever finishes first, and a
    reply cached at one thread count is not reused at another."""
    import threading
    import time

    from fintune.config import build_config
    from fintune.eval import stage
    import shutil

    from fintune import llama_cpp

    monkeypatch.setenv("FINTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr("fintune.machine.cuda_available", lambda: False)
    monkeypatch.setattr(llama_cpp.LlamaCpp, "version", lambda self: "llama-cpp-python==0.3.36")
    started, running, peak, lock = [], [0], [0], threading.Lock()

    class FakeServer:
        def __init__(self, lc, gguf, slots=4, ctx_per_slot=1024, port=0, threads=None):
            started.append((Path(gguf).name, threads))
            self.slow = "f16" in Path(gguf).name  # finishes last although it starts first

        def __enter__(self):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            return self

        def __exit__(self, *exc):
            with lock:
                running[0] -= 1

        def complete(self, prompt, n, temperature=0.0, top_p=1.0, seed=0, stop=None, extra=None):
            time.sleep(0.05 if self.slow else 0.0)
            return llama_cpp.Completion("Formula: x\nFinal answer: 1\n", 4, 0.01)

    monkeypatch.setattr(llama_cpp, "LlamaServer", FakeServer)
    lora, data = tmp_path / "lora", tmp_path / "data"
    data.mkdir()
    shutil.copytree(smollm2_dir, lora, ignore=shutil.ignore_patterns("*.safetensors"))  # the tokenizer
    (lora / "fintune_adapter.json").write_text(json.dumps({"base_model_path": str(tmp_path / "base")}))
    items = [{"id": f"i{i}", "question": f"What is {i} + 1?", "answer_numeric": i + 1.0,
              "meta": {"family": "sum", "solution": "Final answer: 1"}} for i in range(3)]
    (data / "heldout.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    ggufs = {q: tmp_path / f"m-{q.lower()}.gguf" for q in ("F16", "Q8_0", "Q4_K_M")}
    for p in ggufs.values():
        stand_in_gguf(p, p.name)  # sha256s differ: no shared cached replies
    over = {
        "lora_output_dir": str(lora), "data_dir": str(data), "eval_dir": str(tmp_path / "eval"),
        "eval_models": "F16,Q8_0,Q4_K_M", "eval_files": "", "eval_limit": 3, "eval_parallel": 2,
        "perplexity": False, "llama_cpp_path": str(tmp_path),
        "gguf_f16_path": str(ggufs["F16"]), "gguf_q8_path": str(ggufs["Q8_0"]), "gguf_q4_path": str(ggufs["Q4_K_M"])}
    stage.run(build_config(overrides=over))
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert [r["model"] for r in report["results"]] == ["f16", "q8_0", "q4_k_m"]
    assert sorted(started) == sorted((p.name, 1) for p in ggufs.values()) and peak[0] == 2
    assert report["gguf_models_at_once"] == 2 and report["llama_cpp_threads"] == 1
    assert all(r["replies_from_cache"] == 0 for r in report["results"])
    stage.run(build_config(overrides={**over, "eval_concurrency": 1}))
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert all(r["replies_from_cache"] == 0 for r in report["results"])  # other threads: generated again
    assert started[-1][1] is None and "llama_cpp_threads" in report and report["llama_cpp_threads"] is None
