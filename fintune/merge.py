"""Merge stage: LoRA adapter + 16-bit base -> one FP16 checkpoint.

The base is reloaded from its 16-bit files (never the 4-bit training weights),
the adapter is merged with fp32 arithmetic and the result saved as fp16
safetensors with the tokenizer, chat template and generation config.

Two ways, same result:
- ``in_memory``: PEFT's merge_and_unload on the whole model; logits of
  base+adapter and of the saved merged model are compared on a few prompts and
  the maximum difference is recorded. Needs RAM for the model in fp32, twice.
- ``by_shard``: one safetensors shard at a time, W += scale * B @ A per LoRA
  pair; peak RAM is about one shard. For machines whose RAM is smaller than the
  model. ``auto`` picks it when the in-memory path would not fit.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from fintune.adapters import final_adapter_dir, read_adapter_record
from fintune.config import PipelineConfig
from fintune.errors import MissingError, UsageError
from fintune.manifest import atomic_path, sha256_file, write_json_atomic
from fintune.models import local_dir
from fintune.plan.lines import this_machine
from fintune.plan.stages import merge_line, render_stages
from fintune.prompts import user_prompt

log = logging.getLogger(__name__)
MERGE_RECORD = "fintune_merge.json"
VERIFY_QUESTIONS = ["What is the Sharpe ratio of a fund returning 12% with 15% volatility and a 3% risk-free rate?",
                    "A stock fell from $80 to $60. What was the drawdown in percent?"]


def run(cfg: PipelineConfig) -> Path:
    adapter_dir = final_adapter_dir(cfg)
    record = read_adapter_record(adapter_dir)
    base_path = record["base_model_path"]
    mode = plan_mode(cfg, base_path)
    log.info("merge (%s): %s + %s -> %s", mode, base_path, adapter_dir, cfg.export.merged_model_dir)
    merge = merge_in_memory if mode == "in_memory" else merge_by_shard
    return merge(Path(base_path), adapter_dir, Path(cfg.export.merged_model_dir), record)


def plan_mode(cfg: PipelineConfig, base_path: str) -> str:
    """The merge mode the plan picks on this machine, before anything loads: sizes from
    the base's config (a hub id's too), RAM and disk as the machine reports them;
    a merge that cannot fit stops here with the plan and the fix."""
    host = this_machine(cfg)
    line = merge_line(cfg, host, base_path)
    if not line.ok:
        raise UsageError(f"merge: {line.why}\n" + render_stages(cfg, [line], host, with_assumptions=False))
    log.info("merge: %s (%.1f GiB RAM of %.1f available, %.1f GiB disk of %.1f free; %s)", line.action,
             line.ram / 2**30, host.ram / 2**30, line.disk / 2**30, host.disk / 2**30, line.why)
    return line.action


def merge_in_memory(base_path: Path, adapter_dir: Path, out: Path, record: dict) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    if getattr(base.config, "quantization_config", None):
        raise UsageError(f"{base_path} is a quantized checkpoint; merging needs 16-bit base weights")
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    inputs = _verify_inputs(tokenizer, record.get("instruction", "final_answer"))
    with torch.no_grad():
        ref = model(**inputs).logits.float()
    merged = model.merge_and_unload()
    merged = merged.to(torch.float16)
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
            "dtype": "float16", "max_logit_diff": max_diff, "merge_mode": "in_memory",
            "chat_template_family": record.get("chat_template_family")})
    return out


def _verify_inputs(tokenizer, instruction: str = "final_answer"):
    """The check prompts, asked as the adapter was trained (its profile's data.instruction)."""
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": user_prompt(q, instruction=instruction)}],
                                           tokenize=False, add_generation_prompt=True)
             for q in VERIFY_QUESTIONS]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


# ---- shard-by-shard merge -------------------------------------------------

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt")


