"""CPU rehearsal of the two GPU profiles: each profile's own settings (template
family, max_seq_length, LoRA targets, instruction, merge-mode choice, eval
models, Modelfile) through every stage, on a tiny random Qwen2 that carries the
real DeepSeek-R1-Distill-Qwen tokenizer and chat template.

The base goes through the hub-id path: it sits in a Hugging Face cache under an
id, as a downloaded model would, and is found offline, so its size comes from
its config before anything loads. The 14B profile runs with the wheel's
template (generation prompt `<｜Assistant｜>`), the 7B one with the current
template (generation prompt `<｜Assistant｜><think>\\n`).

What is asserted is text, not only that a stage ran: every training example is
the model's own rendering of the prompt followed by the reply as the model
writes it; the eval prompt is the training prompt, with one BOS once llama.cpp
adds its own; a reply of the trained shape scores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LLAMA_CPP, ROOT, require_llama_cpp

pytestmark = pytest.mark.slow

HUB_ORG = "fintune-rehearsal"
R1_ASSISTANT = "<\uff5cAssistant\uff5c>"
RUNS = {  # profile -> template variant of its rehearsal
    "r1-distill-qwen-14b-24gb": "wheel",
    "r1-distill-qwen-7b-h100": "think",
}


def _hub_snapshot(cache: Path, repo_id: str) -> Path:
    """The folder layout huggingface_hub reads offline: refs/main names a snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, r1_tokenizer):
    """A hub cache holding a tiny random R1-Distill-Qwen per template variant."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1_tokenizer import current_r1_template

    cache = tmp_path_factory.mktemp("hub")
    wheel_template = r1_tokenizer.chat_template
    for variant, template in (("wheel", wheel_template), ("think", current_r1_template(wheel_template))):
        snap = _hub_snapshot(cache, f"{HUB_ORG}/tiny-r1-distill-qwen-{variant}")
        torch.manual_seed(0)
        tok = r1_tokenizer
        # untied embeddings and vocab 152,064 as in the real 7B/14B; sizes are multiples of 256 for K-quants
        cfg = Qwen2Config(vocab_size=152064, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                          tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(snap, safe_serialization=True)
        tok.chat_template = template
        try:
            tok.save_pretrained(snap)
        finally:
            tok.chat_template = wheel_template
    return cache


def _pipeline(flags: list[str], cache: Path) -> None:
    """`python train_financial_model.py FLAGS` as a user runs it, offline, with the hub
    cache above as the machine's (huggingface_hub reads HF_HUB_CACHE when imported)."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "train_financial_model.py"), *flags], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out.stdout + out.stderr


def _flags(root: Path, profile: str, variant: str) -> list[str]:
    """The profile, with only the base model, the paths and the run's length changed."""
    return ["--config", str(ROOT / "configs" / f"{profile}.yaml"), "--manifest", str(root / "run_manifest.json"),
            "--base_model", f"{HUB_ORG}/tiny-r1-distill-qwen-{variant}",
            "--dataset_folder", str(root / "datasets"), "--data_dir", str(root / "data"),
            "--num_generated", "60", "--heldout_fraction", "0.1",
            "--lora_output_dir", str(root / "lora"), "--checkpoint_dir", str(root / "ckpt"),
            "--max_steps", "2", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--llama_cpp_path", str(LLAMA_CPP), "--merged_model_dir", str(root / "merged"),
            "--gguf_f16_path", str(root / "m_f16.gguf"), "--gguf_q4_path", str(root / "m_q4_k_m.gguf"),
            "--gguf_q8_path", str(root / "m_q8_0.gguf"), "--modelfile_path", str(root / "Modelfile"),
            "--eval_dir", str(root / "eval"), "--eval_limit", "4", "--eval_max_new_tokens", "24",
            "--eval_files", "", "--no-eval_cache"]


