"""LlamaCpp wrapper on a stand-in binary: output that is not valid UTF-8 (a
generation cut inside a multi-byte character) and llama.cpp's timing lines."""
import stat
from pathlib import Path

from fintune.llama_cpp import LlamaCpp

FAKE = """#!/bin/sh
printf 'Final answer: 12 \\342\\202'
printf 'common_perf_print:        eval time =     500.00 ms /    20 runs   (   25.00 ms per token)\\n' >&2
"""


def test_cut_multibyte_output_and_timings(tmp_path):
    binary = tmp_path / "build" / "bin" / "llama-completion"
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE)
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    c = LlamaCpp(tmp_path).complete(tmp_path / "m.gguf", "prompt", 20)
    assert c.text.startswith("Final answer: 12") and "\ufffd" in c.text
    assert c.n_tokens == 20 and c.eval_seconds == 0.5


ARGS = """#!/bin/sh
echo "$@" > "$(dirname "$0")/args.txt"
printf 'ok'
"""


def _tree(tmp_path, stamp: str | None):
    """A stand-in llama.cpp tree whose tools record their command line."""
    for name in ("llama-completion", "llama-perplexity", "llama-server"):
        b = tmp_path / "build" / "bin" / name
        b.parent.mkdir(parents=True, exist_ok=True)
        b.write_text(ARGS)
        b.chmod(b.stat().st_mode | stat.S_IEXEC)
    if stamp is not None:
        (tmp_path / ".fintune-build").write_text(stamp)
    return LlamaCpp(tmp_path)


CPU_STAMP = "llama-cpp-python==0.3.36 targets=llama-quantize llama-completion isa=-DGGML_AVX512=OFF"
CUDA_STAMP = "llama-cpp-python==0.3.36 targets=llama-quantize llama-completion cuda=ON arch=89 isa=-DGGML_AVX512=OFF"


def test_every_layer_offloaded_only_for_a_cuda_build(tmp_path):
    """Defect 5: the tools ran without -ngl. -ngl takes a number, 'auto' or 'all'
    (llama.cpp common/arg.cpp, the -ngl/--gpu-layers option)."""
    from fintune.llama_cpp import LlamaServer

    for stamp, cuda in ((CPU_STAMP, False), (CUDA_STAMP, True)):
        root = tmp_path / ("cuda" if cuda else "cpu")
        lc = _tree(root, stamp)
        assert lc.cuda_build is cuda
        lc.complete(root / "m.gguf", "prompt", 4)
        args = (root / "build" / "bin" / "args.txt").read_text().split()
        assert ("-ngl" in args) is cuda and (not cuda or args[args.index("-ngl") + 1] == "all")
        lc.generate(root / "m.gguf", "prompt", 4)  # the smoke test: what fits (an F16 export may not)
        args = (root / "build" / "bin" / "args.txt").read_text().split()
        assert ("-ngl" in args) is cuda and (not cuda or args[args.index("-ngl") + 1] == "auto")
        server = LlamaServer(lc, root / "m.gguf", slots=2)
        assert ("-ngl" in server.cmd) is cuda and (not cuda or server.cmd[server.cmd.index("-ngl") + 1] == "all")


def test_cmake_cache_of_a_hand_built_tree_counts(tmp_path):
    lc = _tree(tmp_path, None)
    assert not lc.cuda_build
    (tmp_path / "build" / "CMakeCache.txt").write_text("GGML_CUDA:BOOL=ON\n")
    assert lc.cuda_build


def test_gguf_runner_reports_its_device(tmp_path, tiny_llama_dir):
    from fintune.eval.runner import GGUFRunner
    from fintune.sampling import GREEDY

    for stamp, device in ((CPU_STAMP, "cpu (llama.cpp)"), (CUDA_STAMP, "cuda (llama.cpp)")):
        root = tmp_path / device.split()[0]
        _tree(root, stamp)
        assert GGUFRunner(root / "m.gguf", root, tiny_llama_dir, sampling=GREEDY).device == device


def _setup_dry_run(tmp_path, tools: dict[str, str], **env):
    """scripts/setup_llama_cpp.sh with LLAMA_CPP_DRY_RUN=1 (prints the configure line and
    the stamp, fetches and builds nothing) and stand-in tools first on PATH."""
    import os
    import subprocess

    from conftest import ROOT

    import tempfile

    bin_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    for name, body in tools.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    run_env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "LLAMA_CPP_DRY_RUN": "1", **env}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "setup_llama_cpp.sh"), str(tmp_path / "lc")],
                         capture_output=True, text=True, env=run_env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "lc").exists()
    return out.stdout


GPU = 'case "$*" in *compute_cap*) echo "8.9";; *) echo "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-0)";; esac'
NO_GPU = "echo 'NVIDIA-SMI has failed' >&2; exit 9"


def test_setup_builds_with_cuda_where_nvcc_and_a_gpu_are(tmp_path):
    out = _setup_dry_run(tmp_path, {"nvcc": "echo stand-in", "nvidia-smi": GPU})
    assert "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=89" in out and " cuda=ON arch=89 " in out
    # no GPU (a CPU machine with a CUDA toolkit, as this one), or forced off: the CPU build,
    # whose stamp reads as before this option, so an existing CPU build is not rebuilt
    for tools, env in (({"nvcc": "echo stand-in", "nvidia-smi": NO_GPU}, {}),
                       ({"nvcc": "echo stand-in", "nvidia-smi": GPU}, {"LLAMA_CPP_CUDA": "0"}),
                       ({"nvidia-smi": GPU}, {})):
        out = _setup_dry_run(tmp_path, tools, **env)
        assert "-DGGML_CUDA=OFF" in out and "GGML_CUDA=ON" not in out and "cuda=" not in out
        stamp = next(l for l in out.splitlines() if l.startswith("stamp: "))
        assert stamp.startswith("stamp: llama-cpp-python==") and " isa=-DGGML_AVX512=" in stamp


def test_gguf_runner_without_llama_cpp_says_how_to_build_it(tmp_path, tiny_llama_dir, caplog):
    """No llama.cpp at all: the error names `fintune setup-llama-cpp` and --llama_cpp_path
    in full; it was a log line cut at 120 characters ("to fetch )") before a later failure.
    Without llama-server alone, the fallback's reason is logged whole."""
    import logging

    import pytest

    from fintune.eval.runner import GGUFRunner
    from fintune.llama_cpp import LlamaCppError
    from fintune.sampling import GREEDY

    runner = GGUFRunner(tmp_path / "m.gguf", tmp_path / "none", tiny_llama_dir, sampling=GREEDY, parallel=4)
    with pytest.raises(LlamaCppError) as e:
        runner._server(256)
    assert str(e.value).endswith("`fintune setup-llama-cpp " + str(tmp_path / "none") + "`, or point "
                                 "--llama_cpp_path at a llama.cpp checkout with its tools built")

    completion = tmp_path / "only" / "build" / "bin" / "llama-completion"
    completion.parent.mkdir(parents=True)
    completion.write_text(FAKE)
    completion.chmod(completion.stat().st_mode | stat.S_IEXEC)
    runner = GGUFRunner(tmp_path / "m.gguf", tmp_path / "only", tiny_llama_dir, sampling=GREEDY, parallel=4)
    with caplog.at_level(logging.INFO):
        assert runner._server(256) is None
    (line,) = [r.getMessage() for r in caplog.records if "llama-server" in r.getMessage()]
    assert line.endswith("with its tools built")
