"""--quick: every stage on a slice, in a folder of its own, to check a setup end to end.

A few training steps, a small data set, the first quantization type only and a
handful of eval items, written under ``<manifest folder>/quick/`` with its own
manifest: the real run's manifest and artifacts are never read or touched.
Settings given as flags still win over the slice; output paths always move.
"""
from __future__ import annotations

from pathlib import Path

from fintune.config import PipelineConfig, build_config

# config fields that name what a run writes
OUTPUT_PATHS = ("data_dir", "lora_output_dir", "checkpoint_dir", "merged_model_dir", "gguf_f16_path",
                "gguf_q4_path", "gguf_q8_path", "modelfile_path", "eval_dir")
SLICE = {"num_generated": 120, "max_steps": 4, "save_steps": 2, "eval_steps": 2, "logging_steps": 1,
         "eval_limit": 4, "external_eval_limit": 4, "eval_max_new_tokens": 48, "hub_limit": 50,
         "market_samples": 20, "grpo_max_steps": 2, "grpo_max_completion_length": 48}


def quick_root(manifest: Path) -> Path:
    return manifest.parent / "quick"


def _moved(value: str, base: Path, root: Path) -> str:
    p = Path(value)
    try:
        return str(root / p.relative_to(base))
    except ValueError:
        return str(root / p.name)


def quick_config(cfg: PipelineConfig, manifest: Path, explicit: set[str]) -> tuple[PipelineConfig, Path]:
    """(the sliced config, its manifest); fields in `explicit` (given as flags) are kept."""
    root, base = quick_root(manifest), manifest.parent
    values = {s: cfg.section_dict(s) for s in ("model", "data", "lora", "train", "export", "eval")}
    flat = {k: v for section in values.values() for k, v in section.items()}
    changes = {k: v for k, v in SLICE.items() if k not in explicit}
    # outputs move even when given as flags: a quick run never writes where a real one does
    changes.update({k: _moved(flat[k], base, root) for k in OUTPUT_PATHS})
    if "quant_types" not in explicit:
        changes["quant_types"] = flat["quant_types"][:1]
    if "eval_models" not in explicit:
        first = flat["quant_types"][0] if "quant_types" in explicit else changes["quant_types"][0]
        keep = {"base", "adapter", "merged", first}
        changes["eval_models"] = [m for m in flat["eval_models"] if m in keep] or ["base", first]
    for section, fields in values.items():
        for k in fields:
            if k in changes:
                fields[k] = changes[k]
    return build_config(values, profile=f"{cfg.profile} (quick)"), root / "run_manifest.json"
