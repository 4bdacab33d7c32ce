"""Merge: the shard-by-shard path (for RAM smaller than the model) gives the
same checkpoint as PEFT's in-memory merge, loads strictly, and matches
base + adapter logits."""
import json
import logging

import pytest

from fintune.merge import merge_by_shard, merge_in_memory
from fintune.adapters import ADAPTER_RECORD


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_llama_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    # init_lora_weights=False: B is random too, so the merge has something to add
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    (out / ADAPTER_RECORD).write_text(json.dumps({"base_model": str(tiny_llama_dir),
                                                  "base_model_path": str(tiny_llama_dir),
                                                  "chat_template_family": "chatml"}))
    return out


def _record(adapter_dir):
    return json.loads((adapter_dir / ADAPTER_RECORD).read_text())


def test_by_shard_equals_in_memory_and_loads_strictly(tmp_path, tiny_llama_dir, adapter_dir):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    a = merge_in_memory(tiny_llama_dir, adapter_dir, tmp_path / "mem", _record(adapter_dir))
    b = merge_by_shard(tiny_llama_dir, adapter_dir, tmp_path / "shard", _record(adapter_dir))
    sa, sb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sa.keys() == sb.keys()
    base = load_file(tiny_llama_dir / "model.safetensors")
    changed = [k for k in sb if not torch.allclose(sb[k].float(), base[k].float(), atol=1e-3)]
    assert len(changed) == 3 * 2  # q, v, down in each of 2 layers
    for k in sa:
        assert sb[k].dtype == torch.float16
        assert (sa[k].float() - sb[k].float()).abs().max().item() <= 1e-3, k
    model, info = AutoModelForCausalLM.from_pretrained(b, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    rec = json.loads((b / "fintune_merge.json").read_text())
    assert rec["merge_mode"] == "by_shard" and rec["merged_tensors"] == 6
    assert (b / "tokenizer.json").is_file() and (b / "chat_template.jinja").is_file()


def test_by_shard_logits_match_base_plus_adapter(tmp_path, tiny_llama_dir, adapter_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = merge_by_shard(tiny_llama_dir, adapter_dir, tmp_path / "shard", _record(adapter_dir))
    ids = torch.tensor([[1, 50, 300, 4000, 77, 9]])
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), adapter_dir)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        diff = (ref(ids).logits - merged(ids).logits).abs().max().item()
    assert diff < 0.05


def test_auto_merges_in_memory_with_ram_to_spare_and_refuses_without(tmp_path, tiny_llama_dir, adapter_dir,
                                                                      monkeypatch, caplog):
    """The plan's merge line decides (fintune/plan/stages.py merge_line; the hub-id case
    and by_shard are in tests/test_stage_plan.py): with 1 MiB of RAM even one shard does
    not fit, and the stage stops before loading anything, with the fix."""
    from conftest import tiny_overrides
    from fintune import merge
    from fintune.config import build_config
    from fintune import machine

    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, lora_output_dir=str(adapter_dir)))
    monkeypatch.setattr(machine, "ram_available_bytes", lambda: 64 << 30)
    with caplog.at_level(logging.INFO, logger="fintune"):
        out = merge.run(cfg)
    assert "merge: in_memory" in caplog.text
    assert json.loads((out / "fintune_merge.json").read_text())["merge_mode"] == "in_memory"
    monkeypatch.setattr(machine, "ram_available_bytes", lambda: 1 << 20)  # 1 MiB
    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, lora_output_dir=str(adapter_dir),
                                                merged_model_dir=str(tmp_path / "m2")))
    with pytest.raises(ValueError, match="needs .* GiB RAM, 0.0 available; fix: a machine with more RAM"):
        merge.run(cfg)
    assert not (tmp_path / "m2").exists()


def test_dora_adapter_is_refused_by_shard(tmp_path, tiny_llama_dir, adapter_dir):
    import shutil

    bad = tmp_path / "dora"
    shutil.copytree(adapter_dir, bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        merge_by_shard(tiny_llama_dir, bad, tmp_path / "out", _record(bad))
    assert not (tmp_path / "out").exists()
