"""Training stage: LoRA SFT with TRL's SFTTrainer, loss on the assistant reply only.

We tokenize ourselves (``templates.tokenize_example``) and hand TRL ``input_ids``
and ``labels``: the mask is then exactly "last assistant turn", whatever the chat
template does (DeepSeek-R1's drops reasoning from assistant turns otherwise).
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fintune import machine, models
from fintune.adapters import ADAPTER_RECORD, sft_dir
from fintune.config import PipelineConfig
from fintune.errors import TrainingInterrupted, UsageError
from fintune.jsonl import read_jsonl, write_jsonl
from fintune.manifest import atomic_path, write_json_atomic
from fintune.plan import training
from fintune.plan.lines import require_train_fit_on_cpu
from fintune.templates import tokenize_example, use_tools_template
from fintune.train import backends, signals
from fintune.train.chart import length_group_steps, plot_loss
from fintune.train.identity import identity_callback, resolve_checkpoint, run_identity
from fintune.train.loraplus import with_loraplus
from fintune.train.loss import lora_inputs_uncast, sft_trainer_class

log = logging.getLogger(__name__)


def build_dataset(rows: list[dict], tokenizer, family, max_len: int) -> tuple[list[dict], dict]:
    """Tokenize with the loss mask; rows over max_len are dropped and counted."""
    out, too_long = [], 0
    for row in rows:
        if "text" in row:  # plain-text sample: every token is trained, then EOS
            ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ex = {"input_ids": ids, "labels": list(ids)}
        else:
            ex = tokenize_example(tokenizer, family, row["messages"], row.get("tools"))
        if len(ex["input_ids"]) > max_len:
            too_long += 1
            continue
        if all(l == -100 for l in ex["labels"]):
            raise UsageError(f"row {row['id']}: no assistant token left unmasked")
        out.append(ex)
    if not out:
        raise UsageError("no training example fits max_seq_length; raise --max_seq_length")
    return out, {"kept": len(out), "dropped_too_long": too_long}


def pick_precision(cfg: PipelineConfig, on_cuda: bool) -> str:
    if cfg.train.precision != "auto":
        return cfg.train.precision
    import torch

    if on_cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    speedup = machine.bf16_matmul_speedup()
    choice = "bf16" if speedup > 1.2 else "fp32"
    if speedup == 0.0:
        log.info("train: CPU without bf16 instructions (%s) -> fp32", torch.backends.cpu.get_cpu_capability())
    else:
        log.info("train: CPU bf16/fp32 matmul speed ratio %.2f -> %s", speedup, choice)
    return choice


@dataclass
class Loaded:
    """The model a training run trains, and what was decided while loading it."""
    model: Any
    tokenizer: Any
    choice: backends.Choice
    model_path: str
    on_cuda: bool
    precision: str
    compiled: bool = False
    # inductor's instruction-set check, run beside the load; joined before the first step
    probe: Any = None


def run(cfg: PipelineConfig) -> Path:
    """The SFT step: load the base per backend, split the rows, train under the
    signal handler, save the adapter (or, with --dpo, the SFT adapter DPO starts from)."""
    if cfg.train.dpo and machine.world_size() > 1:
        raise UsageError("--dpo runs in a single process; train SFT under torchrun, then DPO without it")
    identity = run_identity(cfg)
    # before loading: another run's checkpoint is refused at once, not after minutes of loading
    resume = resolve_checkpoint(cfg.train.resume_from_checkpoint, cfg.train.checkpoint_dir, identity)
    loaded = load(cfg)
    # the tools-aware template: trained with, saved with the adapter, carried to the GGUF
    family = use_tools_template(loaded.tokenizer)
    train_ex, val_ex, stats = examples(cfg, loaded.tokenizer, family)
    trainer = make_trainer(cfg, loaded.model, loaded.tokenizer, train_ex, val_ex, loaded.precision,
                           loaded.on_cuda, loaded.compiled)
    trainer.add_callback(identity_callback(identity))
    result, elapsed = train(cfg, trainer, loaded, stats, resume)
    return save(cfg, trainer, loaded, family.name, stats, elapsed, result)


def load(cfg: PipelineConfig) -> Loaded:
    """The base with fresh LoRA weights, after the plan's check (refused before loading
    when it cannot fit)."""
    t = cfg.train
    backends.import_unsloth_first(cfg)  # before the plan's mem_get_info and pick_precision start CUDA
    choice = backends.choose_backend(t.backend)
    log.info("train: backend %s (%s)", choice.backend, choice.reason)
    on_cuda = machine.cuda_available()
    if on_cuda:
        training.require_fit(cfg, choice.backend)
    else:
        require_train_fit_on_cpu(cfg)
    model_path = models.resolve_base_model(cfg.model.base_model)
    precision = pick_precision(cfg, on_cuda)
    if choice.backend == "unsloth":
        model, tokenizer = backends.load_unsloth(cfg, model_path)
        if t.torch_compile:
            log.info("train: torch_compile left to Unsloth, which compiles its own kernels")
        if t.attention != "auto":
            log.info("train: train.attention %s not applied: Unsloth picks its own attention kernels", t.attention)
        return Loaded(model, tokenizer, choice, model_path, on_cuda, precision)
    # after pick_precision: the probe's compilers would skew its matmul timings
    probe = backends.start_isa_probe() if t.torch_compile and not on_cuda and machine.has_cpp_compiler() else None
    model, tokenizer = backends.load_peft(cfg, model_path, on_cuda, precision)
    compiled = bool(t.torch_compile and backends.compile_layers(model))
    return Loaded(model, tokenizer, choice, model_path, on_cuda, precision, compiled, probe)


def examples(cfg: PipelineConfig, tokenizer, family) -> tuple[list[dict], list[dict], dict]:
    """(training examples, validation examples, counts): train.jsonl shuffled with the
    run's seed, val_fraction of it held back for the eval loss."""
    t = cfg.train
    rows = list(read_jsonl(Path(cfg.data.data_dir) / "train.jsonl"))
    random.Random(t.train_seed).shuffle(rows)
    n_val = max(1, int(len(rows) * t.val_fraction)) if t.val_fraction > 0 else 0
    train_ex, stats = build_dataset(rows[n_val:], tokenizer, family, cfg.model.max_seq_length)
    val_ex, _ = build_dataset(rows[:n_val], tokenizer, family, cfg.model.max_seq_length) if n_val else ([], {})
    log.info("train: %d examples (%d dropped over max_seq_length=%d), %d validation, template %s",
             stats["kept"], stats["dropped_too_long"], cfg.model.max_seq_length, len(val_ex), family.name)
    return train_ex, val_ex, stats


