"""Typed configuration: defaults, then a YAML file, then command-line flags.

Each concern has a small dataclass validated in ``__post_init__``. A YAML file
nests fields under their section (``train: {learning_rate: 2e-4}``); on the
command line every field is a flat flag named after it (``--learning_rate``), so
field names are unique across sections. Unknown keys and flags are errors that
list the valid names.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fintune.errors import FintuneError

EMBEDDED_BASE = "embedded:smollm2-135m-instruct"
ATTENTION_CHOICES = ("auto", "eager", "sdpa", "flash_attention_2", "flex_attention")
QWEN_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ConfigError(FintuneError, ValueError):
    """A configuration value or key is invalid; the message names it."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class ModelConfig:
    base_model: str = EMBEDDED_BASE
    max_seq_length: int = 1024
    load_in_4bit: bool = False

    def __post_init__(self):
        _check(bool(self.base_model), "model.base_model must not be empty")
        _check(self.max_seq_length >= 32, f"model.max_seq_length must be >= 32, got {self.max_seq_length}")


@dataclass
class DataConfig:
    dataset_folder: str = "datasets"
    data_dir: str = "outputs/data"
    generators: list[str] = field(default_factory=lambda: ["quant"])
    num_generated: int = 2000
    heldout_fraction: float = 0.1
    data_seed: int = 42
    # fraction of generated training questions whose phrasing is rewritten (value order,
    # ask first or last, wording of the ask and units; fintune/data/paraphrase.py)
    paraphrase: float = 0.0
    max_reject_fraction: float = 0.05
    # per-file format when detection is not wanted: ["prices.csv=alpaca", ...]
    dataset_formats: list[str] = field(default_factory=list)
    # preference pairs also train SFT on their chosen reply
    dpo_to_sft: bool = True
    # a JSONL line longer than this is rejected, not parsed
    max_line_bytes: int = 1_000_000
    # a user file that yields no row (empty, blank lines only, every row
    # rejected, unreadable) fails the stage instead of being listed in the summary
    strict_inputs: bool = False
    # tokenize every row with the base model's tokenizer: length, BOS, special tokens, loss mask
    token_check: bool = True
    # instruction corpora via datasets.load_dataset: hub ids or local files
    hub_datasets: list[str] = field(default_factory=list)
    hub_optional: bool = True
    hub_limit: int = 20000
    # market-data questions from OHLCV CSVs and/or yfinance tickers
    market_files: list[str] = field(default_factory=list)
    market_tickers: list[str] = field(default_factory=list)
    market_samples: int = 300
    market_optional: bool = True
    # Evaluation sets that must never reach training (globs; missing ones are fine).
    contamination_files: list[str] = field(default_factory=lambda: ["../shared/eval/*.jsonl"])
    # the answer instruction of every prompt, trained and evaluated alike (fintune/prompts.py INSTRUCTIONS)
    instruction: str = "final_answer"

    def __post_init__(self):
        from fintune.prompts import INSTRUCTIONS

        _check(self.instruction in INSTRUCTIONS.names(), f"data.instruction: unknown instruction "
               f"{self.instruction!r}; valid names: {', '.join(INSTRUCTIONS.names())}")
        _check(self.num_generated >= 0, "data.num_generated must be >= 0")
        _check(0.0 < self.heldout_fraction < 0.5, "data.heldout_fraction must be in (0, 0.5)")
        _check(0.0 <= self.paraphrase <= 1.0, "data.paraphrase must be in [0, 1]")
        _check(0.0 <= self.max_reject_fraction <= 1.0, "data.max_reject_fraction must be in [0, 1]")
        _check(self.max_line_bytes > 0, "data.max_line_bytes must be > 0")
        for item in self.dataset_formats:
            _check(item.count("=") == 1 and all(item.split("=")),
                   f"data.dataset_formats entries look like FILE=FORMAT, got {item!r}")


