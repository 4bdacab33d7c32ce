"""DPO after SFT on a tiny random model: one step runs, starts from the SFT
adapter and changes it; the reference is the SFT policy."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from fintune.config import build_config

PAIRS = [{"prompt": f"Should I risk {p}% of my account on one trade?",
          "chosen": f"No. Risk 1-2% per trade; {p}% can wipe out the account after a few losses.",
          "rejected": "Yes, go big."} for p in (10, 20, 30, 50)]


def test_dpo_runs_a_step_from_the_sft_adapter(tmp_path, tiny_llama_dir):
    from fintune import data, train

    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, dpo=True, dpo_max_steps=1,
                                                dpo_learning_rate=1e-2, max_steps=2, save_steps=2))
    data.run(cfg)
    out = Path(train.run(cfg))
    rec = json.loads((out / "fintune_adapter.json").read_text())
    assert rec["dpo"]["global_step"] == 1 and rec["dpo"]["pairs"] == 4 and rec["dpo"]["beta"] == 0.1
    sft = load_file(str(Path(rec["dpo"]["sft_adapter"]) / "adapter_model.safetensors"))
    final = load_file(str(out / "adapter_model.safetensors"))
    assert sft.keys() == final.keys()  # the trained adapter only, not TRL's frozen "ref" copy
    assert any(not torch.equal(sft[k], final[k]) for k in sft)
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("rewards/chosen" in row or "loss" in row for row in log)


def test_sft_and_dpo_run_in_processes_of_their_own(tmp_path, tiny_llama_dir):
    """Through train.py: the SFT step and the DPO step are two fresh processes, so
    DPO's second load of the base never shares memory with the SFT model."""
    import os
    import subprocess
    import sys

    from conftest import ROOT, as_flags

    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    flags = as_flags(tiny_overrides(tmp_path, tiny_llama_dir, dpo=True, dpo_max_steps=1, max_steps=2, save_steps=2))
    out = subprocess.run([sys.executable, "train.py", "--config", "configs/cpu-smollm2.yaml",
                          "--manifest", str(tmp_path / "m.json")] + flags,
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    pids = json.loads((tmp_path / "m.json").read_text())["stages"]["train"]["pids"]
    assert len(pids) == 2 and len(set(pids)) == 2 and os.getpid() not in pids
    rec = json.loads((tmp_path / "lora" / "fintune_adapter.json").read_text())
    assert rec["dpo"]["global_step"] == 1 and rec["dpo"]["sft_adapter"].endswith("lora-sft")


def _sft_adapter(tmp_path, base_dir, template: str):
    """An SFT adapter as the training stage leaves it, its tokenizer carrying `template`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fintune.adapters import ADAPTER_RECORD

    sft = tmp_path / "lora-sft"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(sft)
    tok = AutoTokenizer.from_pretrained(base_dir)
    tok.chat_template = template
    tok.save_pretrained(sft)
    (sft / ADAPTER_RECORD).write_text(json.dumps({"base_model": str(base_dir), "base_model_path": str(base_dir)}))
    return sft


def _pairs(cfg):
    from fintune.jsonl import write_jsonl
    from fintune.train.dpo import pairs_path

    pairs_path(cfg).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(pairs_path(cfg), PAIRS)


def test_dpo_keeps_the_sft_adapters_tokenizer(tmp_path, tiny_llama_dir):
    """Defect 3: DPO saved the base's tokenizer over the one the SFT adapter carries
    (its chat template). Here the adapter's template differs from the base's."""
    from transformers import AutoTokenizer

    from fintune.train import dpo

    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\nReasoning: {% endif %}")
    base_template = AutoTokenizer.from_pretrained(tiny_llama_dir).chat_template
    assert template != base_template
    sft = _sft_adapter(tmp_path, tiny_llama_dir, template)
    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, dpo=True, dpo_max_steps=1))
    _pairs(cfg)
    out = dpo.train_pairs(cfg, sft, tmp_path / "lora", str(tiny_llama_dir), "fp32", on_cuda=False)
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.chat_template == template
    assert json.loads((out / "fintune_adapter.json").read_text())["dpo"]["backend"] == "peft"


def test_dpo_on_a_24_gb_card_stops_before_loading(tmp_path, monkeypatch):
    """DPO now checks its own plan line (policy, reference adapter, chosen + rejected
    rows and their logits) before anything loads; loading is made to fail loudly."""
    import pytest
    import transformers

    from conftest import ROOT
    from fintune.config import load_yaml
    from fintune.errors import UsageError
    from fintune import machine
    from fintune.plan.shapes import GiB
    from fintune.train import backends, dpo

    monkeypatch.setattr(machine, "gpu_free_bytes", lambda: 23.5 * GiB)
    monkeypatch.setattr(backends, "choose_backend", lambda requested: backends.Choice("unsloth", "stand-in"))

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the memory check")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    monkeypatch.setattr(backends, "load_unsloth_adapter", no_load)
    cfg = build_config(load_yaml(ROOT / "configs" / "r1-distill-qwen-14b-24gb.yaml"),
                       {"dpo": True, "data_dir": str(tmp_path)})
    _pairs(cfg)
    with pytest.raises(UsageError, match="not enough GPU memory for DPO through unsloth.*--dpo_max_seq_length"):
        dpo.train_pairs(cfg, tmp_path / "lora-sft", tmp_path / "lora", cfg.model.base_model, "bf16", on_cuda=True)


@pytest.mark.parametrize("variant", ["wheel", "think"])
def test_r1_pairs_are_trained_in_the_text_sft_trained(variant, tiny_qwen2_r1_dir, tmp_path):
    """TRL's own tokenization of the pairs (DPOTrainer's prepared dataset) gives prompt +
    chosen exactly the ids SFT trains for that conversation: the template's prompt with
    one BOS, then `<think>` reasoning `</think>` and the answer with EOS. Given the pairs
    as conversations, TRL rendered the chosen reply with R1's template, which drops the
    reasoning block (and, with the current template, the `<think>\\n` the prompt opens)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from fintune.templates import detect, tokenize_example
    from fintune.train.dpo import as_trained
    from r1_tokenizer import current_r1_template

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_r1_dir)
    if variant == "think":
        tok.chat_template = current_r1_template(tok.chat_template)
    rows = [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": "<think>\nrisk of ruin\n</think>\n\n" + p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in PAIRS[:2]]
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_length=512)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_r1_dir), args=args,
                         train_dataset=Dataset.from_list(as_trained(tok, rows)), processing_class=tok)
    for row, ex in zip(rows, trainer.train_dataset):
        sft = tokenize_example(tok, detect(tok.chat_template), row["prompt"] + row["chosen"])
        assert ex["prompt_ids"] + ex["chosen_ids"] == sft["input_ids"]
        assert ex["prompt_ids"].count(tok.bos_token_id) == 1
        written = tok.decode(ex["chosen_ids"])
        assert "risk of ruin\n</think>\n\n" in written and written.endswith(tok.eos_token)
        assert "</think>\n\n" in tok.decode(ex["rejected_ids"])  # an answer without reasoning: empty block