def train(cfg: PipelineConfig, trainer, loaded: Loaded, stats: dict, resume: str | None) -> tuple[Any, float]:
    """Train (from the checkpoint `resume`, if any); a signal saves a checkpoint and stops
    with TrainingInterrupted. Returns TRL's result and the seconds it took."""
    t = cfg.train
    if resume:
        log.info("train: resuming from %s (weights, optimizer, scheduler, RNG and data position)", resume)
    session = session_tokens_callback()
    trainer.add_callback(session)
    if loaded.probe is not None:
        loaded.probe.join()
    start = time.time()
    # on a CPU in bf16, PEFT's fp32 cast of each LoRA input is pure copying (train/loss.py)
    uncast = not loaded.on_cuda and loaded.precision == "bf16" and loaded.choice.backend == "peft"
    with signals.checkpoint_on_signal(trainer) as stopper, lora_inputs_uncast(loaded.model, uncast):
        result = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.time() - start
    stats["tokens_this_run"] = session.tokens(trainer.state)
    if stopper.received:
        raise TrainingInterrupted(
            f"training stopped by {stopper.received} at step {trainer.state.global_step}; checkpoint saved in "
            f"{t.checkpoint_dir}; continue with --resume_from_checkpoint latest")
    return result, elapsed


def save(cfg: PipelineConfig, trainer, loaded: Loaded, family_name: str, stats: dict, elapsed: float,
         result) -> Path:
    t = cfg.train
    args = (cfg, trainer, loaded.tokenizer, loaded.model_path, loaded.choice, family_name, stats, elapsed, result)
    if trainer.args.world_size > 1:
        # DDP: rank 0 writes the adapter while the others wait for it
        if trainer.is_world_process_zero():
            save_adapter(*args)
        trainer.accelerator.wait_for_everyone()
        return Path(t.lora_output_dir)
    # with --dpo this is the SFT adapter; DPO (dpo.run) starts from it in a process of its own
    return save_adapter(*args, out=sft_dir(cfg) if t.dpo else Path(t.lora_output_dir))