@dataclass
class LoraConfig:
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(QWEN_LORA_TARGETS))
    # LoRA on the last N decoder layers only (0 = every layer): backpropagation
    # then stops below them, which is most of a CPU step's time on a small model
    lora_top_layers: int = 0
    # LoRA+: LoRA B learns this many times faster than LoRA A (0 = plain LoRA, one
    # learning rate); LLaMA-Factory's and Axolotl's `loraplus_lr_ratio`, PEFT's optimizer
    loraplus_lr_ratio: float = 0.0

    def __post_init__(self):
        _check(self.lora_r > 0, f"lora.lora_r must be > 0, got {self.lora_r}")
        _check(self.lora_top_layers >= 0, f"lora.lora_top_layers must be >= 0, got {self.lora_top_layers}")
        _check(self.lora_alpha > 0, f"lora.lora_alpha must be > 0, got {self.lora_alpha}")
        _check(0.0 <= self.lora_dropout < 1.0, "lora.lora_dropout must be in [0, 1)")
        _check(len(self.target_modules) > 0, "lora.target_modules must not be empty")
        _check(self.loraplus_lr_ratio == 0 or self.loraplus_lr_ratio >= 1,
               f"lora.loraplus_lr_ratio must be 0 (off) or >= 1, got {self.loraplus_lr_ratio}")

    def layer_count(self, n_layers: int) -> int:
        """How many of a model's `n_layers` decoder layers get LoRA."""
        return min(self.lora_top_layers, n_layers) if self.lora_top_layers else n_layers


