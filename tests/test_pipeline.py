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


def test_model_loading_stages_ran_in_processes_of_their_own(run_once):
    """train, merge and eval each in a fresh child process (no library patch or GPU
    memory leaks into the next); data and export in the orchestrator's."""
    import os

    _, manifest, _, _ = run_once
    pids = {name: rec["pids"] for name, rec in json.loads(manifest.read_text())["stages"].items()}
    assert pids["data"] == [os.getpid()] and pids["export"] == [os.getpid()]
    children = [pids[s] for s in ("train", "merge", "eval")]
    assert all(len(p) == 1 and p[0] != os.getpid() for p in children)
    assert len({p[0] for p in children}) == 3


def test_the_eval_finds_the_base_gguf_converted_before_it_started(run_once):
    """The export stage converts the base model's GGUF beside its own conversion
    (the eval's CPU base runner needs it), so the eval stage starts generating."""
    import time

    from fintune.models import base_gguf_path
    from fintune.adapters import read_adapter_record

    cfg, manifest, _, _ = run_once
    gguf = base_gguf_path(read_adapter_record(cfg.train.lora_output_dir)["base_model_path"])
    started = json.loads(manifest.read_text())["stages"]["eval"]["started"]
    assert gguf.is_file() and gguf.stat().st_mtime < time.mktime(time.strptime(started, "%Y-%m-%dT%H:%M:%S%z")) + 1


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
    from fintune.export.gguf_check import verify
    from fintune.gguf import FILE_TYPES

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
    from fintune.llama_cpp import LlamaCppError

    cfg = build_config(overrides={**tiny_overrides(tmp_path, tiny_llama_dir), "quant_types": "Q4_K_M,Q9_X"})
    with pytest.raises(LlamaCppError) as e:
        preflight(cfg)
    assert "Q9_X" in str(e.value) and "Q8_0" in str(e.value) and "Q4_K_M" in str(e.value)


def test_missing_llama_cpp_says_how_to_build(tiny_llama_dir, tmp_path):
    from fintune.export import preflight
    from fintune.llama_cpp import LlamaCppError

    cfg = build_config(overrides={**tiny_overrides(tmp_path, tiny_llama_dir), "llama_cpp_path": str(tmp_path / "nope")})
    with pytest.raises(LlamaCppError, match="fintune setup-llama-cpp .*--llama_cpp_path"):
        preflight(cfg)


def test_bf16_gguf_option_feeds_the_quants(tiny_llama_dir, tmp_path):
    require_llama_cpp()
    from fintune.export import preflight, produce_all, smoke_prompt
    from fintune.export.gguf_check import verify
    from fintune.gguf import FILE_TYPES

    cfg = build_config(overrides={**tiny_overrides(tmp_path, tiny_llama_dir), "gguf_outtype": "bf16",
                                  "quant_types": "Q4_K_M"})
    assert cfg.export.unquantized_gguf.name == "m_bf16.gguf"
    lc = preflight(cfg)
    summaries = produce_all(lc, cfg.export, tiny_llama_dir, smoke_prompt(cfg, tiny_llama_dir))
    assert set(summaries) == {"BF16", "Q4_K_M"}
    assert verify(tmp_path / "m_bf16.gguf")["file_type"] == FILE_TYPES["BF16"]
    assert verify(cfg.export.gguf_q4_path)["file_type"] == FILE_TYPES["Q4_K_M"]


def test_gguf_missing_its_last_bytes_is_reported_truncated(run_once, tmp_path):
    from fintune.export.gguf_check import verify
    from fintune.gguf import GGUFError

    cfg, *_ = run_once
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(Path(cfg.export.gguf_q4_path).read_bytes()[:-64])
    with pytest.raises(GGUFError, match="truncated"):
        verify(cut)


