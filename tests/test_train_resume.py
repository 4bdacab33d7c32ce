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