@dataclass
class TrainConfig:
    backend: str = "auto"  # auto | unsloth | peft
    lora_output_dir: str = "outputs/financial_lora"
    checkpoint_dir: str = "outputs/checkpoints"
    val_fraction: float = 0.05
    eval_steps: int = 50
    learning_rate: float = 2e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    logging_steps: int = 10
    save_steps: int = 100
    save_total_limit: int = 2
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    # transformers/TRL optimizer name; auto = adamw_8bit on CUDA (Unsloth's notebooks;
    # paged_adamw_8bit for small cards), adamw_torch_fused on CPU
    optim: str = "auto"
    # memory allocator of the CPU training process: glibc's fragments over a run
    # (RSS 2.2 -> 5.4 GB, tokens/s 541 -> ~400 over 140 steps, measured) and
    # mimalloc (the cmeel-mimalloc wheel) does not; "system" keeps glibc's
    cpu_allocator: str = "mimalloc"
    packing: bool = False
    # TRL turns it on by default; it trades ~30% step time for activation memory,
    # which a small model on CPU does not need.
    gradient_checkpointing: bool = True
    # torch.compile each decoder layer (PEFT backend; Unsloth compiles its own kernels):
    # fuses the norms, rotary and activations that run memory-bound in eager mode.
    # Costs a compilation at the first step and needs a C++ compiler on a CPU.
    torch_compile: bool = False
    # transformers' attn_implementation for training (PEFT backend): auto = "eager" on a
    # CPU training in bf16 with compiled layers and short rows (inductor then fuses the scores,
    # mask and softmax with the rest of the layer, faster than the SDPA kernel here; see
    # backends.attention_for), else transformers' default (sdpa)
    attention: str = "auto"
    # NEFTune (TRL's neftune_noise_alpha): uniform noise of this scale on the input
    # embeddings while training; 0 = off
    neftune_noise_alpha: float = 0.0
    train_seed: int = 3407
    # stop when eval loss has not improved by more than the threshold for this
    # many evaluations (0 = never); the best checkpoint is restored at the end
    early_stopping_patience: int = 3
    early_stopping_threshold: float = 0.0
    # DPO after SFT on the preference pairs of the data stage (TRL DPOTrainer),
    # starting from the SFT adapter, which is also the reference policy
    dpo: bool = False
    dpo_beta: float = 0.1
    dpo_learning_rate: float = 5e-6
    dpo_max_steps: int = -1  # -1: one epoch over the pairs
    # longest chosen or rejected row DPO trains on (0: model.max_seq_length); DPO runs
    # both through the model at once and holds their logits, so it may need less
    dpo_max_seq_length: int = 0
    # GRPO after SFT (and DPO) on the training split's checkable questions, rewarded by
    # the eval's scorer (fintune/train/rewards.py); TRL's GRPOConfig names without the
    # grpo_ prefix (fintune/train/grpo.py grpo_args)
    grpo: bool = False
    grpo_num_generations: int = 4        # replies sampled per prompt (the group)
    grpo_prompts_per_step: int = 1       # prompts (groups) per optimizer step
    grpo_max_completion_length: int = 192
    grpo_beta: float = 0.0               # KL to the reference; 0: no reference pass (TRL's default)
    grpo_learning_rate: float = 5e-6
    grpo_max_steps: int = 20
    grpo_temperature: float = 1.0
    # reward -grpo_length_penalty x (reply tokens / grpo_max_completion_length); 0 = off
    grpo_length_penalty: float = 0.0
    grpo_save_steps: int = 10
    resume_from_checkpoint: Optional[str] = None

    def __post_init__(self):
        _check(self.backend in ("auto", "unsloth", "peft"),
               f"train.backend must be one of auto, unsloth, peft; got {self.backend!r}")
        _check(self.cpu_allocator in ("mimalloc", "system"),
               f"train.cpu_allocator must be mimalloc or system; got {self.cpu_allocator!r}")
        _check(self.attention in ATTENTION_CHOICES,
               f"train.attention must be one of {', '.join(ATTENTION_CHOICES)}; got {self.attention!r}")
        _check(self.precision in ("auto", "bf16", "fp16", "fp32"),
               f"train.precision must be one of auto, bf16, fp16, fp32; got {self.precision!r}")
        _check(self.learning_rate > 0, "train.learning_rate must be > 0")
        _check(self.neftune_noise_alpha >= 0, "train.neftune_noise_alpha must be >= 0 (0 = off)")
        _check(self.num_train_epochs > 0, "train.num_train_epochs must be > 0")
        _check(self.max_steps == -1 or self.max_steps > 0, "train.max_steps must be -1 (use epochs) or > 0")
        _check(self.per_device_train_batch_size > 0, "train.per_device_train_batch_size must be > 0")
        _check(self.gradient_accumulation_steps > 0, "train.gradient_accumulation_steps must be > 0")
        _check(0.0 <= self.val_fraction < 0.5, "train.val_fraction must be in [0, 0.5)")
        _check(self.save_steps > 0 and self.logging_steps > 0 and self.eval_steps > 0, "train.save_steps, logging_steps and eval_steps must be > 0")
        _check(self.early_stopping_patience >= 0, "train.early_stopping_patience must be >= 0")
        _check(self.dpo_beta > 0 and self.dpo_learning_rate > 0, "train.dpo_beta and dpo_learning_rate must be > 0")
        _check(self.dpo_max_steps == -1 or self.dpo_max_steps > 0, "train.dpo_max_steps must be -1 or > 0")
        _check(self.dpo_max_seq_length == 0 or self.dpo_max_seq_length >= 32,
               "train.dpo_max_seq_length must be 0 (model.max_seq_length) or >= 32")
        _check(self.grpo_num_generations >= 2, "train.grpo_num_generations must be >= 2 (GRPO compares "
               "replies within a group)")
        _check(self.grpo_prompts_per_step >= 1 and self.grpo_max_steps > 0 and self.grpo_save_steps > 0,
               "train.grpo_prompts_per_step, grpo_max_steps and grpo_save_steps must be > 0")
        _check(self.grpo_max_completion_length >= 16, "train.grpo_max_completion_length must be >= 16")
        _check(self.grpo_beta >= 0 and self.grpo_length_penalty >= 0, "train.grpo_beta and grpo_length_penalty "
               "must be >= 0 (0 = off)")
        _check(self.grpo_learning_rate > 0 and self.grpo_temperature > 0,
               "train.grpo_learning_rate and grpo_temperature must be > 0")
        _check(self.val_fraction == 0 or self.save_steps % self.eval_steps == 0,
               f"train.save_steps ({self.save_steps}) must be a multiple of train.eval_steps ({self.eval_steps}) "
               "so the best checkpoint by eval loss is on disk to restore")


