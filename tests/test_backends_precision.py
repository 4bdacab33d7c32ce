"""Defect 4 of issue 30: the PEFT backend on CUDA without 4-bit loaded the base in
fp32 while the memory plan counts 2 bytes a weight. On CUDA the frozen base now
loads in the training precision; LoRA weights stay fp32 (peft 0.21.2,
mapping_func.py get_peft_model: autocast_adapter_dtype=True casts bf16/fp16
adapter weights to fp32). load_base moves nothing to a device, so it runs here."""
import pytest

from conftest import tiny_overrides
from fintune.config import build_config


@pytest.mark.parametrize("precision,dtype", [("bf16", "bfloat16"), ("fp16", "float16"), ("fp32", "float32")])
def test_cuda_base_in_training_precision_lora_in_fp32(tmp_path, tiny_llama_dir, precision, dtype):
    import torch
    from peft import LoraConfig, get_peft_model

    from fintune.train.backends import load_base

    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, load_in_4bit=False))
    model, _ = load_base(cfg, str(tiny_llama_dir), on_cuda=True, precision=precision)
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"]))
    lora = [p for n, p in peft.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)