@pytest.fixture(scope="module", params=list(RUNS))
def rehearsal(request, tmp_path_factory, hub_cache):
    from fintune.cli.parsers import load_config, parse, pipeline_parser

    require_llama_cpp()
    profile, variant = request.param, RUNS[request.param]
    root = tmp_path_factory.mktemp(f"rehearsal-{variant}")
    flags = _flags(root, profile, variant)
    log = _pipeline(flags, hub_cache)
    cfg = load_config(parse(pipeline_parser(), flags))
    return profile, variant, root, flags, cfg, log


def _tokenizer(cfg):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.train.lora_output_dir)


def test_every_stage_completed_and_a_rerun_does_nothing(rehearsal, hub_cache):
    profile, _, root, flags, cfg = rehearsal[:5]
    manifest = json.loads((root / "run_manifest.json").read_text())
    assert {k: v["status"] for k, v in manifest["stages"].items()} == dict.fromkeys(
        ["data", "train", "merge", "export", "eval"], "complete")
    assert cfg.profile == profile
    before = (root / "run_manifest.json").read_text()
    _pipeline(flags, hub_cache)
    assert (root / "run_manifest.json").read_text() == before


def test_the_profile_settings_reached_the_stages(rehearsal):
    from fintune.config import QWEN_LORA_TARGETS

    _, _, root, _, cfg = rehearsal[:5]
    record = json.loads((Path(cfg.train.lora_output_dir) / "fintune_adapter.json").read_text())
    assert record["chat_template_family"] == "deepseek-r1"
    assert record["model"]["max_seq_length"] == 4096
    assert record["base_model"].startswith(f"{HUB_ORG}/")  # a hub id, not a local folder
    adapter_cfg = json.loads((Path(cfg.train.lora_output_dir) / "adapter_config.json").read_text())
    assert sorted(adapter_cfg["target_modules"]) == sorted(QWEN_LORA_TARGETS)
    assert adapter_cfg["r"] == cfg.lora.lora_r == 32


def _split(ids, labels):
    first = next(i for i, label in enumerate(labels) if label != -100)
    assert all(label == -100 for label in labels[:first]) and labels[first:] == ids[first:]
    return first


def test_each_training_example_is_the_templates_prompt_then_the_reply_as_the_model_writes_it(rehearsal):
    from fintune.jsonl import read_jsonl
    from fintune.scoring.extract import extract
    from fintune.templates import detect, tokenize_example

    _, variant, _, _, cfg = rehearsal[:5]
    tok = _tokenizer(cfg)
    family = detect(tok.chat_template)
    all_rows = [r for r in read_jsonl(Path(cfg.data.data_dir) / "train.jsonl") if "messages" in r]
    rows = [r for r in all_rows if "tools" not in r]
    assert rows
    for row in [r for r in all_rows if "tools" in r]:  # calculator rows: calls in R1's own tokens
        ex = tokenize_example(tok, family, row["messages"], row["tools"])
        trained = tok.decode([i for i, l in zip(ex["input_ids"], ex["labels"]) if l != -100])
        assert "<\uff5ctool\u2581calls\u2581begin\uff5c>" in trained and "<\uff5ctool\u2581output" not in trained
        assert ex["input_ids"].count(tok.bos_token_id) == 1
    for row in rows:
        prompt_msgs = row["messages"][:-1]
        ex = tokenize_example(tok, family, row["messages"])
        first = _split(ex["input_ids"], ex["labels"])
        prompt_text = tok.decode(ex["input_ids"][:first])
        written = tok.decode(ex["input_ids"][first:])
        assert prompt_text == tok.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
        assert prompt_text.endswith(R1_ASSISTANT + ("<think>\n" if variant == "think" else ""))
        # the whole reply after <｜Assistant｜>: reasoning closed by </think>, the answer, EOS
        reply = ("<think>\n" if variant == "think" else "") + written
        assert reply.startswith("<think>\n") and reply.endswith(tok.eos_token)
        assert reply.count("<think>") == 1 and reply.count("</think>") == 1
        reasoning, answer = reply[len("<think>\n"):-len(tok.eos_token)].split("\n</think>\n\n")
        assert reasoning.strip() and answer.strip() and "\n" not in answer.strip()
        # in history the model's own template keeps what follows </think>: the trained answer
        history = tok.apply_chat_template(prompt_msgs + [{"role": "assistant", "content": reply[:-len(tok.eos_token)]}],
                                          tokenize=False)
        assert history.endswith(R1_ASSISTANT + "\n\n" + answer + tok.eos_token)
        assert extract(answer).explicit
        assert ex["input_ids"].count(tok.bos_token_id) == 1 and ex["input_ids"][0] == tok.bos_token_id


