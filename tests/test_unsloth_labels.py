"""Defect 6 of issue 30: on the Unsloth path the training stage applied Unsloth's
train_on_responses_only on top of our own labels. It starts every row's labels at
-100, unmasks only spans after a response marker and drops rows left fully masked
(unsloth_zoo 2026.10.9, dataset_utils.py train_on_responses_only:
_train_on_responses_only, _filter_fully_masked), so plain-text rows (labels on every
token) never trained on a GPU. Here the stage's Unsloth branch runs with Unsloth's
loader replaced by the PEFT one (no GPU here): the rows reach the trainer with their
own labels and train. Before the fix the branch called
unsloth.chat_templates.train_on_responses_only, which is what the stand-in cannot
provide on a CPU, and the stage failed there."""
import json

from conftest import tiny_overrides
from fintune.config import build_config


def test_unsloth_branch_trains_plain_text_rows_on_their_own_labels(tmp_path, tiny_llama_dir, monkeypatch):
    from fintune.train import backends, trainer

    loaded = []

    def unsloth_stand_in(cfg, path):
        loaded.append(path)
        return backends.load_peft(cfg, path, False, "fp32")

    monkeypatch.setattr(backends, "choose_backend", lambda requested: backends.Choice("unsloth", "stand-in"))
    monkeypatch.setattr(backends, "load_unsloth", unsloth_stand_in)
    # unsloth is not installed here: its import-first step (tests/test_gpu_check.py checks it) stands aside
    monkeypatch.setattr(backends, "import_unsloth_first", lambda cfg: False)
    seen = {}
    make = trainer.make_trainer

    def recording(*a, **k):
        t = make(*a, **k)
        seen["labels"] = [row["labels"] for row in t.train_dataset]
        return t

    monkeypatch.setattr(trainer, "make_trainer", recording)
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": f"t{i}", "text": f"The bond's yield to maturity is {i + 3}.5% a year."} for i in range(4)]
    rows += [{"id": f"c{i}", "messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                          {"role": "assistant", "content": f"Final answer: {i + 1}"}]}
             for i in range(4)]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, val_fraction=0, max_steps=2,
                                                per_device_train_batch_size=8))
    out = trainer.run(cfg)
    assert loaded, "the Unsloth branch was not taken"
    assert len(seen["labels"]) == 8
    plain = [l for l in seen["labels"] if l[0] != -100]  # plain text: trained from the first token
    assert len(plain) == 4 and all(all(x != -100 for x in l) for l in plain)
    rec = json.loads((out / "fintune_adapter.json").read_text())
    assert rec["backend"] == "unsloth" and rec["global_step"] == 2 and rec["train_loss"] > 0
