"""Model loading per backend.

unsloth: CUDA + Unsloth importable. 4-bit base through FastLanguageModel, LoRA
         through its get_peft_model with Unsloth's gradient checkpointing.
peft:    transformers + PEFT everywhere else; QLoRA (bitsandbytes NF4, double
         quantization) on CUDA when 4-bit is asked for, full-precision LoRA on CPU.
Unsloth must be imported before transformers, trl and peft: it patches them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from fintune import machine
from fintune.config import PipelineConfig
from fintune.errors import UsageError

log = logging.getLogger(__name__)


@dataclass
class Choice:
    backend: str
    reason: str


def choose_backend(requested: str) -> Choice:
    has_cuda = machine.cuda_available()
    has_unsloth = machine.installed("unsloth")
    if requested == "unsloth":
        if not (has_cuda and has_unsloth):
            raise UsageError("backend 'unsloth' needs a CUDA GPU and the unsloth package "
                               f"(cuda={has_cuda}, unsloth installed={has_unsloth}); "
                               "install requirements-gpu.txt or use --backend peft")
        return Choice("unsloth", "requested")
    if requested == "peft":
        return Choice("peft", "requested")
    if has_cuda and has_unsloth:
        return Choice("unsloth", "CUDA GPU and unsloth found")
    return Choice("peft", f"cuda={has_cuda}, unsloth installed={has_unsloth}")


def import_unsloth_first(cfg: PipelineConfig) -> bool:
    """Import unsloth, where it is the backend, before anything touches CUDA or imports
    transformers, trl or peft. Each training entry (SFT, DPO, GRPO) calls this first:
    unsloth_zoo/__init__.py sets PYTORCH_ALLOC_CONF=expandable_segments:True for the
    allocator, which reads it once, when CUDA is first initialised (the plan's
    mem_get_info, pick_precision's is_bf16_supported); choose_backend only asks
    torch.cuda.is_available(), which does not start the allocator.

    vLLM is hidden from that import unless train.grpo_use_vllm is set: unsloth probes
    and imports an installed vllm on import (unsloth 2026.10.9, import_fixes.py
    fix_vllm_guided_decoding_params: find_spec("vllm"), then `import vllm`), and a vllm
    that does not import under this transformers makes `import unsloth` fail.
    importlib.util.find_spec returns None, and `import vllm` fails cleanly, for a name
    whose sys.modules entry is None."""
    import sys

    if choose_backend(cfg.train.backend).backend != "unsloth":
        return False
    if not cfg.train.grpo_use_vllm and "vllm" not in sys.modules:
        sys.modules["vllm"] = None  # type: ignore[assignment]
    import unsloth  # noqa: F401

    return True


def load_unsloth(cfg: PipelineConfig, model_path: str):
    from unsloth import FastLanguageModel  # noqa: I001 - must precede transformers/peft/trl

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_path, max_seq_length=cfg.model.max_seq_length,
        dtype=None, load_in_4bit=cfg.model.load_in_4bit)
    model = FastLanguageModel.get_peft_model(
        model, r=cfg.lora.lora_r, lora_alpha=cfg.lora.lora_alpha,
        target_modules=list(cfg.lora.target_modules), lora_dropout=cfg.lora.lora_dropout,
        bias="none", use_gradient_checkpointing="unsloth", random_state=cfg.train.train_seed,
        layers_to_transform=lora_layers(cfg, model))
    return model, tokenizer


def lora_layers(cfg: PipelineConfig, model) -> list[int] | None:
    """The decoder layers that get LoRA: the last `lora_top_layers`, or all (None)."""
    if not cfg.lora.lora_top_layers:
        return None  # every layer, without reading the model's config
    n = model.config.num_hidden_layers
    k = cfg.lora.layer_count(n)
    return None if k == n else list(range(n - k, n))


def load_unsloth_adapter(cfg: PipelineConfig, adapter_dir: str, **extra):
    """A saved LoRA adapter to train on (DPO after SFT) through Unsloth, and the
    adapter's own tokenizer. Given an adapter folder, FastLanguageModel.from_pretrained
    loads the base its adapter_config names (in 4-bit where asked, from Unsloth's
    4-bit copy) and then PeftModel.from_pretrained(..., is_trainable=True)
    (unsloth 2026.10.9, models/loader.py, FastLanguageModel.from_pretrained,
    the `if is_peft:` branches). The tokenizer it returns comes from the base's
    repository, so the adapter's (its chat template) is read from the folder.
    `extra`: further from_pretrained arguments (GRPO's fast_inference, max_lora_rank)."""
    from unsloth import FastLanguageModel  # noqa: I001 - must precede transformers/peft/trl
    from transformers import AutoTokenizer

    model, _ = FastLanguageModel.from_pretrained(
        model_name=str(adapter_dir), max_seq_length=cfg.model.max_seq_length,
        dtype=None, load_in_4bit=cfg.model.load_in_4bit, **extra)
    return model, AutoTokenizer.from_pretrained(adapter_dir)


def load_peft(cfg: PipelineConfig, model_path: str, on_cuda: bool, precision: str = "fp32"):
    from peft import LoraConfig, get_peft_model

    attention = attention_for(cfg, on_cuda, precision)
    log.info("train: attention %s (train.attention %s)", attention or "transformers' default", cfg.train.attention)
    model, tokenizer = load_base(cfg, model_path, on_cuda, precision, attention)
    lora = LoraConfig(r=cfg.lora.lora_r, lora_alpha=cfg.lora.lora_alpha,
                      lora_dropout=cfg.lora.lora_dropout, target_modules=list(cfg.lora.target_modules),
                      layers_to_transform=lora_layers(cfg, model), bias="none", task_type="CAUSAL_LM")
    from transformers import set_seed

    # LoRA A is drawn at random: seed it so a run is reproducible (Unsloth's random_state)
    set_seed(cfg.train.train_seed)
    return get_peft_model(model, lora), tokenizer


def compile_layers(model) -> int:
    """torch.compile every decoder layer in place (dynamic shapes: batches vary in
    length), so parameter names, and with them the saved adapter, stay as they are.
    Returns how many layers were compiled: 0 where inductor has no C++ compiler to
    build CPU kernels with, which leaves the model in eager mode."""
    import torch

    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu and not machine.has_cpp_compiler():
        log.info("train: no C++ compiler found (CXX, g++, c++, clang++): torch_compile skipped, eager mode")
        return 0
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    if any(p.requires_grad for p in layers[0].parameters()):
        # The embeddings are frozen, so layer 0's input alone needs no gradient and
        # compiled as a variant of its own (13 s of a cold first step, measured). The
        # backward reaches layer 0 for its LoRA weights anyway; this adds only the
        # gradient of its input. (With LoRA on the top layers only, layer 0 is
        # left as it is: a gradient there would make the backward reach every layer.)
        model.enable_input_require_grads()
    log.info("train: torch.compile on %d decoder layers (compiled at the first step; %s)",
             len(layers), torch.__version__)
    return len(layers)


def start_isa_probe():
    """Start inductor's check of which vector instruction sets its C++ kernels may use
    in a thread of its own, so it runs while the model loads; returns the thread, to
    join before the first step. Inductor does the check once per process at the first
    compilation: it builds a test library per instruction set and loads each in a child
    process, which took 9.1 s with its cache empty (beside a training run) and 1.6 s with
    it warm (2 cores, AMD EPYC), all of it on the critical path of the first step. The work is compilers and
    child processes, so it leaves the loading thread its core."""
    import threading

    # imported here, with what the check imports, not in the thread: two threads
    # importing at once can deadlock on import locks (the compilation imports them anyway)
    import torch._inductor.codecache  # noqa: F401
    import torch._inductor.cpp_builder  # noqa: F401
    import torch.utils._filelock  # noqa: F401
    from torch._inductor import cpu_vec_isa

    def probe():
        try:
            cpu_vec_isa.valid_vec_isa_list()
        except Exception as e:  # noqa: BLE001 - the first compilation runs the check again and reports
            log.debug("train: early instruction-set probe failed (%s); the first compilation redoes it", e)

    thread = threading.Thread(target=probe, name="inductor-isa-probe", daemon=True)
    thread.start()
    return thread


# rows up to this long get "eager" attention under auto: its [rows, heads, T, T] scores are
# kept for the backward (19 MB a layer for 2 rows of 512 tokens, 16x that at 2048)
EAGER_ATTENTION_MAX_LEN = 1024


def attention_for(cfg: PipelineConfig, on_cuda: bool, precision: str) -> str | None:
    """attn_implementation for the training model; None: transformers' default (sdpa).

    auto picks "eager" on a CPU training in bf16 where the decoder layers get
    compiled and rows are short: inductor then compiles the score matmul, mask,
    softmax and value matmul with the rest of the layer, while SDPA stays one opaque
    kernel call. SmolLM2-135M, 2 rows of ~260 tokens, bf16, compiled LoRA layers,
    forward + backward of the whole model, both variants interleaved in one process
    (AMD EPYC, 2 cores): median 997 vs 1291 ms a step, eager faster in 6 of 6 rounds;
    attention alone, [2, 9, 262, 64] causal, 6.6-7.4 ms (compiled) vs 11.1 ms (SDPA).
    In fp32 (the same cores limited to AVX2) training ran at the same speed either
    way (SDPA 201.6 / 214.6, eager 212.4 / 215.8 tokens/s) and SDPA's kernel alone is
    the faster one (8.95 ms vs 10.6-11.8); eager mode without compilation
    materializes the scores op by op: in those cases auto keeps SDPA."""
    choice = cfg.train.attention
    if choice != "auto":
        return choice
    compiled = cfg.train.torch_compile and machine.has_cpp_compiler()
    if not on_cuda and precision == "bf16" and compiled and cfg.model.max_seq_length <= EAGER_ATTENTION_MAX_LEN:
        return "eager"
    return None


def eager_evaluation(trainer_class: type) -> type:
    """`trainer_class` whose validation runs compiled layers eagerly: under no_grad
    they would compile one more variant (5-9 s cold, measured) for a validation
    split of a few batches (0.5 s a batch of 4 eager)."""

    class EagerEvaluation(trainer_class):
        def evaluate(self, *args, **kwargs):
            import torch

            with torch.compiler.set_stance("force_eager"):
                return super().evaluate(*args, **kwargs)

    EagerEvaluation.__name__ = f"EagerEval{trainer_class.__name__}"
    return EagerEvaluation


def decoder_layers(model):
    """The ModuleList of decoder layers of a (PEFT-wrapped) causal LM."""
    from peft import PeftModel

    causal_lm = model.get_base_model() if isinstance(model, PeftModel) else model
    layers = getattr(getattr(causal_lm, "model", None), "layers", None)
    if layers is None:
        raise UsageError(f"train.torch_compile: no decoder layers found in {type(causal_lm).__name__} "
                         "(expected model.layers); turn torch_compile off")
    return layers


def load_base(cfg: PipelineConfig, model_path: str, on_cuda: bool, precision: str = "fp32",
              attention: str | None = None):
    """The base model for LoRA: NF4 with double quantization on CUDA (QLoRA)
    when load_in_4bit; else on CUDA the frozen weights in the training precision
    (bf16/fp16: 2 bytes a weight, as the memory plan counts them; fp32 only when
    training in fp32); on a CPU training in bf16, the frozen weights in bf16
    (autocast would otherwise cast every fp32 weight again at every step);
    else fp32. LoRA weights stay fp32 either way: get_peft_model's
    autocast_adapter_dtype=True casts bf16/fp16 adapter weights to fp32
    (peft 0.21.2, mapping_func.py get_peft_model). And its tokenizer."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    kwargs: dict = {"attn_implementation": attention} if attention else {}
    if on_cuda and cfg.model.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["dtype"] = torch.bfloat16
    elif precision in ("bf16", "fp16") and (on_cuda or precision == "bf16"):
        kwargs["dtype"] = torch.bfloat16 if precision == "bf16" else torch.float16
    else:
        # LoRA weights and optimizer state in fp32; bf16 speed comes from autocast.
        kwargs["dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if "quantization_config" in kwargs:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return model, tokenizer
