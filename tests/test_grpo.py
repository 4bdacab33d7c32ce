"""GRPO after SFT (issue 32) on a tiny random model: one step changes the adapter and
not the base, the stage resumes from its checkpoint, --skip_grpo and an all-skip
rerun behave as for every stage, and no held-out question reaches its prompts."""
import hashlib
import json
import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from fintune.config import build_config

GRPO = {"grpo": True, "grpo_max_steps": 1, "grpo_num_generations": 2, "grpo_max_completion_length": 16,
        "grpo_learning_rate": 1e-2, "grpo_save_steps": 1}


def _cfg(root, model_dir, **kw):
    return build_config(overrides=tiny_overrides(root, model_dir, max_steps=2, save_steps=2, **{**GRPO, **kw}))


@pytest.fixture(scope="module")
def sft(tmp_path_factory, tiny_llama_dir):
    """The data stage and a 2-step SFT adapter, once for the module."""
    from fintune import data, train

    root = tmp_path_factory.mktemp("grpo")
    cfg = _cfg(root, tiny_llama_dir)
    data.run(cfg)
    train.run(cfg)
    return root


def _varied_reward(monkeypatch):
    """A random model's replies all earn the scorer's 0, so every group's advantage
    (reward minus the group's mean) is 0 and a GRPO step has no gradient (trl 1.14.2,
    grpo_trainer.py _generate_and_score_completions). One more reward that differs
    between a group's replies gives the step one; the project's rewards still run."""
    from fintune.train import rewards

    real = rewards.reward_funcs

    def distinct_chars(completions, **_):
        return [float(len(set(rewards.reply_text(c)))) for c in completions]

    monkeypatch.setattr(rewards, "reward_funcs", lambda t: real(t) + [distinct_chars])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_one_grpo_step_changes_the_adapter_and_leaves_the_base(sft, tiny_llama_dir, tmp_path, monkeypatch):
    from fintune.adapters import final_adapter_dir
    from fintune.train import grpo

    _varied_reward(monkeypatch)
    base_files = {p.name: _sha(p) for p in tiny_llama_dir.glob("*.safetensors")}
    cfg = _cfg(sft, tiny_llama_dir, checkpoint_dir=str(tmp_path / "ckpt"))
    out = grpo.run(cfg)
    assert out == final_adapter_dir(cfg) and out.name == "lora-grpo"
    rec = json.loads((out / "fintune_adapter.json").read_text())["grpo"]
    assert rec["global_step"] == 1 and rec["backend"] == "peft" and rec["source_adapter"] == str(sft / "lora")
    assert rec["prompts"] == rec["counts"]["kept:generated"] > 0
    before = load_file(str(sft / "lora" / "adapter_model.safetensors"))
    after = load_file(str(out / "adapter_model.safetensors"))
    assert before.keys() == after.keys()  # LoRA tensors only; no frozen "ref" copy, no base weights
    assert all("lora_" in k for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert {p.name: _sha(p) for p in tiny_llama_dir.glob("*.safetensors")} == base_files
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    logged = {k for row in log for k in row}
    # each component on its own, under TRL's rewards/<function name>/mean
    assert {"rewards/correct/mean", "rewards/format/mean", "rewards/steps/mean"} <= logged


@pytest.mark.slow
def test_grpo_resumes_from_its_checkpoint(sft, tiny_llama_dir, tmp_path, monkeypatch):
    import trl
    from transformers import TrainerCallback

    from fintune.train import grpo
    from fintune.errors import TrainingInterrupted

    _varied_reward(monkeypatch)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    class Killed(trl.GRPOTrainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback(Kill())

    cfg = _cfg(sft, tiny_llama_dir, checkpoint_dir=str(tmp_path / "ckpt"), lora_output_dir=str(sft / "lora"),
               grpo_max_steps=2, grpo_save_steps=5)
    monkeypatch.setattr(trl, "GRPOTrainer", Killed)
    with pytest.raises(TrainingInterrupted, match="resume_from_checkpoint latest"):
        grpo.run(cfg)
    # the signal saved a checkpoint at step 1 although save_steps is 5 (fintune/train/signals.py)
    assert (tmp_path / "ckpt" / "grpo" / "checkpoint-1").is_dir()
    monkeypatch.setattr(trl, "GRPOTrainer", Killed.__mro__[1])
    resumed = build_config(overrides={**tiny_overrides(sft, tiny_llama_dir, max_steps=2, save_steps=2), **GRPO,
                                      "checkpoint_dir": str(tmp_path / "ckpt"), "grpo_max_steps": 2,
                                      "grpo_save_steps": 5, "resume_from_checkpoint": "latest"})
    assert grpo.resume_point(resumed).endswith("checkpoint-1")
    out = grpo.run(resumed)
    rec = json.loads((out / "fintune_adapter.json").read_text())["grpo"]
    assert rec["global_step"] == 2 and rec["steps_this_run"] == 1
    steps = [row["step"] for row in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
             if "rewards/correct/mean" in row]
    assert steps == [1, 2]  # step 1 from the checkpoint's state, step 2 run after the resume
    # "latest" with no GRPO checkpoint (it was meant for SFT): GRPO starts afresh
    fresh = build_config(overrides={**tiny_overrides(sft, tiny_llama_dir), **GRPO,
                                    "checkpoint_dir": str(tmp_path / "none"), "resume_from_checkpoint": "latest"})
    assert grpo.resume_point(fresh) is None


@pytest.mark.slow
def test_skip_grpo_and_an_all_skip_rerun(sft, tiny_llama_dir, tmp_path, monkeypatch, caplog):
    from fintune.cli.parsers import SKIP_FLAGS
    from fintune.manifest import ArtifactError
    from fintune.pipeline import STAGES, inputs, run_pipeline

    _varied_reward(monkeypatch)
    cfg = _cfg(tmp_path, tiny_llama_dir, data_dir=str(sft / "data"))
    manifest = tmp_path / "m.json"
    assert list(run_pipeline(cfg, manifest, only=["data", "train", "grpo"], isolate=False)) == \
        ["data", "train", "grpo"]
    before = manifest.read_text()
    with caplog.at_level(logging.INFO, logger="fintune"):
        assert run_pipeline(cfg, manifest, only=["data", "train", "grpo"], isolate=False) == {}
        assert run_pipeline(cfg, manifest, skip=set(SKIP_FLAGS), isolate=False) == {}
        assert run_pipeline(cfg, manifest, skip={"skip_grpo"}, only=["grpo"], isolate=False) == {}
    assert "stage grpo   up to date" in caplog.text and "stage grpo   skipped (--skip_grpo)" in caplog.text
    assert manifest.read_text() == before
    adapter = tmp_path / "lora-grpo" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="adapter_model.safetensors"):
        run_pipeline(cfg, manifest, skip={"skip_grpo"}, only=["grpo"], isolate=False)
    assert list(run_pipeline(cfg, manifest, only=["data", "train", "grpo"], isolate=False)) == ["grpo"]
    merge = next(s for s in STAGES if s.name == "merge")
    # merge reads GRPO's adapter where --grpo is on, the training's (as before GRPO existed) where off
    assert inputs(merge, cfg) == ["grpo"]
    off = _cfg(tmp_path, tiny_llama_dir, grpo=False)
    assert inputs(merge, off) == ["train"]
    with caplog.at_level(logging.INFO, logger="fintune"):
        assert run_pipeline(off, tmp_path / "off.json", only=["grpo"], isolate=False) == {}
    assert "stage grpo   off" in caplog.text


def test_no_heldout_question_reaches_the_grpo_prompts(sft, tokenizer, tmp_path):
    from fintune.jsonl import read_jsonl, write_jsonl
    from fintune.prompts import text_hash
    from fintune.train.grpo import prompt_rows

    cfg = _cfg(sft, Path(tokenizer.name_or_path))
    train = list(read_jsonl(sft / "data" / "train.jsonl"))
    held = list(read_jsonl(sft / "data" / "heldout.jsonl"))
    rows, counts = prompt_rows(cfg, tokenizer)
    held_q = {text_hash(h["question"]) for h in held}
    assert rows and not held_q & {text_hash(r["question"]) for r in rows}
    assert counts["kept:generated"] == len(rows) == sum("answer_numeric" in r for r in train)
    # a held-out question slipped into train.jsonl, a user row ending in a final answer, one without
    data = tmp_path / "data"
    data.mkdir()
    (data / "heldout.jsonl").write_text((sft / "data" / "heldout.jsonl").read_text())
    leak = {**train[0], "id": "leak", "messages": [{"role": "user", "content": held[0]["question"]},
                                                    train[0]["messages"][1]]}
    user = {"id": "u1", "source": "user:a.jsonl", "messages": [
        {"role": "user", "content": "Revenue 200, costs 150. What is the margin in percent?"},
        {"role": "assistant", "content": "Margin = 50 / 200 = 25%\nFinal answer: 25%"}]}
    talk = {"id": "u2", "source": "user:a.jsonl", "messages": [
        {"role": "user", "content": "What is a bond?"}, {"role": "assistant", "content": "A loan you can trade."}]}
    write_jsonl(data / "train.jsonl", train + [leak, user, talk, {"id": "t", "source": "user:b.txt", "text": "x"}])
    rows2, counts2 = prompt_rows(_cfg(tmp_path, Path(tokenizer.name_or_path)), tokenizer)
    assert counts2["left_out:heldout_question"] == 1 and counts2["kept:user"] == 1
    assert counts2["left_out:no_checkable_answer"] == 2
    assert "leak" not in {r["id"] for r in rows2}
    u = next(r for r in rows2 if r["id"] == "u1")
    assert u["gold"] == 25.0 and u["solution"] is None and u["prompt"] == user["messages"][:1]


def test_prompts_are_asked_as_the_eval_asks(sft, r1_tokenizer_think, tokenizer):
    """The rendered prompt is eval/runner.py build_prompt's for the same question, and a
    template that opens <think> marks the rows so the rewards read the reply as R1's."""
    from fintune.eval.runner import build_prompt
    from fintune.train.grpo import prompt_rows

    cfg = _cfg(sft, Path(tokenizer.name_or_path))
    for tok, think in ((tokenizer, False), (r1_tokenizer_think, True)):
        rows, _ = prompt_rows(cfg, tok)
        r = rows[0]
        asked = tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
        assert asked == build_prompt(tok, {"question": r["question"]}, False, cfg.data.instruction)
        assert all(row["open_think"] is think for row in rows)


def _gpu_machine(monkeypatch, gpu_gib, ram_gib=128):
    """Stand-ins for the plan's machine queries, as tests/test_stage_plan.py machine()."""
    from fintune import machine
    from fintune.plan import lines as plan_lines
    from fintune.plan.shapes import GiB

    monkeypatch.setattr(machine, "cuda_available", lambda: True)
    monkeypatch.setattr(machine, "gpu_free_bytes", lambda: (gpu_gib - 0.5) * GiB)
    monkeypatch.setattr(machine, "gpu_total_bytes", lambda: gpu_gib * GiB)
    monkeypatch.setattr(machine, "ram_available_bytes", lambda: ram_gib * GiB)
    monkeypatch.setattr(machine, "disk_free_bytes", lambda path: 2000 * GiB)
    monkeypatch.setattr(plan_lines, "llama_cpp_cuda", lambda root: True)


@pytest.mark.parametrize("profile,gpu_gib", [("r1-distill-qwen-14b-24gb", 24), ("r1-distill-qwen-7b-h100", 80)])
def test_grpo_plan_line_fits_each_gpu_profile_and_counts_generation(profile, gpu_gib, monkeypatch, capsys):
    from conftest import ROOT
    from fintune import cli
    from fintune.config import load_yaml
    from fintune.plan import stages as plan_stages
    from fintune.plan.grpo import grpo_memory
    from fintune.plan.lines import this_machine
    from fintune.plan.shapes import GiB

    _gpu_machine(monkeypatch, gpu_gib)
    path = ROOT / "configs" / f"{profile}.yaml"
    cfg = build_config(load_yaml(path), {"grpo": True})
    lines = {ln.stage: ln for ln in plan_stages.stages(cfg, "unsloth", this_machine(cfg))}
    assert lines["grpo"].ok and lines["grpo"].gpu <= (gpu_gib - 0.5) * GiB
    assert list(lines).index("grpo") == list(lines).index("merge") - 1
    t = cfg.train
    # the KV cache of the step's replies grows with the group and the reply length
    assert grpo_memory(cfg, "unsloth", generations=2 * t.grpo_num_generations) > grpo_memory(cfg, "unsloth")
    assert grpo_memory(cfg, "unsloth", completion=2 * t.grpo_max_completion_length) > grpo_memory(cfg, "unsloth")
    # beta > 0 on PEFT: TRL's frozen reference adapter; Unsloth disables the adapter instead
    kl = build_config(load_yaml(path), {"grpo": True, "grpo_beta": 0.04})
    assert grpo_memory(kl, "peft") > grpo_memory(cfg, "peft") and grpo_memory(kl, "unsloth") == \
        grpo_memory(cfg, "unsloth")
    assert cli.run_main(["--config", str(path), "--grpo", "--backend", "unsloth", "--dry_run"]) == 0
    assert "  grpo  " in capsys.readouterr().out


def test_grpo_that_cannot_fit_stops_before_loading(tmp_path, monkeypatch):
    from conftest import ROOT
    from fintune.config import load_yaml
    from fintune.errors import UsageError
    from fintune.train import backends, grpo

    _gpu_machine(monkeypatch, 24)
    monkeypatch.setattr(backends, "choose_backend", lambda r: backends.Choice("unsloth", "test"))

    def no_load(*a, **k):
        raise AssertionError("loaded a model although the plan does not fit")

    monkeypatch.setattr(backends, "load_unsloth_adapter", no_load)
    cfg = build_config(load_yaml(ROOT / "configs" / "r1-distill-qwen-14b-24gb.yaml"),
                       {"grpo": True, "grpo_num_generations": 64, "grpo_max_completion_length": 3584})
    with pytest.raises(UsageError, match="not enough GPU memory for GRPO through unsloth.*--grpo_num_generations"):
        grpo.load(cfg, tmp_path / "lora", cfg.model.base_model, "bf16", on_cuda=True)
