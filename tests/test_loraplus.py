"""LoRA+: LoRA B steps at `loraplus_lr_ratio` x LoRA A's learning rate, through
warmup and decay; every trainable parameter is optimized exactly once; plain
LoRA (ratio 0) keeps the Trainer's own optimizer. Tiny random model."""
import pytest
import torch

from conftest import tiny_overrides, tiny_trainer
from fintune.config import ConfigError, build_config


def _trainer(tmp_path, tiny_llama_dir, ratio, steps=4):
    from fintune.train.backends import load_peft
    from fintune.train.loraplus import with_loraplus
    from fintune.train.loss import sft_trainer_class

    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, loraplus_lr_ratio=ratio, max_steps=steps,
                                                warmup_ratio=0.25, learning_rate=1e-3, logging_steps=1))
    model, tok = load_peft(cfg, str(tiny_llama_dir), on_cuda=False)
    rows = [[{"role": "user", "content": f"What is {i} + {i}?"},
             {"role": "assistant", "content": f"Formula: x = a + b\nFinal answer: {2 * i}"}] for i in range(8)]
    cls = with_loraplus(sft_trainer_class(lean_loss=True), cfg.lora.loraplus_lr_ratio)
    return tiny_trainer(cfg, model, tok, rows, cls), model


def _group_lrs(optimizer, model):
    """{'A' | 'B': set of learning rates of the groups holding such parameters}."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {"A": set(), "B": set()}
    for g in optimizer.param_groups:
        for p in g["params"]:
            out["B" if "lora_B" in names[id(p)] else "A"].add(g["lr"])
    return out


def test_lora_b_learns_ratio_times_faster_through_the_schedule(tmp_path, tiny_llama_dir):
    trainer, model = _trainer(tmp_path, tiny_llama_dir, ratio=16)
    seen = []

    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, **kw):
            seen.append(_group_lrs(optimizer, model))

    trainer.add_callback(Record())
    b_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert len(seen) == 4
    for lrs in seen:  # one rate per kind at each step, B at 16x A (warmup and cosine decay alike)
        assert len(lrs["A"]) == 1 and len(lrs["B"]) == 1
        (a,), (b,) = lrs["A"], lrs["B"]
        assert b == pytest.approx(16 * a)
    assert len({next(iter(s["A"])) for s in seen}) > 1  # the schedule really moved the rates
    # every trainable parameter sits in exactly one group; frozen ones in none
    grouped = [id(p) for g in trainer.optimizer.param_groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)
    assert all(not torch.equal(p, b_before[n]) for n, p in model.named_parameters() if "lora_B" in n)


def test_ratio_zero_keeps_one_learning_rate(tmp_path, tiny_llama_dir):
    trainer, model = _trainer(tmp_path, tiny_llama_dir, ratio=0, steps=1)
    assert "LoraPlus" not in type(trainer).__name__
    trainer.create_optimizer()
    lrs = _group_lrs(trainer.optimizer, model)
    assert lrs["A"] == lrs["B"] == {1e-3}


def test_ratio_below_one_is_refused():
    with pytest.raises(ConfigError, match="loraplus_lr_ratio"):
        build_config(overrides={"loraplus_lr_ratio": 0.5})
