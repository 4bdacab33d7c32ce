"""The settings' sections: one small dataclass per concern, validated in
``__post_init__``, every field with its help text in its metadata
(``setting(default, help)``), which ``--help`` shows and ``field_help`` returns.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from fintune.errors import FintuneError

EMBEDDED_BASE = "embedded:smollm2-135m-instruct"
ATTENTION_CHOICES = ("auto", "eager", "sdpa", "flash_attention_2", "flex_attention")
QWEN_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ConfigError(FintuneError, ValueError):
    """A configuration value or key is invalid; the message names it."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def setting(default: Any = dataclasses.MISSING, help: str = "", *,
            factory: Callable[[], Any] | None = None) -> Any:
    """A config field with its --help text in ``metadata["help"]`` (as TRL's and
    LLaMA-Factory's ``hparams`` dataclasses do); ``factory`` for a list default."""
    meta = {"help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    base_model: str = setting(EMBEDDED_BASE, "The model to fine-tune: a Hugging Face hub id, a local model "
                              "folder, or embedded:NAME for a model shipped inside fintune (embedded:"
                              "smollm2-135m-instruct is SmolLM2-135M-Instruct, as a GGUF file).")
    max_seq_length: int = setting(1024, "Longest training row in tokens, prompt and reply together (>= 32); "
                                  "longer rows are dropped and counted.")
    load_in_4bit: bool = setting(False, "Load the frozen base weights in 4-bit NF4 (QLoRA) on a CUDA GPU, to "
                                 "fit a larger model in its memory; no effect on a CPU.")

    def __post_init__(self):
        _check(bool(self.base_model), "model.base_model must not be empty")
        _check(self.max_seq_length >= 32, f"model.max_seq_length must be >= 32, got {self.max_seq_length}")


