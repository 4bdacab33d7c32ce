"""Every stage planned before it loads anything (issue 30, defects 1-3 and 5): the
two GPU profiles on stand-in machines (GPU memory, RAM, disk and the llama.cpp build
are the plan's query functions, replaced here), the decisions each stage takes from
its line, and the lines --dry_run prints."""
import json
import logging

import pytest

from conftest import ROOT
from fintune.config import build_config, load_yaml
from fintune.errors import UsageError
from fintune import machine as facts
from fintune.plan import lines as plan_lines
from fintune.plan import stages as plan_stages
from fintune.plan.shapes import GiB, Shapes, model_config

P14 = ROOT / "configs" / "r1-distill-qwen-14b-24gb.yaml"
P7 = ROOT / "configs" / "r1-distill-qwen-7b-h100.yaml"


def machine(monkeypatch, gpu_gib, ram_gib, disk_gib=2000, llama_cuda=True):
    """Stand-ins for the machine queries; the GPU's free memory is its size less 0.5 GiB."""
    free = None if gpu_gib is None else (gpu_gib - 0.5) * GiB
    monkeypatch.setattr(facts, "cuda_available", lambda: gpu_gib is not None)
    monkeypatch.setattr(facts, "gpu_free_bytes", lambda: free)
    monkeypatch.setattr(facts, "gpu_total_bytes", lambda: gpu_gib * GiB)
    monkeypatch.setattr(facts, "ram_available_bytes", lambda: ram_gib * GiB)
    monkeypatch.setattr(facts, "disk_free_bytes", lambda path: disk_gib * GiB)
    monkeypatch.setattr(plan_lines, "llama_cpp_cuda", lambda root: llama_cuda)


def profile(path, **overrides):
    return build_config(load_yaml(path), overrides)


def by_stage(cfg, backend="unsloth"):
    m = plan_lines.this_machine(cfg)
    lines = plan_stages.stages(cfg, backend, m)
    return {ln.stage: ln for ln in lines}, plan_stages.render_stages(cfg, lines, m)


def test_14b_on_a_24_gb_card_with_64_gb_ram(monkeypatch):
    machine(monkeypatch, 24, 64)
    lines, text = by_stage(profile(P14))
    assert lines["train"].ok and lines["train"].action == "runs (unsloth)" and lines["train"].gpu < 23.5 * GiB
    # defect 2: the size comes from the config of the hub id (no weights local):
    # 14.77B x 8 bytes = 110 GiB in memory, so by shard, with the 16-bit download counted
    merge = lines["merge"]
    assert merge.ok and merge.action == "by_shard" and merge.ram < 0.9 * 64 * GiB
    assert "in_memory needs 110.0 GiB RAM" in merge.why and "16-bit base (27.5 GiB) is downloaded first" in merge.why
    assert 2 * 27 * GiB < merge.disk < 2 * 28 * GiB
    # defect 1: every eval model the profile names fits the 24 GB card; HF models in 4-bit
    cfg = profile(P14)
    assert "F16" not in cfg.eval.eval_models and {"Q4_K_M", "Q8_0"} <= set(cfg.eval.eval_models)
    for name in cfg.eval.eval_models:
        ln = lines[f"eval {name}"]
        assert ln.ok and ln.gpu <= 0.97 * 23.5 * GiB, (name, ln)
        assert ln.action in ("4-bit", "cuda (llama.cpp)") and ln.seconds > 0
    assert lines["eval base"].action == "4-bit" and "bf16 needs 3" in lines["eval base"].why
    assert "train" in text and "merge" in text and "export" in text and "decode assumed memory-bandwidth bound" in text


def test_14b_default_eval_models_would_not_fit_and_are_left_out(monkeypatch, tmp_path):
    """The defaults (base, adapter, merged, F16, ...) on the 24 GB card: HF models in
    4-bit, the F16 GGUF (29.5 GB) left out with the reason and the fix."""
    machine(monkeypatch, 24, 64)
    cfg = profile(P14, eval_models="base,adapter,merged,F16,Q8_0,Q4_K_M")
    lines, text = by_stage(cfg)
    # a GGUF at the export path from another model (the default job's SmolLM2, 258 MB) is not this one
    stale = tmp_path / "financial_model_fp16.gguf"
    stale.write_bytes(b"GGUF" + bytes(1024))
    with_stale, _ = by_stage(profile(P14, eval_models="F16", gguf_f16_path=str(stale)))
    assert with_stale["eval F16"] == lines["eval F16"]
    f16 = lines["eval F16"]
    assert not f16.ok and f16.action == "left out" and "drop it from eval_models" in f16.why
    assert all(lines[f"eval {n}"].action == "4-bit" for n in ("base", "adapter", "merged"))
    assert "eval F16" in text and "left out: needs" in text
    # a 16-bit profile gets no 4-bit fallback: the model is left out instead
    lines16, _ = by_stage(profile(P14, eval_models="base", load_in_4bit=False), backend="unsloth")
    assert lines16["eval base"].action == "left out" and not lines16["eval base"].ok