def session_tokens_callback():
    """A callback that knows how many tokens this run trained: after a resume the
    trainer's count starts from the checkpoint's, so dividing it by this run's
    time overstated tokens/s (48,124 printed for ~8,000 real)."""
    from transformers import TrainerCallback

    class _SessionTokens(TrainerCallback):
        start = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = state.num_input_tokens_seen  # restored from the checkpoint by now

        def tokens(self, state) -> int:
            return state.num_input_tokens_seen - self.start

    return _SessionTokens()


def make_trainer(cfg, model, tokenizer, train_ex, val_ex, precision: str, on_cuda: bool, compiled: bool = False):
    """TRL's SFTTrainer on our tokenized examples. Our labels already mask everything
    but the reply, on every backend. Unsloth's train_on_responses_only is not applied
    on top: it starts every row's labels at -100 and unmasks only spans after a
    response marker, then drops rows left fully masked (unsloth_zoo 2026.10.9,
    dataset_utils.py train_on_responses_only: _train_on_responses_only and
    _filter_fully_masked), so plain-text rows would never train."""
    from datasets import Dataset

    t = cfg.train
    args = sft_args(cfg, precision, on_cuda, has_val=bool(val_ex))
    callbacks = []
    if val_ex and t.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(t.early_stopping_patience, t.early_stopping_threshold))
    # one CPU process: the label-positions loss (train/loss.py); else TRL's own
    trainer_class = sft_trainer_class(lean_loss=not on_cuda and machine.world_size() == 1)
    trainer_class = with_loraplus(trainer_class, cfg.lora.loraplus_lr_ratio)
    if compiled:
        trainer_class = backends.eager_evaluation(trainer_class)
    return trainer_class(model=model, args=args, processing_class=tokenizer,
                      train_dataset=Dataset.from_list(train_ex),
                      eval_dataset=Dataset.from_list(val_ex) if val_ex else None, callbacks=callbacks)


def sft_args(cfg, precision: str, on_cuda: bool, has_val: bool):
    from trl import SFTConfig

    t = cfg.train
    # transformers 5 has no warmup_ratio: a warmup_steps below 1 is the share of all steps
    # (training_args.py get_warmup_steps), so the ratio goes there
    return SFTConfig(
        output_dir=t.checkpoint_dir, per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs, max_steps=t.max_steps, lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, logging_steps=t.logging_steps,
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, seed=t.train_seed,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not on_cuda,
        optim=resolve_optim(t.optim, on_cuda),
        max_length=cfg.model.max_seq_length, packing=t.packing,
        gradient_checkpointing=t.gradient_checkpointing,
        neftune_noise_alpha=t.neftune_noise_alpha or None,
        eval_strategy="steps" if has_val else "no", eval_steps=t.eval_steps,
        # the checkpoint with the lowest eval loss is what gets saved as the adapter
        load_best_model_at_end=has_val, metric_for_best_model="eval_loss", greater_is_better=False,
        # Batches of similar length waste less compute on padding.
        train_sampling_strategy="group_by_length",
        report_to=["tensorboard"],
        dataloader_num_workers=0, include_num_input_tokens_seen="non_padding",
        # LoRA leaves most parameters frozen; skip DDP's search for unused ones
        ddp_find_unused_parameters=False,
    )


def resolve_optim(name: str, on_cuda: bool) -> str:
    """TRL/transformers optimizer name; "auto": 8-bit AdamW (bitsandbytes) on CUDA,
    as Unsloth's notebooks use; on CPU torch's fused AdamW (transformers' own
    default), one kernel for the 420 LoRA tensors instead of a loop over them:
    4 ms a step instead of 16 here (measured)."""
    from transformers.training_args import OptimizerNames

    if name == "auto":
        return "adamw_8bit" if on_cuda else "adamw_torch_fused"
    valid = [o.value for o in OptimizerNames]
    if name not in valid:
        raise UsageError(f"train.optim {name!r} is not an optimizer transformers knows; valid: {', '.join(valid)}")
    return name


