"""DeepSeek-R1-Distill-Qwen end to end on a tiny random Qwen2 that carries the
real R1 tokenizer and chat template: train -> merge -> convert -> quantize ->
verify, and the Modelfile of the DeepSeek-R1 family."""
import json
from pathlib import Path

import pytest

from conftest import require_llama_cpp, tiny_overrides
from fintune.config import build_config
from fintune.pipeline import run_pipeline

R1_BOS, R1_EOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"


@pytest.fixture(scope="module")
def r1_run(tmp_path_factory, tiny_qwen2_r1_dir):
    require_llama_cpp()
    root = tmp_path_factory.mktemp("r1")
    cfg = build_config(overrides=tiny_overrides(root, tiny_qwen2_r1_dir, max_steps=2, num_generated=20))
    run_pipeline(cfg, root / "run_manifest.json", only=["data", "train", "merge", "export"])
    return cfg


def test_r1_tokenizer_is_recognised_by_llama_cpp(r1_run):
    from fintune.export.gguf_check import verify
    from fintune.gguf import read_header

    for path, qtype in ((r1_run.export.gguf_f16_path, "F16"), (r1_run.export.gguf_q4_path, "Q4_K_M"),
                        (r1_run.export.gguf_q8_path, "Q8_0")):
        s = verify(path, qtype)
        assert s["architecture"] == "qwen2" and s["pre"] == "deepseek-r1-qwen", s
    h = read_header(r1_run.export.gguf_q4_path)
    assert h["tokenizer.ggml.bos_token_id"] == 151646 and h["tokenizer.ggml.eos_token_id"] == 151643
    assert "<\uff5cAssistant\uff5c>" in h["tokenizer.chat_template"]


def test_r1_modelfile_is_the_deepseek_family(r1_run):
    mf = Path(r1_run.export.modelfile_path).read_text(encoding="utf-8")
    assert "chat template family: deepseek-r1" in mf
    assert "<\uff5cUser\uff5c>" in mf and "<\uff5cAssistant\uff5c>" in mf
    for stop in (R1_BOS, R1_EOS, "<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>"):
        assert f'PARAMETER stop "{stop}"' in mf
    assert "\nSYSTEM" not in mf
    assert "PARAMETER temperature 0.6" in mf and "PARAMETER top_p 0.95" in mf


def test_r1_merge_record_names_family(r1_run):
    rec = json.loads((Path(r1_run.export.merged_model_dir) / "fintune_merge.json").read_text())
    assert rec["chat_template_family"] == "deepseek-r1" and rec["max_logit_diff"] < 0.1