@dataclass
class ExportConfig:
    llama_cpp_path: str = "llama.cpp"
    merged_model_dir: str = "outputs/merged_financial_fp16"
    gguf_f16_path: str = "outputs/financial_model_fp16.gguf"
    gguf_q4_path: str = "outputs/financial_model_q4_k_m.gguf"
    gguf_q8_path: str = "outputs/financial_model_q8_0.gguf"
    modelfile_path: str = "outputs/Modelfile"
    quant_types: list[str] = field(default_factory=lambda: ["Q4_K_M", "Q8_0"])
    # precision of the unquantized GGUF the quants are made from: f16 or bf16
    gguf_outtype: str = "f16"
    # independent export steps (quantize, verify, smoke) run this many at a time
    export_jobs: int = 2
    # merge: "in_memory" (PEFT merge_and_unload, verified by logits), "by_shard"
    # (one safetensors shard at a time, for RAM smaller than the model) or "auto"
    merge_mode: str = "auto"
    cleanup_intermediates: bool = False
    ollama_model_name: str = "financial-model"
    smoke_prompt: str = "What is the future value of $1,000 invested at 5% a year for 3 years?"
    smoke_tokens: int = 48

    def __post_init__(self):
        for name in ("gguf_f16_path", "gguf_q4_path", "gguf_q8_path"):
            _check(str(getattr(self, name)).endswith(".gguf"), f"export.{name} must end with .gguf")
        _check(self.smoke_tokens > 0, "export.smoke_tokens must be > 0")
        _check(len(self.quant_types) > 0, "export.quant_types must name at least one type")
        _check(self.gguf_outtype in ("f16", "bf16"), f"export.gguf_outtype must be f16 or bf16, got {self.gguf_outtype!r}")
        _check(self.export_jobs >= 1, "export.export_jobs must be >= 1")
        _check(self.merge_mode in ("auto", "in_memory", "by_shard"),
               f"export.merge_mode must be auto, in_memory or by_shard; got {self.merge_mode!r}")

    @property
    def unquantized_gguf(self) -> Path:
        """The F16 (or BF16) GGUF every quant is made from."""
        p = Path(self.gguf_f16_path)
        if self.gguf_outtype == "bf16":
            return p.with_name(p.name.replace("fp16", "bf16").replace("f16", "bf16"))
        return p

    def gguf_path(self, qtype: str) -> Path:
        """Where a quantization type is written; Q4_K_M and Q8_0 have their own flags."""
        named = {"Q4_K_M": self.gguf_q4_path, "Q8_0": self.gguf_q8_path, "F16": self.gguf_f16_path,
                 "BF16": str(self.unquantized_gguf)}
        if qtype in named:
            return Path(named[qtype])
        return Path(self.gguf_f16_path).with_name(f"financial_model_{qtype.lower()}.gguf")


EVAL_MODELS = ("base", "adapter", "merged", "F16", "BF16", "Q8_0", "Q4_K_M")


@dataclass
class EvalConfig:
    eval_dir: str = "outputs/eval"
    eval_limit: int = 200
    eval_max_new_tokens: int = 320
    eval_batch_size: int = 32
    # which models the report compares: base, adapter (base + LoRA), merged (FP16
    # checkpoint), and any exported GGUF type (F16, Q8_0, Q4_K_M, ...)
    eval_models: list[str] = field(default_factory=lambda: ["base", "adapter", "merged", "F16", "Q8_0", "Q4_K_M"])
    # external sets in the ../shared/eval schema, each run with and without its context
    eval_files: list[str] = field(default_factory=lambda: ["../shared/eval/finlora_formula_test.jsonl"])
    external_eval_limit: int = 200
    # greedy for reproducible numbers; "r1" = DeepSeek's temperature 0.6, top_p 0.95;
    # "ollama" (GGUF models only) = Ollama's defaults under the Modelfile's parameters
    eval_sampling: str = "greedy"
    perplexity: bool = True
    # GGUF evals: llama-server slots decoding together, 2.1x faster than one
    # llama-completion per prompt (measured, 2 cores); 1 = llama-completion
    eval_parallel: int = 4
    # GGUF models evaluated at the same time, each llama.cpp process on cores / N
    # threads; 0 = auto: 2 on a machine without CUDA and with 2 cores or more, else 1
    eval_concurrency: int = 0
    # GGUF replies cached by content (model sha256, prompt, settings) in the fintune
    # cache folder: a rerun, or another project on this machine, reuses the base model's
    eval_cache: bool = True

    def __post_init__(self):
        _check(self.eval_limit > 0, "eval.eval_limit must be > 0")
        _check(self.eval_max_new_tokens > 0 and self.eval_batch_size > 0,
               "eval.eval_max_new_tokens and eval.eval_batch_size must be > 0")
        _check(self.external_eval_limit > 0, "eval.external_eval_limit must be > 0")
        from fintune.eval.sampling import PRESETS

        _check(self.eval_sampling in PRESETS, f"eval.eval_sampling must be one of {', '.join(PRESETS.names())}, "
                                               f"got {self.eval_sampling!r}")
        _check(len(self.eval_models) > 0, "eval.eval_models must name at least one model")
        _check(self.eval_parallel >= 1, "eval.eval_parallel must be >= 1")
        _check(self.eval_concurrency >= 0, "eval.eval_concurrency must be >= 0 (0 = auto)")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "lora": LoraConfig,
    "train": TrainConfig,
    "export": ExportConfig,
    "eval": EvalConfig,
}


