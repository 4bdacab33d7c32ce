"""The Unsloth path, checked against a stand-in `unsloth` module that records
calls: names, arguments and import order. The real thing runs under `gpu`."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

STANDIN = textwrap.dedent('''
    import json, sys
    CALLS = []
    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kw):
            CALLS.append(["from_pretrained", kw])
            return "MODEL", "TOKENIZER"
        @staticmethod
        def get_peft_model(model, **kw):
            CALLS.append(["get_peft_model", {"model": model, **kw}])
            return "PEFT_MODEL"
''')

DRIVER = textwrap.dedent('''
    import builtins, json, sys
    order = []
    real_import = builtins.__import__
    def spy(name, *a, **k):
        top = name.split(".")[0]
        if top in ("unsloth", "transformers", "trl", "peft") and top not in order:
            order.append(top)
        return real_import(name, *a, **k)
    builtins.__import__ = spy
    from fintune.config import build_config
    from fintune.train import backends
    cfg = build_config(overrides={"base_model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
                                  "max_seq_length": 4096, "load_in_4bit": True, "lora_r": 32,
                                  "lora_alpha": 64, "train_seed": 3407})
    model, tok = backends.load_unsloth(cfg, cfg.model.base_model)
    import transformers
    transformers.AutoTokenizer.from_pretrained = lambda d: "TOK:" + str(d)
    dpo_model, dpo_tok = backends.load_unsloth_adapter(cfg, "outputs/financial_lora-sft")
    import unsloth
    print(json.dumps({"calls": unsloth.CALLS, "order": order, "model": model, "tok": tok, "dpo_tok": dpo_tok}))
''')


@pytest.fixture
def recorded(tmp_path):
    (tmp_path / "unsloth").mkdir()
    (tmp_path / "unsloth" / "__init__.py").write_text(STANDIN)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_from_pretrained_loads_4bit_with_auto_dtype(recorded):
    name, kw = recorded["calls"][0]
    assert name == "from_pretrained"
    assert kw == {"model_name": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "max_seq_length": 4096,
                  "dtype": None, "load_in_4bit": True}


def test_get_peft_model_arguments(recorded):
    name, kw = recorded["calls"][1]
    assert name == "get_peft_model" and kw["model"] == "MODEL"
    assert kw["r"] == 32 and kw["lora_alpha"] == 64 and kw["bias"] == "none"
    assert kw["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert kw["use_gradient_checkpointing"] == "unsloth" and kw["random_state"] == 3407
    assert kw["lora_dropout"] == 0.0


def test_dpo_continues_the_sft_adapter_through_unsloth_with_its_tokenizer(recorded):
    """Given an adapter folder, FastLanguageModel.from_pretrained loads the base its
    adapter_config names and the adapter as trainable (unsloth 2026.10.9, models/loader.py,
    the `if is_peft:` branches); the tokenizer is the adapter folder's. Unsloth's
    train_on_responses_only is no longer called (issue 30, defect 6)."""
    name, kw = recorded["calls"][2]
    assert name == "from_pretrained" and kw == {"model_name": "outputs/financial_lora-sft", "max_seq_length": 4096,
                                                "dtype": None, "load_in_4bit": True}
    assert recorded["dpo_tok"] == "TOK:outputs/financial_lora-sft"
    assert len(recorded["calls"]) == 3


def test_unsloth_is_imported_before_transformers_trl_peft(recorded):
    assert recorded["order"][0] == "unsloth"


@pytest.mark.gpu
def test_real_unsloth_loads_a_small_model_in_4bit(tiny_qwen2_r1_dir):
    """The tiny random Qwen2 with the real R1 tokenizer, from disk: the GPU machine has no
    hub (HF_HUB_OFFLINE=1), so no gpu test names a hub id (tests/test_gpu_check.py)."""
    unsloth = pytest.importorskip("unsloth")
    model, tok = unsloth.FastLanguageModel.from_pretrained(
        model_name=str(tiny_qwen2_r1_dir), max_seq_length=512, dtype=None, load_in_4bit=True)
    assert tok.chat_template and "<\uff5cAssistant\uff5c>" in tok.chat_template
