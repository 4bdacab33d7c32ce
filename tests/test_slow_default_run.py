"""The real default job: SmolLM2-135M through every stage, as `make run` does it."""
import json
import subprocess

import pytest

from conftest import LLAMA_CPP, require_llama_cpp
from fintune.cli import run_main as main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    require_llama_cpp()
    root = tmp_path_factory.mktemp("default")
    flags = ["--config", "configs/cpu-smollm2.yaml", "--manifest", str(root / "run_manifest.json"),
             "--data_dir", str(root / "data"), "--lora_output_dir", str(root / "financial_lora"),
             "--checkpoint_dir", str(root / "checkpoints"), "--merged_model_dir", str(root / "merged"),
             "--gguf_f16_path", str(root / "financial_model_fp16.gguf"),
             "--gguf_q4_path", str(root / "financial_model_q4_k_m.gguf"),
             "--gguf_q8_path", str(root / "financial_model_q8_0.gguf"),
             "--modelfile_path", str(root / "Modelfile"), "--eval_dir", str(root / "eval")]
    assert main(flags) == 0
    return root, flags


def test_three_ggufs_with_expected_file_types(default_run):
    from gguf import GGUFReader

    root, _ = default_run
    for name, ftype in (("fp16", 1), ("q4_k_m", 15), ("q8_0", 7)):
        r = GGUFReader(root / f"financial_model_{name}.gguf")
        assert r.fields["general.file_type"].contents() == ftype
        assert r.fields["tokenizer.ggml.pre"].contents() == "smollm"


def test_llama_cpp_generates_from_q4(default_run):
    root, _ = default_run
    out = subprocess.run([str(LLAMA_CPP / "build/bin/llama-completion"), "-m", str(root / "financial_model_q4_k_m.gguf"),
                          "-p", "Sharpe ratio:", "-n", "12", "-no-cnv", "--temp", "0", "--no-display-prompt"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip()


def test_modelfile_names_q4_and_stop_tokens(default_run):
    root, _ = default_run
    mf = (root / "Modelfile").read_text()
    assert "FROM ./financial_model_q4_k_m.gguf" in mf
    assert 'PARAMETER stop "<|im_end|>"' in mf and 'PARAMETER stop "<|im_start|>"' in mf


def test_report_compares_base_adapter_and_every_gguf(default_run):
    root, _ = default_run
    report = json.loads((root / "eval" / "report.json").read_text())
    results = {r["model"]: r for r in report["results"]}
    assert list(results) == ["base", "f16", "q8_0", "q4_k_m"]
    # the fine-tune teaches the answer format (base 31%, F16 97% measured)
    assert results["f16"]["format_rate"] > results["base"]["format_rate"] + 0.2
    assert results["f16"]["accuracy"] >= results["base"]["accuracy"]
    # Q8_0 is near-lossless: its 95% interval overlaps F16's and it keeps the format
    (lo, hi), (qlo, qhi) = results["f16"]["ci95"], results["q8_0"]["ci95"]
    assert qlo <= hi and lo <= qhi
    assert abs(results["q8_0"]["format_rate"] - results["f16"]["format_rate"]) <= 0.1
    assert set(report["perplexity"]) == {"F16", "Q8_0", "Q4_K_M"}
    assert report["perplexity"]["F16"] <= report["perplexity"]["Q4_K_M"] * 1.05


def test_second_run_with_every_skip_flag_does_nothing(default_run):
    root, flags = default_run
    manifest = root / "run_manifest.json"
    before = manifest.read_text()
    skips = ["--skip_dataset_prep", "--skip_training", "--skip_merge", "--skip_quantization", "--skip_eval"]
    assert main(flags + skips) == 0
    assert manifest.read_text() == before