def save_adapter(cfg, trainer, tokenizer, model_path, choice, family_name, stats, elapsed, result,
                 out: Path | None = None) -> Path:
    import torch

    out = out or Path(cfg.train.lora_output_dir)
    history = trainer.state.log_history
    trained_tokens = trainer.state.num_input_tokens_seen or None  # since step 0, resumed runs included
    session_tokens = stats.get("tokens_this_run") or 0
    with atomic_path(out) as tmp:
        trainer.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_jsonl(tmp / "train_log.jsonl", history)
        plot_loss(history, tmp / "loss.png", _length_group_steps(trainer))
        write_json_atomic(tmp / ADAPTER_RECORD, {
            "base_model": cfg.model.base_model, "base_model_path": model_path, "instruction": cfg.data.instruction,
            "backend": choice.backend, "backend_reason": choice.reason, "chat_template_family": family_name,
            "lora": cfg.section_dict("lora"), "train": cfg.section_dict("train"),
            "model": cfg.section_dict("model"), "data": stats,
            "global_step": trainer.state.global_step, "train_seconds": round(elapsed, 3),
            "best_checkpoint": trainer.state.best_model_checkpoint, "best_eval_loss": trainer.state.best_metric,
            "world_size": trainer.args.world_size,
            "train_loss": getattr(result, "training_loss", None),
            "peak_rss_mb": _peak_rss_mb(), "trained_tokens": trained_tokens,
            "tokens_per_second": round(session_tokens / elapsed, 1) if elapsed else None,
            "cuda_peak_mb": (torch.cuda.max_memory_allocated() >> 20) if torch.cuda.is_available() else None,
            "cuda_reserved_peak_mb": (torch.cuda.max_memory_reserved() >> 20) if torch.cuda.is_available() else None,
            "versions": _versions(),
        })
    log.info("train: %d steps in %.0fs, final loss %s -> %s", trainer.state.global_step, elapsed,
             getattr(result, "training_loss", "?"), out)
    log.info("train: %s trained tokens/s, peak RSS %d MB%s",
             f"{session_tokens / elapsed:.0f}" if session_tokens and elapsed else "?", _peak_rss_mb(),
             f", peak CUDA {torch.cuda.max_memory_allocated() >> 20} MB" if torch.cuda.is_available() else "")
    if trainer.state.best_model_checkpoint:
        log.info("train: best checkpoint by eval loss %.4f: %s (restored)", trainer.state.best_metric,
                 trainer.state.best_model_checkpoint)
    return out


def save_on_top(trainer, tokenizer, source: Path, out: Path, before: str, key: str, details: dict) -> Path:
    """Save an adapter trained on top of `source` (DPO, GRPO): the trained adapter only
    (TRL's frozen "ref" copy, where it made one, is not part of the result), its tokenizer,
    `source`'s logs kept as `{before}_*`, this step's log and plot, and `source`'s record
    with this step's `details` under `key`."""
    history = trainer.state.log_history
    record = json.loads((source / ADAPTER_RECORD).read_text())
    with atomic_path(out) as tmp:
        trainer.model.save_pretrained(tmp, selected_adapters=["default"])
        tokenizer.save_pretrained(tmp)
        for name in ("train_log.jsonl", "loss.png"):
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / f"{before}_{name}")
        write_jsonl(tmp / "train_log.jsonl", history)
        plot_loss(history, tmp / "loss.png", _length_group_steps(trainer))
        write_json_atomic(tmp / ADAPTER_RECORD, {**record, key: details})
    return out


def _length_group_steps(trainer) -> int | None:
    """Optimizer steps per length-sorted run of batches, where the trainer groups them by length."""
    if getattr(trainer.args, "train_sampling_strategy", None) != "group_by_length" or trainer.train_dataset is None:
        return None
    return length_group_steps(len(trainer.train_dataset),
                              trainer.args.train_batch_size * trainer.args.gradient_accumulation_steps)


def _peak_rss_mb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "unsloth"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