def test_eval_prompt_is_the_training_prompt_with_one_bos_at_llama_cpp(rehearsal):
    from fintune.jsonl import read_jsonl
    from fintune.prompts import instruction_text
    from fintune.templates import for_llama_cpp

    _, _, root, _, cfg = rehearsal[:5]
    tok = _tokenizer(cfg)
    instruction = instruction_text(cfg.data.instruction)
    train_user = next(r for r in read_jsonl(Path(cfg.data.data_dir) / "train.jsonl")
                      if r.get("source", "").startswith("generator:quant"))["messages"][0]["content"]
    assert cfg.data.instruction == "boxed" and train_user.endswith("\n\n" + instruction)
    preds = [p for p in read_jsonl(Path(cfg.eval.eval_dir) / "predictions.jsonl")]
    gguf_models = {"f16", "q8_0", "q4_k_m"}
    assert gguf_models & {p["model"] for p in preds}
    for p in preds:
        assert p["prompt"].startswith(tok.bos_token)
        user = p["prompt"][len(tok.bos_token):]
        assert instruction in user, "trained and evaluated with different instructions"
        if p["model"] in gguf_models:
            sent = for_llama_cpp(p["prompt"], cfg.export.gguf_path(p["model"].upper()))
            ids = tok(sent, add_special_tokens=True)["input_ids"]  # llama.cpp adds BOS (add_bos_token true)
            assert ids.count(tok.bos_token_id) == 1


def test_gguf_carries_the_trained_template_and_the_modelfile_its_generation_prompt(rehearsal):
    from fintune.export.gguf_check import verify
    from fintune.gguf import read_header

    _, variant, _, _, cfg = rehearsal[:5]
    tok = _tokenizer(cfg)
    for q in ["F16"] + list(cfg.export.quant_types):
        path = cfg.export.gguf_path(q)
        assert verify(path, q)["pre"] == "deepseek-r1-qwen"
        assert read_header(path, skip_arrays=False)["tokenizer.chat_template"] == tok.chat_template
    mf = Path(cfg.export.modelfile_path).read_text(encoding="utf-8")
    assert "chat template family: deepseek-r1" in mf
    # the generation prompt opens <think> where the trained template does, and only for a
    # question without tools (a calculator conversation is trained without the open block)
    opens = R1_ASSISTANT + "{{ if not $.Tools }}<think>\n{{ end }}"
    assert opens in mf if variant == "think" else ("<think>\n{{ end }}" not in mf and R1_ASSISTANT + "<think>" not in mf)


def test_a_reply_of_the_trained_shape_scores(rehearsal):
    from fintune.jsonl import read_jsonl
    from fintune.scoring.extract import expectation, extract, score
    from fintune.prompts import INSTRUCTIONS
    from fintune.templates import r1_reply

    _, variant, _, _, cfg = rehearsal[:5]
    items = list(read_jsonl(Path(cfg.data.data_dir) / "heldout.jsonl"))
    assert items
    for item in items:
        # as the model writes it after the generation prompt, which may have opened <think> already
        written = r1_reply("steps\n" + INSTRUCTIONS.get(cfg.data.instruction).answer_line(item["answer"]))
        if variant == "think":
            written = written.removeprefix("<think>\n")
        got = extract(written, open_think=variant == "think")
        assert got.method == "boxed"
        assert score(got, item["answer_numeric"], expectation(item["question"])).correct, (written, item["answer"])
