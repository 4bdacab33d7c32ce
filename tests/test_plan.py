"""--dry_run: parameter counts against real models, estimates in the printed plan."""
import subprocess
import sys

from conftest import ROOT, tiny_overrides
from fintune.config import build_config
from fintune.train import plan


def test_parameter_counts_match_a_real_model_and_peft(tiny_llama_dir, tmp_path):
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, lora_r=8))
    est = plan.estimate(cfg, "peft")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert est["params"] == model.num_parameters()
    peft = get_peft_model(model, LoraConfig(r=8, target_modules=cfg.lora.target_modules))
    trainable, _ = peft.get_nb_trainable_parameters()
    assert est["trainable"] == trainable
    assert json.loads((tiny_llama_dir / "config.json").read_text())["tie_word_embeddings"] is True


def test_known_r1_sizes_without_download(tmp_path):
    cfg = build_config(overrides={"base_model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "load_in_4bit": True})
    est = plan.estimate(cfg, "unsloth")
    assert 14.6e9 < est["params"] < 14.9e9  # the model card says 14.8B
    cfg7 = build_config(overrides={"base_model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"})
    assert 7.5e9 < plan.estimate(cfg7, "peft")["params"] < 7.7e9  # 7.6B
    # 4-bit weights are about a third of 16-bit ones (embeddings stay 16-bit)
    w4 = est["memory"]["weights"]
    w16 = plan.estimate(build_config(overrides={"base_model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"}),
                        "unsloth")["memory"]["weights"]
    assert 0.25 < w4 / w16 < 0.4


def test_dry_run_prints_the_plan_and_loads_no_model():
    code = ("import sys; from fintune.cli import main; "
            "rc = main(['--config', 'configs/r1-distill-qwen-14b-24gb.yaml', '--backend', 'unsloth', '--dry_run']); "
            "assert 'transformers' not in sys.modules and 'unsloth' not in sys.modules; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for line in ("DeepSeek-R1-Distill-Qwen-14B (14.77B parameters, 4-bit base)", "backend          unsloth",
                 "estimated GPU memory:", "lora + grads + AdamW", "Q4_K_M GGUF", "estimated disk:"):
        assert line in out.stdout
