"""Merge stage: LoRA adapter + 16-bit base -> one FP16 checkpoint.

The base is reloaded in fp32 (never the 4-bit training weights), the adapter is
merged in fp32 and the result saved as fp16 safetensors with the tokenizer, chat
template and generation config. Logits of base+adapter and of the saved merged
model are compared on a few prompts; the maximum difference is recorded.
"""
from __future__ import annotations

import logging
from pathlib import Path

from fintune.config import PipelineConfig
from fintune.manifest import atomic_path, sha256_file, write_json_atomic
from fintune.prompts import user_prompt
from fintune.train.trainer import read_adapter_record

log = logging.getLogger(__name__)
MERGE_RECORD = "fintune_merge.json"
VERIFY_QUESTIONS = ["What is the Sharpe ratio of a fund returning 12% with 15% volatility and a 3% risk-free rate?",
                    "A stock fell from $80 to $60. What was the drawdown in percent?"]


def run(cfg: PipelineConfig) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir = Path(cfg.train.lora_output_dir)
    record = read_adapter_record(adapter_dir)
    base_path = record["base_model_path"]
    log.info("merge: %s + %s -> %s", base_path, adapter_dir, cfg.export.merged_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    if getattr(base.config, "quantization_config", None):
        raise ValueError(f"{base_path} is a quantized checkpoint; merging needs 16-bit base weights")
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    inputs = _verify_inputs(tokenizer)
    with torch.no_grad():
        ref = model(**inputs).logits.float()
    merged = model.merge_and_unload()
    merged = merged.to(torch.float16)
    out = Path(cfg.export.merged_model_dir)
    with atomic_path(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True, max_shard_size="2GB")
        tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
        with torch.no_grad():
            got = reloaded(**inputs).logits.float()
        max_diff = (got - ref).abs().max().item()
        log.info("merge: max |logit difference| adapter vs merged fp16 = %.4g (logit range %.1f)",
                 max_diff, (ref.max() - ref.min()).item())
        write_json_atomic(tmp / MERGE_RECORD, {
            "base_model": record["base_model"], "base_model_path": base_path,
            "adapter_dir": str(adapter_dir),
            "adapter_sha256": sha256_file(adapter_dir / "adapter_model.safetensors"),
            "dtype": "float16", "max_logit_diff": max_diff,
            "chat_template_family": record.get("chat_template_family")})
    return out


def _verify_inputs(tokenizer):
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": user_prompt(q)}],
                                           tokenize=False, add_generation_prompt=True)
             for q in VERIFY_QUESTIONS]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
