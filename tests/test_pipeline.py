"""The whole pipeline on a tiny random model: every stage, reruns, skips, and
llama.cpp export (merge -> convert -> quantize -> verify)."""
import json
import logging
from pathlib import Path

import pytest

from conftest import require_llama_cpp, tiny_overrides
from fintune.config import build_config
from fintune.manifest import ArtifactError
from fintune.pipeline import run_pipeline


@pytest.fixture(scope="module")
def run_once(tmp_path_factory, tiny_llama_dir):
    require_llama_cpp()
    root = tmp_path_factory.mktemp("pipe")
    cfg = build_config(overrides=tiny_overrides(root, tiny_llama_dir))
    manifest = root / "run_manifest.json"
    produced = run_pipeline(cfg, manifest)
    return cfg, manifest, produced, root


def test_every_stage_ran_and_recorded(run_once):
    cfg, manifest, produced, root = run_once
    assert list(produced) == ["data", "train", "merge", "export", "eval"]
    stages = json.loads(manifest.read_text())["stages"]
    for name, rec in stages.items():
        assert rec["status"] == "complete", name
        for art in rec["artifacts"]:
            assert art["size"] > 0 and all(len(f["sha256"]) == 64 for f in art["files"])


def test_merged_checkpoint_loads_strictly(run_once):
    from transformers import AutoModelForCausalLM

    cfg, *_ = run_once
    merged = Path(cfg.export.merged_model_dir)
    model, info = AutoModelForCausalLM.from_pretrained(merged, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not any("lora" in k for k in model.state_dict())
    rec = json.loads((merged / "fintune_merge.json").read_text())
    assert rec["max_logit_diff"] < 0.1  # fp16 rounding only


def test_ggufs_have_expected_types_and_modelfile(run_once):
    from fintune.export.gguf_check import FILE_TYPES, verify

    cfg, *_ = run_once
    for path, qtype in ((cfg.export.gguf_f16_path, "F16"), (cfg.export.gguf_q4_path, "Q4_K_M"),
                        (cfg.export.gguf_q8_path, "Q8_0")):
        s = verify(path, qtype)
        assert s["file_type"] == FILE_TYPES[qtype] and s["pre"] == "smollm" and s["architecture"] == "llama"
    mf = Path(cfg.export.modelfile_path).read_text()
    assert "FROM ./m_q4_k_m.gguf" in mf
    assert 'PARAMETER stop "<|im_end|>"' in mf and "<|im_start|>assistant" in mf


def test_rerun_does_nothing(run_once, caplog):
    cfg, manifest, _, _ = run_once
    before = manifest.read_text()
    with caplog.at_level(logging.INFO, logger="fintune"):
        produced = run_pipeline(cfg, manifest)
    assert produced == {}
    assert caplog.text.count("up to date") == 5
    assert manifest.read_text() == before


def test_changed_config_reruns_that_stage_and_what_depends_on_it(run_once, tmp_path):
    cfg, manifest, _, root = run_once
    # eval settings do not feed other stages: only eval reruns
    cfg2 = build_config(overrides={**tiny_overrides(root, Path(cfg.model.base_model)), "eval_limit": 3})
    assert list(run_pipeline(cfg2, manifest)) == ["eval"]
    assert list(run_pipeline(cfg, manifest)) == ["eval"]


def test_skip_flag_with_changed_artifact_is_a_clear_error(run_once):
    cfg, manifest, _, _ = run_once
    f16 = Path(cfg.export.gguf_f16_path)
    original = f16.read_bytes()
    try:
        f16.write_bytes(original[:1000])  # truncated, as after a crash or a bad copy
        with pytest.raises(ArtifactError, match="m_f16.gguf"):
            run_pipeline(cfg, manifest, skip={"skip_quantization"})
        # without the skip flag the export stage notices and redoes it
        produced = run_pipeline(cfg, manifest)
        assert "export" in produced and f16.stat().st_size == len(original)
    finally:
        if f16.stat().st_size != len(original):
            f16.write_bytes(original)


def test_quantized_checkpoint_is_refused(tmp_path):
    from fintune.export import check_checkpoint

    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes"}}))
    with pytest.raises(ValueError, match="quantization_config"):
        check_checkpoint(tmp_path)


def test_unknown_quant_type_lists_llama_cpp_types(tiny_llama_dir, tmp_path):
    require_llama_cpp()
    from fintune.export import preflight
    from fintune.export.llama_cpp import LlamaCppError

    cfg = build_config(overrides={**tiny_overrides(tmp_path, tiny_llama_dir), "quant_types": "Q4_K_M,Q9_X"})
    with pytest.raises(LlamaCppError) as e:
        preflight(cfg)
    assert "Q9_X" in str(e.value) and "Q8_0" in str(e.value) and "Q4_K_M" in str(e.value)


def test_missing_llama_cpp_says_how_to_build(tiny_llama_dir, tmp_path):
    from fintune.export import preflight
    from fintune.export.llama_cpp import LlamaCppError

    cfg = build_config(overrides={**tiny_overrides(tmp_path, tiny_llama_dir), "llama_cpp_path": str(tmp_path / "nope")})
    with pytest.raises(LlamaCppError, match="setup_llama_cpp.sh"):
        preflight(cfg)


def test_bf16_gguf_option_feeds_the_quants(tiny_llama_dir, tmp_path):
    require_llama_cpp()
    from fintune.export import preflight, produce_all, smoke_prompt
    from fintune.export.gguf_check import FILE_TYPES, verify

    cfg = build_config(overrides={**tiny_overrides(tmp_path, tiny_llama_dir), "gguf_outtype": "bf16",
                                  "quant_types": "Q4_K_M"})
    assert cfg.export.unquantized_gguf.name == "m_bf16.gguf"
    lc = preflight(cfg)
    summaries = produce_all(lc, cfg.export, tiny_llama_dir, smoke_prompt(cfg, tiny_llama_dir))
    assert set(summaries) == {"BF16", "Q4_K_M"}
    assert verify(tmp_path / "m_bf16.gguf")["file_type"] == FILE_TYPES["BF16"]
    assert verify(cfg.export.gguf_q4_path)["file_type"] == FILE_TYPES["Q4_K_M"]