@dataclass
class PipelineConfig:
    profile: str = "defaults"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_dict(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(getattr(self, name))


def _flag_index() -> dict[str, tuple[str, Any]]:
    """Flat flag name -> (section, resolved type)."""
    index: dict[str, tuple[str, Any]] = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in index:
                raise RuntimeError(f"config field {f.name!r} appears in two sections")
            index[f.name] = (section, _base_type(hints[f.name]))
    return index


def _base_type(annotation: Any) -> Any:
    """Optional[X] -> X; other annotations unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    return annotation


FLAGS = _flag_index()


def _coerce(section: str, name: str, value: Any, where: str) -> Any:
    tp = FLAGS[name][1]
    if value is None:
        return None
    if typing.get_origin(tp) is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {section}.{name} must be a list of strings, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {section}.{name} must be true or false, got {value!r}")
    try:
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return tp(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {section}.{name} must be {tp.__name__}, got {value!r}") from None


def load_yaml(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a profile; unknown sections or keys fail with the valid names."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    out: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if section == "profile":
            out["profile"] = values
            continue
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section {section!r}; valid sections: "
                              f"profile, {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping")
        valid = [f.name for f in dataclasses.fields(SECTIONS[section])]
        for key, value in values.items():
            if key not in valid:
                raise ConfigError(f"{path}: unknown key {section}.{key}; valid keys in "
                                  f"{section}: {', '.join(valid)}")
            out.setdefault(section, {})[key] = _coerce(section, key, value, str(path))
    return out


def build_config(yaml_values: dict | None = None, overrides: dict[str, Any] | None = None,
                 profile: str | None = None) -> PipelineConfig:
    """Defaults, then YAML values, then flat flag overrides (``{"learning_rate": 1e-4}``)."""
    yaml_values = dict(yaml_values or {})
    sections: dict[str, dict[str, Any]] = {s: dict(yaml_values.get(s, {})) for s in SECTIONS}
    for name, value in (overrides or {}).items():
        if name not in FLAGS:
            raise ConfigError(f"unknown option {name!r}; valid options: {', '.join(sorted(FLAGS))}")
        section, _ = FLAGS[name]
        sections[section][name] = _coerce(section, name, value, "command line")
    built = {s: SECTIONS[s](**vals) for s, vals in sections.items()}
    return PipelineConfig(profile=profile or yaml_values.get("profile", "defaults"), **built)


def add_config_flags(parser: argparse.ArgumentParser, only: list[str] | None = None) -> None:
    """Add one flag per config field; unset flags stay None so YAML values survive."""
    for name, (section, tp) in FLAGS.items():
        if only is not None and name not in only:
            continue
        kwargs: dict[str, Any] = {"default": None, "help": f"[{section}]"}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is list:
            kwargs["help"] += " comma-separated"
        else:
            kwargs["type"] = tp
        parser.add_argument(f"--{name}", **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in FLAGS and v is not None}


def config_fingerprint(values: Any) -> str:
    import hashlib

    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