@dataclass
class DataConfig:
    dataset_folder: str = setting("datasets", "Folder of your own training files (.jsonl, .json, .csv, "
                                  ".parquet), each read in the format detected from its keys or named in "
                                  "dataset_formats.")
    data_dir: str = setting("outputs/data", "Where the data stage writes the prepared rows (train.jsonl, "
                            "heldout.jsonl, dpo.jsonl) that training and eval read.")
    generators: list[str] = setting(help="Built-in question generators whose rows join the training data: "
                                    "quant (worked quantitative-finance questions with checkable answers); "
                                    "empty = none.", factory=lambda: ["quant"])
    num_generated: int = setting(2000, "How many training questions the generators make (>= 0; 0 = none).")
    heldout_fraction: float = setting(0.1, "Held-out eval questions generated on top, as a fraction of "
                                      "num_generated, in (0, 0.5): half phrased with templates training never "
                                      "sees, half new questions.")
    data_seed: int = setting(42, "Random seed of the generated questions and market-data samples; the same "
                             "seed makes the same data.")
    paraphrase: float = setting(0.0, "Fraction of generated training questions whose phrasing is rewritten "
                                "(value order, ask first or last, wording of the ask and units), in [0, 1]; "
                                "0 = templates as written.")
    tool_fraction: float = setting(0.5, "Fraction of generated training questions that offer the calculator "
                                   "tool, in [0, 1]: those are trained on the worked solution that calls it "
                                   "(formula, substituted numbers, calculate calls, results, answer), the "
                                   "others on the solution by hand, so the model calls the tool only when it "
                                   "is offered; 0 = never offered.")
    max_reject_fraction: float = setting(0.05, "The data stage fails when more than this fraction of the rows "
                                         "of your own files is rejected (listed in rejects.jsonl), in [0, 1]; "
                                         "1 = never fail.")
    dataset_formats: list[str] = setting(help="Per-file format instead of detection, as FILE=FORMAT (e.g. "
                                         "prices.csv=alpaca); formats: messages, sharegpt, alpaca, preference, "
                                         "text.", factory=list)
    dpo_to_sft: bool = setting(True, "Preference pairs (prompt, chosen, rejected) also train SFT on their "
                               "chosen reply.")
    max_line_bytes: int = setting(1_000_000, "A JSONL line longer than this many bytes is rejected without "
                                  "being parsed (> 0).")
    strict_inputs: bool = setting(False, "Fail the data stage when one of your files yields no row (empty, "
                                  "blank lines only, every row rejected, unreadable) instead of listing it in "
                                  "the summary.")
    token_check: bool = setting(True, "Tokenize every row with the base model's tokenizer and check its length, "
                                "BOS, special tokens and loss mask.")
    hub_datasets: list[str] = setting(help="Instruction corpora read with datasets.load_dataset: hub ids (e.g. "
                                      "FinLang/investopedia-instruction-tuning-dataset) or local .csv, .json, "
                                      ".jsonl or .parquet files; question and answer columns are found by name.",
                                      factory=list)
    hub_optional: bool = setting(True, "A hub dataset that cannot be loaded (offline, missing) is a warning "
                                 "and skipped, instead of an error.")
    hub_limit: int = setting(20000, "At most this many rows from each hub dataset.")
    market_files: list[str] = setting(help="OHLCV CSV files whose prices become market-data questions, one "
                                      "series per file.", factory=list)
    market_tickers: list[str] = setting(help="Tickers downloaded with yfinance whose prices become market-data "
                                        "questions (needs the network).", factory=list)
    market_samples: int = setting(300, "How many market-data questions to make from market_files and "
                                  "market_tickers.")
    market_optional: bool = setting(True, "A ticker that cannot be downloaded is a warning and skipped, "
                                    "instead of an error.")
    contamination_files: list[str] = setting(help="Evaluation sets that must never reach training (globs; "
                                             "missing ones are fine): a training row asking one of their "
                                             "questions fails the data stage.",
                                             factory=lambda: ["../shared/eval/*.jsonl"])
    # the names of fintune/prompts.py INSTRUCTIONS
    instruction: str = setting("final_answer", "The answer instruction of every prompt, trained and evaluated "
                               "alike: final_answer or boxed.")

    def __post_init__(self):
        from fintune.prompts import INSTRUCTIONS

        _check(self.instruction in INSTRUCTIONS.names(), f"data.instruction: unknown instruction "
               f"{self.instruction!r}; valid names: {', '.join(INSTRUCTIONS.names())}")
        _check(self.num_generated >= 0, "data.num_generated must be >= 0")
        _check(0.0 < self.heldout_fraction < 0.5, "data.heldout_fraction must be in (0, 0.5)")
        _check(0.0 <= self.paraphrase <= 1.0, "data.paraphrase must be in [0, 1]")
        _check(0.0 <= self.tool_fraction <= 1.0, "data.tool_fraction must be in [0, 1]")
        _check(0.0 <= self.max_reject_fraction <= 1.0, "data.max_reject_fraction must be in [0, 1]")
        _check(self.max_line_bytes > 0, "data.max_line_bytes must be > 0")
        for item in self.dataset_formats:
            _check(item.count("=") == 1 and all(item.split("=")),
                   f"data.dataset_formats entries look like FILE=FORMAT, got {item!r}")