def test_eval_report_compares_every_model_with_perplexity_and_speed(run_once):
    cfg, *_ = run_once
    out = Path(cfg.eval.eval_dir)
    report = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in report["results"]] == ["base", "adapter", "f16", "q4_k_m"]
    assert [(r["device"], r["dtype"]) for r in report["results"]][1] == ("cpu", "float32")  # HF runner, no GPU
    for r in report["results"]:
        assert r["n"] == 4 and 0 <= r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] <= 1
        assert {"format_rate", "accuracy_strict", "per_category"} <= set(r)
    for r in report["results"]:
        if r["model"] != "adapter":  # replies all from the reply cache (the same tiny base in other tests) time nothing
            assert r["tokens_per_second"] > 0 if r["replies_from_cache"] < r["n"] else r["tokens_per_second"] is None
    assert set(report["perplexity"]) == {"F16", "Q4_K_M", "Q8_0"}
    assert all(v > 1 for v in report["perplexity"].values())
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    alone = [r for r in rows if r.get("tools", "off") == "off"]
    assert len(alone) == 16 and all(k in alone[0] for k in ("id", "prompt", "output", "extracted", "gold", "correct"))
    # with the calculator: the GGUFs alone (an HF model has no tool loop), 4 items each
    with_tool = [r for r in rows if r.get("tools") == "on"]
    assert sorted({r["model"] for r in with_tool}) == ["base", "f16", "q4_k_m"] and len(with_tool) == 12
    assert "Perplexity" in (out / "report.md").read_text()


EXTERNAL = [{"id": f"x{i}", "question": f"What is {i} percent of 200?", "context": "Percent: p/100 × base",
             "answer": str(2 * i), "answer_numeric": 2.0 * i, "meta": {"formula": "percent"}} for i in range(1, 4)]


def test_eval_cli_on_a_gguf_with_and_without_context(run_once, tmp_path):
    from fintune.cli import eval_main as main

    cfg, *_ = run_once
    f = tmp_path / "ext.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in EXTERNAL + [{**EXTERNAL[0], "id": "y", "answer_numeric": None}]))
    rc = main(["--eval_file", str(f), "--gguf", cfg.export.gguf_q4_path, "--both_context_modes",
               "--max_new_tokens", "8", "--output", str(tmp_path / "rep"), "--llama_cpp_path", cfg.export.llama_cpp_path])
    assert rc == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["eval_set"] for r in report["results"]] == ["ext[context]", "ext[no_context]"]
    assert all(r["n"] == 3 and r["skipped"] == 1 for r in report["results"])
    rows = [json.loads(l) for l in (tmp_path / "rep" / "predictions.jsonl").read_text().splitlines()]
    with_ctx = [r for r in rows if r["eval_set"] == "ext[context]"]
    assert "Percent: p/100" in with_ctx[0]["prompt"] and "Percent: p/100" not in rows[-1]["prompt"]
    assert (tmp_path / "rep" / "report.png").is_file()


def test_eval_cli_on_hf_model_with_adapter(run_once, tmp_path):
    from fintune.cli import eval_main as main

    cfg, *_ = run_once
    f = tmp_path / "ext.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in EXTERNAL))
    rc = main(["--eval_file", str(f), "--model", cfg.model.base_model, "--adapter", cfg.train.lora_output_dir,
               "--no_context", "--limit", "2", "--max_new_tokens", "4", "--output", str(tmp_path / "rep")])
    assert rc == 0
    res = json.loads((tmp_path / "rep" / "report.json").read_text())["results"]
    assert res[0]["n"] == 2 and res[0]["eval_set"] == "ext[no_context]"


def test_eval_cli_bad_file_names_file_and_line(tmp_path, capsys):
    from fintune.cli import eval_main as main

    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps(EXTERNAL[0]) + "\n" + json.dumps({"id": "z", "question": "q"}) + "\n")
    assert main(["--eval_file", str(f), "--gguf", str(tmp_path / "none.gguf"), "--output", str(tmp_path)]) == 2
    assert f"{f}:2: missing field(s) answer_numeric" in capsys.readouterr().err


def test_a_changed_curriculum_reruns_the_data_stage(tmp_path, monkeypatch):
    """New phrasings or worked steps are new data: the data stage's fingerprint
    changes with them, as with a changed setting, and with nothing else."""
    from fintune.data import quant
    from fintune.manifest import Manifest
    from fintune.pipeline import STAGES, fingerprint

    cfg = build_config(overrides={"data_dir": str(tmp_path / "data")})
    data_stage, manifest = STAGES[0], Manifest(tmp_path / "m.json")
    before = fingerprint(data_stage, cfg, manifest)
    assert fingerprint(data_stage, cfg, manifest) == before  # deterministic
    fam = quant.FAMILIES.get("cagr")
    monkeypatch.setattr(fam, "templates", fam.templates[:-1] + ["CAGR of ${A} -> ${B} over {n} years?"] + fam.templates[-1:])
    assert fingerprint(data_stage, cfg, manifest) != before
    monkeypatch.undo()
    plain = quant.Problem.solution
    monkeypatch.setattr(quant.Problem, "solution", lambda self: plain(self).replace("Final answer", "Answer"))
    assert fingerprint(data_stage, cfg, manifest) != before
