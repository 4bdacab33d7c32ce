"""Which run a checkpoint belongs to.

Several runs share one checkpoint folder (a finished run's checkpoints stay there), so
the step number alone does not say whose a checkpoint is: resuming another run's would
fail on a shape mismatch (another lora_r) or, worse, silently continue it with its own
settings. Each checkpoint gets a record of the settings that shape the adapter and its
optimizer, and `--resume_from_checkpoint latest` takes the newest one whose record
matches this run's.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from fintune.config import PipelineConfig, format_value
from fintune.errors import MissingError, UsageError
from fintune.manifest import write_json_atomic

log = logging.getLogger(__name__)
IDENTITY_FILE = "fintune_run.json"
# the train settings that change the weights or the optimizer's state; the others
# (where files go, how often to log or save, kernels, allocator) do not
TRAIN_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
              "gradient_accumulation_steps", "lr_scheduler_type", "warmup_ratio", "weight_decay", "optim",
              "packing", "neftune_noise_alpha", "train_seed", "val_fraction")
MODEL_KEYS = ("base_model", "max_seq_length", "load_in_4bit")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_identity(cfg: PipelineConfig) -> dict:
    """Flat {setting: value} of everything that shapes this run's adapter and optimizer,
    the training rows' sha256 included."""
    train_file = Path(cfg.data.data_dir) / "train.jsonl"
    values = {k: getattr(cfg.model, k) for k in MODEL_KEYS}
    values.update(cfg.section_dict("lora"))
    values.update({k: getattr(cfg.train, k) for k in TRAIN_KEYS})
    values["train.jsonl sha256"] = file_sha256(train_file)[:16] if train_file.is_file() else None
    return values


def differences(theirs: dict, ours: dict) -> list[str]:
    """'lora_r 16 (this run: 8)' for each setting that differs."""
    return [f"{k} {format_value(theirs.get(k))} (this run: {format_value(ours.get(k))})"
            for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]


def read_identity(checkpoint: Path) -> dict | None:
    path = Path(checkpoint) / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["settings"]
    except (ValueError, KeyError, TypeError):
        return None


def write_identity(checkpoint: Path, identity: dict) -> None:
    write_json_atomic(Path(checkpoint) / IDENTITY_FILE, {"settings": identity})


def identity_callback(identity: dict):
    """A callback that records `identity` in each checkpoint the trainer saves (it calls
    on_save right after writing checkpoint-<global_step> into output_dir: transformers
    5.17 Trainer._maybe_log_save_evaluate)."""
    from transformers import TrainerCallback

    class _RecordIdentity(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                write_identity(folder, identity)

    return _RecordIdentity()


def _checkpoints(folder: Path) -> list[Path]:
    found = [p for p in folder.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def resolve_checkpoint(value: str | None, checkpoint_dir: str | Path, identity: dict | None = None) -> str | None:
    """PATH, or 'latest' / 'checkpoint-latest' for the newest checkpoint-N of this run
    (whose recorded identity matches `identity`; any, when `identity` is None).
    Another run's checkpoint is refused, naming the settings that differ."""
    if not value:
        return None
    if value not in ("latest", "checkpoint-latest"):
        if not Path(value).is_dir():
            raise MissingError(f"--resume_from_checkpoint {value}: no such checkpoint directory")
        theirs = read_identity(Path(value))
        if identity is not None and theirs is not None and theirs != identity:
            raise UsageError(f"--resume_from_checkpoint {value}: another run's checkpoint; it differs in "
                             f"{'; '.join(differences(theirs, identity))}")
        if identity is not None and theirs is None:
            log.warning("train: %s has no %s; resuming it without checking its settings", value, IDENTITY_FILE)
        return value
    found = _checkpoints(Path(checkpoint_dir))
    if not found:
        raise MissingError(f"--resume_from_checkpoint {value}: no checkpoint-N in {checkpoint_dir}")
    if identity is None:
        return str(found[0])
    for p in found:
        if read_identity(p) == identity:
            return str(p)
    newest = found[0]
    theirs = read_identity(newest)
    why = ("it records no settings" if theirs is None
           else "it differs in " + "; ".join(differences(theirs, identity)))
    raise UsageError(f"--resume_from_checkpoint {value}: no checkpoint of this run in {checkpoint_dir}; the newest, "
                     f"{newest.name}, is another run's ({why}); drop the flag to start afresh")