def test_14b_dpo_through_unsloth_is_refused_with_a_length_that_fits(monkeypatch):
    """DPO runs chosen and rejected rows at once and holds their logits: at 4096
    tokens that is over the 24 GB card; the fix names a --dpo_max_seq_length that fits."""
    machine(monkeypatch, 24, 64)
    cfg = profile(P14, dpo=True)
    lines, text = by_stage(cfg)
    dpo = lines["dpo"]
    assert not dpo.ok and dpo.action == "refuses" and "--dpo_max_seq_length" in dpo.why
    seq = int(dpo.why.split("--dpo_max_seq_length ")[1].split()[0])
    assert plan_stages.dpo_memory(cfg, "unsloth", seq) <= 23.5 * GiB < plan_stages.dpo_memory(cfg, "unsloth", seq + 256)
    with pytest.raises(UsageError, match="not enough GPU memory for DPO through unsloth"):
        plan_stages.require_dpo_fit(cfg, "unsloth")
    plan_stages.require_dpo_fit(profile(P14, dpo=True, dpo_max_seq_length=seq), "unsloth")


def test_7b_on_an_80_gb_h100_with_128_gb_ram(monkeypatch):
    machine(monkeypatch, 80, 128)
    cfg = profile(P7)
    lines, text = by_stage(cfg)
    assert all(ln.ok for ln in lines.values()), [ln for ln in lines.values() if not ln.ok]
    assert lines["train"].action == "runs (unsloth)" and 20 * GiB < lines["train"].gpu < 79.5 * GiB
    assert lines["merge"].action == "in_memory"  # 7.6B x 8 bytes = 57 GiB of 128
    for name in cfg.eval.eval_models:
        assert lines[f"eval {name}"].action in ("bf16", "cuda (llama.cpp)"), name
    assert "an 80 GB H100/H200 class card" in text
    # DPO at batch 4 x (chosen + rejected) x 4096 tokens holds ~80 GB of logits: refused, with a length that fits
    dpo = by_stage(profile(P7, dpo=True))[0]["dpo"]
    assert not dpo.ok and "--dpo_max_seq_length" in dpo.why
    # the same profile on a machine with 48 GB of RAM: the merge goes by shard
    machine(monkeypatch, 80, 48)
    assert by_stage(cfg)[0]["merge"].action == "by_shard"


def test_gguf_eval_on_a_cpu_build_of_llama_cpp_says_so(monkeypatch):
    machine(monkeypatch, 24, 64, llama_cuda=False)
    lines, text = by_stage(profile(P14))
    q4 = lines["eval Q4_K_M"]
    assert q4.action == "cpu (llama.cpp)" and q4.gpu == 0 and "rebuild it with CUDA" in q4.why
    machine(monkeypatch, 24, 64, llama_cuda=True)
    fast = by_stage(profile(P14))[0]["eval Q4_K_M"]
    assert fast.action == "cuda (llama.cpp)" and fast.seconds < q4.seconds / 10


def test_merge_and_export_refuse_when_the_disk_is_short(monkeypatch):
    machine(monkeypatch, 24, 64, disk_gib=40)
    lines, _ = by_stage(profile(P14))
    assert not lines["merge"].ok and "free disk space" in lines["merge"].why
    assert not lines["export"].ok and "drop quant types" in lines["export"].why