@dataclass
class LoraConfig:
    lora_r: int = setting(16, "LoRA rank: the inner size of each adapter's A and B matrices (> 0); a higher "
                          "rank learns more and costs more memory.")
    lora_alpha: int = setting(32, "LoRA scale numerator: the adapter's update is scaled by lora_alpha / "
                              "lora_r (> 0; often 2 x lora_r).")
    lora_dropout: float = setting(0.0, "Dropout on the adapters' input while training, in [0, 1); 0 = off.")
    target_modules: list[str] = setting(help="Names of the linear layers that get adapters; the default is "
                                        "every attention and MLP projection of Qwen- and Llama-style models.",
                                        factory=lambda: list(QWEN_LORA_TARGETS))
    lora_top_layers: int = setting(0, "LoRA on the last N decoder layers only; 0 = every layer. Backpropagation "
                                   "then stops below them, most of a CPU step's time on a small model.")
    # LLaMA-Factory's and Axolotl's `loraplus_lr_ratio`; PEFT's LoRA+ optimizer
    loraplus_lr_ratio: float = setting(0.0, "LoRA+: LoRA B learns this many times faster than LoRA A (>= 1, "
                                       "e.g. 16); 0 = plain LoRA, one learning rate.")

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
    backend: str = setting("auto", "Training library: unsloth (needs a CUDA GPU and the unsloth package), peft "
                           "(transformers + PEFT, any device), or auto = unsloth where it can run, else peft.")
    lora_output_dir: str = setting("outputs/financial_lora", "Where the trained LoRA adapter is saved; merge "
                                   "and eval read it from there.")
    checkpoint_dir: str = setting("outputs/checkpoints", "Where training checkpoints (checkpoint-N) are saved; "
                                  "DPO and GRPO save theirs in its dpo/ and grpo/ folders.")
    val_fraction: float = setting(0.05, "Fraction of the training rows held back to measure the eval loss, in "
                                  "[0, 0.5); 0 = no eval loss, so no early stopping or best-checkpoint restore.")
    eval_steps: int = setting(50, "Measure the eval loss every this many optimizer steps (> 0).")
    learning_rate: float = setting(2e-4, "Peak learning rate of SFT (> 0), reached after the warmup and then "
                                   "decayed by lr_scheduler_type.")
    num_train_epochs: float = setting(1.0, "Passes over the training rows (> 0, may be fractional); max_steps "
                                      "wins when set.")
    max_steps: int = setting(-1, "Stop SFT after this many optimizer steps; -1 = train num_train_epochs instead.")
    per_device_train_batch_size: int = setting(8, "Rows per forward and backward pass on each device (> 0).")
    gradient_accumulation_steps: int = setting(1, "Passes summed into each optimizer step (> 0); the batch is "
                                               "per_device_train_batch_size x this x devices.")
    lr_scheduler_type: str = setting("cosine", "transformers' learning-rate schedule after the warmup: cosine, "
                                     "linear, constant, constant_with_warmup, ...")
    warmup_ratio: float = setting(0.03, "Fraction of the training steps over which the learning rate rises "
                                  "from 0 to learning_rate.")
    weight_decay: float = setting(0.0, "AdamW weight decay of the trained weights; 0 = none.")
    logging_steps: int = setting(10, "Log the loss, learning rate and speed every this many steps (> 0).")
    save_steps: int = setting(100, "Save a checkpoint every this many steps (> 0); a multiple of eval_steps "
                              "when val_fraction > 0, so the best checkpoint by eval loss is on disk.")
    save_total_limit: int = setting(2, "Checkpoints kept in checkpoint_dir; older ones are deleted (the best "
                                    "by eval loss is kept too).")
    precision: str = setting("auto", "Training precision: bf16, fp16, fp32, or auto = bf16 on a CUDA GPU that "
                             "has it (else fp16) and on a CPU whose bf16 matmuls beat fp32 by 1.2x (else fp32).")
    # auto follows Unsloth's notebooks on CUDA
    optim: str = setting("auto", "transformers/TRL optimizer name (e.g. adamw_torch, paged_adamw_8bit for small "
                         "cards); auto = adamw_8bit on CUDA, adamw_torch_fused on a CPU.")
    # glibc's malloc fragments over a CPU run: RSS 2.2 -> 5.4 GB and tokens/s 541 -> ~400
    # over 140 steps (measured); the mimalloc allocator comes from the cmeel-mimalloc wheel
    cpu_allocator: str = setting("mimalloc", "Memory allocator of the CPU training process: mimalloc (memory "
                                 "and speed stay steady over a long run) or system (glibc's, which fragments).")
    packing: bool = setting(False, "Pack several short rows into each max_seq_length sequence (TRL packing): "
                            "less padding, more rows per step.")
    # TRL turns it on by default
    gradient_checkpointing: bool = setting(True, "Recompute activations in the backward pass instead of keeping "
                                           "them: less memory for ~30% more step time, which a small model on a "
                                           "CPU does not need.")
    # fuses the norms, rotary and activations that run memory-bound in eager mode
    torch_compile: bool = setting(False, "torch.compile each decoder layer (PEFT backend; Unsloth compiles its "
                                  "own kernels): faster steps after a compilation at the first one; needs a C++ "
                                  "compiler on a CPU.")
    # eager wins there because inductor then fuses the scores, mask and softmax with the rest
    # of the layer, faster than the SDPA kernel (see backends.attention_for)
    attention: str = setting("auto", "transformers' attn_implementation for training (PEFT backend): eager, "
                             "sdpa, flash_attention_2, flex_attention, or auto = eager on a CPU training in "
                             "bf16 with compiled layers and short rows, else transformers' default (sdpa).")
    neftune_noise_alpha: float = setting(0.0, "NEFTune (TRL's neftune_noise_alpha): uniform noise of this scale "
                                         "on the input embeddings while training, e.g. 5; 0 = off.")
    train_seed: int = setting(3407, "Random seed of training: adapter initialization, row order, dropout.")
    early_stopping_patience: int = setting(3, "Stop when the eval loss has not improved by more than "
                                           "early_stopping_threshold for this many evaluations; 0 = never stop "
                                           "early. The best checkpoint is restored at the end.")
    early_stopping_threshold: float = setting(0.0, "Smallest eval-loss drop that counts as an improvement for "
                                              "early stopping; 0 = any drop.")
    dpo: bool = setting(False, "After SFT, train DPO (TRL DPOTrainer) on the data stage's preference pairs, "
                        "starting from the SFT adapter, which is also the reference policy.")
    dpo_beta: float = setting(0.1, "DPO's beta (> 0): a higher beta keeps the policy closer to the reference.")
    dpo_learning_rate: float = setting(5e-6, "Learning rate of DPO (> 0).")
    dpo_max_steps: int = setting(-1, "DPO optimizer steps; -1 = one epoch over the pairs.")
    # DPO runs both replies through the model at once and holds their logits
    dpo_max_seq_length: int = setting(0, "Longest chosen or rejected row DPO trains on, in tokens (>= 32); "
                                      "0 = model.max_seq_length. DPO holds both rows' logits, so it may need less.")
    # TRL's GRPOConfig names without the grpo_ prefix (fintune/train/grpo.py grpo_args);
    # the rewards are fintune/train/rewards.py
    grpo: bool = setting(False, "After SFT (and DPO), train GRPO on the training split's checkable questions, "
                         "rewarded by the eval's scorer.")
    grpo_num_generations: int = setting(4, "Replies sampled per prompt, the group whose rewards are compared "
                                        "(>= 2).")
    grpo_prompts_per_step: int = setting(1, "Prompts (groups) per GRPO optimizer step (>= 1).")
    grpo_max_completion_length: int = setting(192, "Longest sampled GRPO reply, in tokens (>= 16).")
    grpo_beta: float = setting(0.0, "Weight of the KL penalty to the reference model; 0 = none, and no "
                               "reference pass (TRL's default).")
    grpo_learning_rate: float = setting(5e-6, "Learning rate of GRPO (> 0).")
    grpo_max_steps: int = setting(20, "GRPO optimizer steps (> 0).")
    grpo_temperature: float = setting(1.0, "Sampling temperature of GRPO's replies (> 0).")
    grpo_length_penalty: float = setting(0.0, "Subtract this x (reply tokens / grpo_max_completion_length) from "
                                         "each reward, against long replies; 0 = off.")
    grpo_save_steps: int = setting(10, "Save a GRPO checkpoint every this many steps (> 0).")
    grpo_use_vllm: bool = setting(False, "Generate GRPO's replies with vLLM (Unsloth's fast_inference, colocated "
                                  "on the GPU); needs a vllm that imports with this transformers. Off: vLLM is "
                                  "hidden from Unsloth's import and TRL generates with model.generate.")
    resume_from_checkpoint: Optional[str] = setting(None, "Continue training from a checkpoint folder, or "
                                                    "latest for the newest checkpoint-N in checkpoint_dir "
                                                    "saved by a run with these settings (another run's is "
                                                    "refused); unset = start afresh.")

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
        # unsloth 2026.10.9 models/rl.py drops TRL's "ref" adapter copy (trl 1.14.2 grpo_trainer.py
        # GRPOTrainer.__init__, `is_peft_model(model) and args.beta != 0.0`) and takes the reference
        # with the adapter disabled: the KL would pull towards the base, not the SFT policy
        _check(not (self.grpo and self.backend == "unsloth" and self.grpo_beta > 0),
               f"train.grpo_beta {self.grpo_beta:g} with train.backend unsloth: Unsloth's GRPO uses the base "
               "model as the KL reference, TRL's the SFT adapter; set train.grpo_beta 0 or train.backend peft")
        _check(self.grpo_learning_rate > 0 and self.grpo_temperature > 0,
               "train.grpo_learning_rate and grpo_temperature must be > 0")
        _check(self.val_fraction == 0 or self.save_steps % self.eval_steps == 0,
               f"train.save_steps ({self.save_steps}) must be a multiple of train.eval_steps ({self.eval_steps}) "
               "so the best checkpoint by eval loss is on disk to restore")