def merge_by_shard(base_path: Path, adapter_dir: Path, out: Path, record: dict) -> Path:
    base_dir = local_dir(base_path)
    if json.loads((base_dir / "config.json").read_text()).get("quantization_config"):
        raise UsageError(f"{base_dir} is a quantized checkpoint; merging needs 16-bit base weights")
    pairs, scale = _lora_pairs(adapter_dir)
    shards = sorted(base_dir.glob("*.safetensors"))
    if not shards:
        raise MissingError(f"{base_dir}: no .safetensors files to merge into")
    merged_names, worst = [], 0.0
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for shard in shards:
            names, err = _merge_shard(shard, tmp / shard.name, pairs, scale)
            merged_names += names
            worst = max(worst, err)
            log.info("merge: %s done", shard.name)
        if pairs:
            raise UsageError(f"adapter {adapter_dir} has LoRA weights for {len(pairs)} tensors the base "
                             f"{base_dir} does not contain, e.g. {next(iter(pairs))}")
        _copy_side_files(base_dir, adapter_dir, tmp)
        log.info("merge: %d LoRA pairs merged shard by shard; max fp16 rounding error %.3g",
                 len(merged_names), worst)
        write_json_atomic(tmp / MERGE_RECORD, {
            "base_model": record["base_model"], "base_model_path": str(base_path),
            "adapter_dir": str(adapter_dir),
            "adapter_sha256": sha256_file(adapter_dir / "adapter_model.safetensors"),
            "dtype": "float16", "merge_mode": "by_shard", "merged_tensors": len(merged_names),
            "max_fp16_rounding_error": worst, "chat_template_family": record.get("chat_template_family")})
    return out


def _merge_shard(shard: Path, dest: Path, pairs: dict, scale: float) -> tuple[list[str], float]:
    """One shard's tensors in fp16, W + scale * B @ A where a LoRA pair names them (taken
    out of `pairs`); (the merged names, the largest fp16 rounding error)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors, merged, worst = {}, [], 0.0
    with safe_open(shard, "pt") as f:
        for name in f.keys():
            w = f.get_tensor(name)
            if name in pairs:
                a, b = pairs.pop(name)
                exact = w.float() + scale * (b.float() @ a.float())
                w = exact.to(torch.float16)
                worst = max(worst, (w.float() - exact).abs().max().item())
                merged.append(name)
            elif w.is_floating_point():
                w = w.to(torch.float16)
            tensors[name] = w.contiguous()
    save_file(tensors, dest, metadata={"format": "pt"})
    return merged, worst


def _lora_pairs(adapter_dir: Path):
    """{base weight name: (A, B)} and the LoRA scale, from PEFT's saved files."""
    from safetensors.torch import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    unsupported = [k for k in ("use_dora", "fan_in_fan_out") if cfg.get(k)] + \
        (["modules_to_save"] if cfg.get("modules_to_save") else []) + \
        (["rank_pattern/alpha_pattern"] if cfg.get("rank_pattern") or cfg.get("alpha_pattern") else [])
    if unsupported:
        raise UsageError(f"{adapter_dir}: the shard-by-shard merge does not handle {unsupported}; "
                         "use --merge_mode in_memory")
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    raw = load_file(adapter_dir / "adapter_model.safetensors")
    pairs = {}
    for key, a in raw.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        pairs[module + ".weight"] = (a, raw[key.replace(".lora_A.", ".lora_B.")])
    return pairs, scale


def _copy_side_files(base_dir: Path, adapter_dir: Path, tmp: Path) -> None:
    """Config (now fp16), generation config, shard index, and the tokenizer the
    adapter was trained with (it carries the chat template)."""
    config = json.loads((base_dir / "config.json").read_text())
    config["torch_dtype"] = config["dtype"] = "float16"
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("generation_config.json", "model.safetensors.index.json"):
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, tmp / name)
    for name in _TOKENIZER_FILES:
        if (adapter_dir / name).is_file():
            shutil.copy2(adapter_dir / name, tmp / name)