def test_dry_run_prints_every_stage_line(monkeypatch, capsys):
    from fintune.cli import run_main as main

    machine(monkeypatch, 24, 64)
    assert main(["--config", str(P14), "--backend", "unsloth", "--dpo", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "fits a card of 24 GB: yes" in out  # the training table, as before
    assert "every stage on this machine: GPU 23.5 GiB free of 24.0, RAM 64.0 GiB available" in out
    rows = {l.split()[0] + " " + l.split()[1] if l.split()[0] == "eval" else l.split()[0]: l
            for l in out.splitlines() if l.startswith("  ") and l.split() and
            l.split()[0] in ("train", "dpo", "merge", "export", "eval")}
    assert set(rows) >= {"train", "dpo", "merge", "export", "eval base", "eval adapter", "eval Q8_0", "eval Q4_K_M"}
    assert "runs (unsloth)" in rows["train"] and "refuses" in rows["dpo"] and "by_shard" in rows["merge"]
    assert "4-bit" in rows["eval adapter"] and "min" in rows["eval Q4_K_M"]


# ---- merge on a hub id (defect 2), end to end ----------------------------------------

@pytest.fixture(scope="module")
def hub_base(tmp_path_factory, smollm2_dir):
    """A 16-layer random Llama (its linear layers outweigh the embedding, as a real
    model's do) saved in 10 MB bf16 shards into a Hugging Face cache as some-org/tiny-merge,
    with a LoRA adapter trained on nothing (random B) and its record naming the hub id."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from fintune.adapters import ADAPTER_RECORD

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=1024, num_hidden_layers=16,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    root = tmp_path_factory.mktemp("hub")
    snap = root / "hub" / "models--some-org--tiny-merge" / "snapshots" / ("a" * 40)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(snap, max_shard_size="10MB")
    tok.save_pretrained(snap)
    (root / "hub" / "models--some-org--tiny-merge" / "refs").mkdir()
    (root / "hub" / "models--some-org--tiny-merge" / "refs" / "main").write_text("a" * 40)
    peft = get_peft_model(model.float(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                                                    init_lora_weights=False))
    adapter = root / "adapter"
    peft.save_pretrained(adapter)
    tok.save_pretrained(adapter)
    (adapter / ADAPTER_RECORD).write_text(json.dumps({"base_model": "some-org/tiny-merge",
                                                      "base_model_path": "some-org/tiny-merge"}))
    return root


def test_merge_of_a_hub_id_goes_by_shard_when_ram_is_short(hub_base, monkeypatch, tmp_path, caplog):
    """Before: _param_count returned 0 for a hub id, so `auto` always merged in memory."""
    import huggingface_hub.constants as hfc

    from fintune import merge

    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(hub_base / "hub"))
    n = sum(Shapes.of(model_config("some-org/tiny-merge")).params())
    assert 25e6 < n < 35e6  # the config was read from the cache, offline
    machine(monkeypatch, None, ram_gib=(8 * n * 1.1) / GiB)  # in memory needs 8n: not within 80% of this
    cfg = build_config(overrides={"base_model": "some-org/tiny-merge", "lora_output_dir": str(hub_base / "adapter"),
                                  "merged_model_dir": str(tmp_path / "merged")})
    with caplog.at_level(logging.INFO, logger="fintune"):
        out = merge.run(cfg)
    assert json.loads((out / "fintune_merge.json").read_text())["merge_mode"] == "by_shard"
    assert "merge: by_shard" in caplog.text
    # and with too little RAM even for one shard it stops before loading, with the plan
    machine(monkeypatch, None, ram_gib=20e6 / GiB)
    with pytest.raises(UsageError, match="by_shard needs .* GiB RAM.*fix: a machine with more RAM"):
        merge.run(build_config(overrides={"base_model": "some-org/tiny-merge",
                                          "lora_output_dir": str(hub_base / "adapter"),
                                          "merged_model_dir": str(tmp_path / "merged2")}))
    assert not (tmp_path / "merged2").exists()


def test_eval_stage_loads_hf_models_in_4bit_and_leaves_out_what_does_not_fit(monkeypatch, caplog):
    """Defect 1: on a 24 GB card the 14B HF models were loaded whole in bf16 (29.5 GB).
    The stage now builds each runner as its plan line says: 4-bit, or not at all."""
    from fintune.eval import stage

    machine(monkeypatch, 24, 64)
    made = []

    class Recorder:
        def __init__(self, model_dir, adapter=None, name=None, sampling=None, load_in_4bit=False):
            made.append((name, load_in_4bit))

    monkeypatch.setattr(stage, "HFRunner", Recorder)
    cfg = profile(P14, eval_models="base,adapter,merged,F16")
    with caplog.at_level(logging.INFO, logger="fintune"):
        names = []
        for name, make, gguf in stage.runners(cfg, "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"):
            names.append(name)
            make(None)
    assert names == ["base", "adapter", "merged"]
    assert made == [("base", True), ("adapter", True), ("merged", True)]
    assert "eval: F16 left out of the report: needs" in caplog.text


def test_a_gpu_profile_without_cuda_refuses_to_train_before_loading(monkeypatch, tmp_path):
    """Without CUDA the PEFT backend would load the 14B base in fp32 on the CPU (59 GB of
    weights, 4096-token rows of fp32 activations and logits besides) and die at the load
    or in the first step; the stage stops first, naming the fix.
    The CPU default still plans to run."""
    from fintune.train import trainer

    machine(monkeypatch, None, 64)
    lines, text = by_stage(profile(P14), backend="peft")
    assert not lines["train"].ok and lines["train"].action == "refuses" and lines["train"].ram > 55 * GiB
    assert "no CUDA GPU" in text and "--config cpu-smollm2" in text
    cpu_lines, _ = by_stage(profile(ROOT / "configs" / "cpu-smollm2.yaml"), backend="peft")
    assert cpu_lines["train"].ok and cpu_lines["train"].ram < 6 * GiB  # measured peak RSS: 3.0 GB

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("fintune.train.backends.load_peft", no_load)
    monkeypatch.setattr("fintune.models.resolve_base_model", lambda name: name)
    cfg = profile(P14, backend="peft", data_dir=str(tmp_path))
    with pytest.raises(UsageError, match=r"in fp32, \d+\.\d GiB RAM, 64.0 available"):
        trainer.run(cfg)