@dataclass
class ExportConfig:
    llama_cpp_path: str = setting("llama.cpp", "llama.cpp checkout whose convert_hf_to_gguf.py and built tools "
                                  "(build/bin) convert, quantize and run the GGUF files.")
    merged_model_dir: str = setting("outputs/merged_financial_fp16", "Where the base model with the adapter "
                                    "merged in is saved (16-bit safetensors), the source of every GGUF.")
    gguf_f16_path: str = setting("outputs/financial_model_fp16.gguf", "The unquantized GGUF every quant is made "
                                 "from (ends in .gguf); with gguf_outtype bf16, f16 in its name becomes bf16.")
    gguf_q4_path: str = setting("outputs/financial_model_q4_k_m.gguf", "Where the Q4_K_M GGUF is written "
                                "(ends in .gguf).")
    gguf_q8_path: str = setting("outputs/financial_model_q8_0.gguf", "Where the Q8_0 GGUF is written (ends in "
                                ".gguf).")
    modelfile_path: str = setting("outputs/Modelfile", "Where the Ollama Modelfile of the exported model is "
                                  "written.")
    quant_types: list[str] = setting(help="llama.cpp quantization types to make (Q4_K_M, Q8_0, Q5_K_M, ...); "
                                     "the first is the model the Modelfile uses; other than Q4_K_M and Q8_0, "
                                     "each is written beside gguf_f16_path.", factory=lambda: ["Q4_K_M", "Q8_0"])
    gguf_outtype: str = setting("f16", "Precision of the unquantized GGUF the quants are made from: f16 or "
                                "bf16.")
    export_jobs: int = setting(2, "Independent export steps (quantize, verify, smoke test) run this many at a "
                               "time (>= 1).")
    merge_mode: str = setting("auto", "How the adapter is merged: in_memory (PEFT merge_and_unload, verified by "
                              "logits), by_shard (one safetensors shard at a time, for RAM smaller than the "
                              "model), or auto = in_memory when it fits in RAM, else by_shard.")
    cleanup_intermediates: bool = setting(False, "After the quantized files are verified, delete the merged "
                                          "model folder and the unquantized GGUF to free disk.")
    ollama_model_name: str = setting("financial-model", "Model name in the printed `ollama create` command.")
    smoke_prompt: str = setting("What is the future value of $1,000 invested at 5% a year for 3 years?",
                                "Question put to the exported GGUF as a smoke test.")
    smoke_tokens: int = setting(48, "Tokens the smoke test generates (> 0).")

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
    eval_dir: str = setting("outputs/eval", "Where the eval stage writes each model's replies, scores and the "
                            "report.")
    eval_limit: int = setting(200, "Held-out questions evaluated per model (> 0), drawn evenly over the "
                              "question kinds; the perplexity text comes from the same items.")
    eval_max_new_tokens: int = setting(320, "Longest reply generated per eval question, in tokens (> 0).")
    eval_batch_size: int = setting(32, "Prompts generated together by the transformers models (base, adapter, "
                                   "merged) (> 0).")
    eval_models: list[str] = setting(help="Which models the report compares: base, adapter (base + LoRA), "
                                     "merged (the 16-bit checkpoint), and any exported GGUF type (F16, BF16, "
                                     "Q8_0, Q4_K_M, ...).",
                                     factory=lambda: ["base", "adapter", "merged", "F16", "Q8_0", "Q4_K_M"])
    eval_files: list[str] = setting(help="External eval sets in the ../shared/eval schema, each run with and "
                                    "without its context.",
                                    factory=lambda: ["../shared/eval/finlora_formula_test.jsonl"])
    external_eval_limit: int = setting(200, "Items evaluated from each external eval file (> 0), taken evenly "
                                       "over its categories.")
    eval_sampling: str = setting("greedy", "Decoding of eval replies: greedy (reproducible numbers), r1 "
                                 "(DeepSeek's temperature 0.6, top_p 0.95), or ollama (GGUF models only: Ollama's "
                                 "defaults under the Modelfile's parameters).")
    perplexity: bool = setting(True, "Also measure the llama.cpp perplexity of each exported GGUF on the "
                               "held-out worked solutions.")
    # 2.1x faster than one llama-completion per prompt (measured, 2 cores)
    eval_parallel: int = setting(4, "GGUF evals: llama-server slots decoding together (>= 1); 1 = one "
                                 "llama-completion per prompt.")
    eval_concurrency: int = setting(0, "GGUF models evaluated at the same time, each llama.cpp process on "
                                    "cores / N threads; 0 = auto: 2 without CUDA on 2 or more cores, else 1.")
    eval_cache: bool = setting(True, "Cache GGUF replies by content (model sha256, prompt, settings) in the "
                               "fintune cache folder, so a rerun or another project reuses them.")
    eval_tools: list[str] = setting(help="Score each model without the calculator tool (off), with it (on), or "
                                    "both: on asks GGUF models through llama-server's /v1/chat/completions with "
                                    "tools=[calculate] and runs the calls; HF models and templates that render no "
                                    "tools get a 'not run' row.", factory=lambda: ["off", "on"])

    def __post_init__(self):
        _check(self.eval_limit > 0, "eval.eval_limit must be > 0")
        _check(self.eval_max_new_tokens > 0 and self.eval_batch_size > 0,
               "eval.eval_max_new_tokens and eval.eval_batch_size must be > 0")
        _check(self.external_eval_limit > 0, "eval.external_eval_limit must be > 0")
        from fintune.sampling import PRESETS

        _check(self.eval_sampling in PRESETS, f"eval.eval_sampling must be one of {', '.join(PRESETS.names())}, "
                                               f"got {self.eval_sampling!r}")
        _check(len(self.eval_models) > 0, "eval.eval_models must name at least one model")
        _check(self.eval_parallel >= 1, "eval.eval_parallel must be >= 1")
        _check(self.eval_concurrency >= 0, "eval.eval_concurrency must be >= 0 (0 = auto)")
        _check(bool(self.eval_tools) and set(self.eval_tools) <= {"off", "on"},
               f"eval.eval_tools must be a non-empty list of off, on; got {self.eval_tools!r}")


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
