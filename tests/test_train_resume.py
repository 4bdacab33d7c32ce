"""Interrupt, resume, early stopping: on a tiny random model, in-process."""
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from fintune.config import build_config


def _cfg(root, model_dir, **kw):
    return build_config(overrides=tiny_overrides(root, model_dir, max_steps=5, save_steps=4, eval_steps=2,
                                                 early_stopping_patience=0, **kw))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_llama_dir):
    from fintune import data

    root = tmp_path_factory.mktemp("resume-data")
    data.run(_cfg(root, tiny_llama_dir))
    return root / "data"


def _signal_at(step, monkeypatch):
    """Make the trainer send SIGTERM to this process at the end of `step`."""
    from transformers import TrainerCallback

    from fintune.train import trainer as tr

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGTERM)

    real = tr.make_trainer

    def make(*a, **k):
        t = real(*a, **k)
        t.add_callback(Kill())
        return t

    monkeypatch.setattr(tr, "make_trainer", make)


def _adapter(out):
    return load_file(str(Path(out) / "adapter_model.safetensors"))


def test_sigterm_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path, tiny_llama_dir,
                                                                               data_dir, monkeypatch):
    from fintune import train
    from fintune.errors import TrainingInterrupted

    straight = train.run(_cfg(tmp_path / "a", tiny_llama_dir, data_dir=str(data_dir)))

    cfg = _cfg(tmp_path / "b", tiny_llama_dir, data_dir=str(data_dir))
    with monkeypatch.context() as m:
        _signal_at(3, m)
        with pytest.raises(TrainingInterrupted, match="resume_from_checkpoint latest"):
            train.run(cfg)
    ckpt = Path(cfg.train.checkpoint_dir)
    assert (ckpt / "checkpoint-3" / "optimizer.pt").is_file()  # saved by the signal, not by save_steps=4
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers put back
    assert not Path(cfg.train.lora_output_dir).exists()  # no adapter that looks finished
    at_ckpt = json.loads((ckpt / "checkpoint-3" / "trainer_state.json").read_text())["num_input_tokens_seen"]

    resumed = train.run(_cfg(tmp_path / "b", tiny_llama_dir, data_dir=str(data_dir),
                             resume_from_checkpoint="latest"))
    rec = json.loads((Path(resumed) / "fintune_adapter.json").read_text())
    assert rec["global_step"] == 5
    # tokens/s of the resumed run counts the tokens of steps 4-5 only, not those since step 0
    assert 0 < at_ckpt < rec["trained_tokens"]
    assert rec["data"]["tokens_this_run"] == rec["trained_tokens"] - at_ckpt
    assert rec["tokens_per_second"] == pytest.approx(rec["data"]["tokens_this_run"] / rec["train_seconds"], rel=0.05)
    opt = torch.load(ckpt / "checkpoint-5" / "optimizer.pt", weights_only=False)
    assert {int(s["step"]) for s in opt["state"].values()} == {5}  # Adam moments continued, not restarted
    a, b = _adapter(straight), _adapter(resumed)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k  # same data order and RNG after resume


def test_early_stopping_restores_the_best_checkpoint(tmp_path, tiny_llama_dir, data_dir, monkeypatch):
    from transformers import TrainerCallback

    from fintune import train
    from fintune.train import trainer as tr

    class ScriptedLoss(TrainerCallback):
        """Eval loss 1.0 at step 1, 2.0 at step 2: the best checkpoint is not the last."""
        def on_evaluate(self, args, state, control, metrics=None, **kw):
            metrics["eval_loss"] = float(state.global_step)

    real = tr.make_trainer
    monkeypatch.setattr(tr, "make_trainer", lambda *a, **k: (t := real(*a, **k), t.add_callback(ScriptedLoss()))[0])
    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, data_dir=str(data_dir), max_steps=10,
                                                save_steps=1, eval_steps=1, save_total_limit=5,
                                                early_stopping_patience=1))
    out = train.run(cfg)
    rec = json.loads((Path(out) / "fintune_adapter.json").read_text())
    assert rec["global_step"] == 2  # of 10: no improvement at step 2, patience 1
    assert rec["best_checkpoint"].endswith("checkpoint-1") and rec["best_eval_loss"] == 1.0
    best = load_file(str(Path(rec["best_checkpoint"]) / "adapter_model.safetensors"))
    last = load_file(str(Path(cfg.train.checkpoint_dir) / "checkpoint-2" / "adapter_model.safetensors"))
    saved = _adapter(out)
    assert all(torch.equal(best[k], saved[k]) for k in best)
    assert not all(torch.equal(last[k], saved[k]) for k in last)
    assert (Path(out) / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_latest_resumes_this_runs_checkpoint_not_a_finished_run_with_other_settings(tmp_path, tiny_llama_dir,
                                                                                     data_dir, monkeypatch):
    """A finished run with lora_r 16 leaves checkpoint-5 in the shared folder; a run with
    lora_r 8 is stopped at step 3. `latest` must pick the r8 run's checkpoint-3 (the
    highest step, checkpoint-5, is the other run's and would not even load), the
    interrupted run's checkpoint must survive, and a third run's settings are refused
    on one line that names the setting that differs."""
    from fintune import train
    from fintune.errors import TrainingInterrupted, UsageError
    from fintune.train.identity import IDENTITY_FILE

    def cfg(r, **kw):
        return _cfg(tmp_path, tiny_llama_dir, data_dir=str(data_dir), lora_r=r, lora_alpha=2 * r, **kw)

    train.run(cfg(16))
    ckpt = Path(cfg(16).train.checkpoint_dir)
    assert (ckpt / "checkpoint-5").is_dir()
    assert json.loads((ckpt / "checkpoint-5" / IDENTITY_FILE).read_text())["settings"]["lora_r"] == 16
    with monkeypatch.context() as m:
        _signal_at(3, m)
        with pytest.raises(TrainingInterrupted):
            train.run(cfg(8))
    assert (ckpt / "checkpoint-3" / "optimizer.pt").is_file()  # the interrupted run's work is kept
    assert (ckpt / "checkpoint-5").is_dir()  # and the other run's highest step is still there

    with pytest.raises(UsageError) as refused:
        train.run(cfg(4, resume_from_checkpoint="latest"))
    msg = str(refused.value)
    assert "\n" not in msg and "checkpoint-5" in msg and "lora_r 16 (this run: 4)" in msg, msg
    with pytest.raises(UsageError, match=r"lora_r 16 \(this run: 8\)"):
        train.run(cfg(8, resume_from_checkpoint=str(ckpt / "checkpoint-5")))

    resumed = train.run(cfg(8, resume_from_checkpoint="latest"))
    rec = json.loads((Path(resumed) / "fintune_adapter.json").read_text())
    assert rec["global_step"] == 5 and rec["lora"]["lora_r"] == 8
    a = _adapter(resumed)
    assert all(8 in tuple(t.shape) for k, t in a.items() if "lora_A" in k)
    # steps 4-5 only: resumed from step 3, not from step 5 of the r16 run (which would train 0 steps)
    assert rec["data"]["tokens_this_run"] > 0
