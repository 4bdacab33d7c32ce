"""Batched CPU training changes speed, not what is learned: each example in a
training batch keeps exactly its assistant-token loss mask and attends only
within itself, and the label-positions loss equals transformers' own loss
and gradients. Tiny random model, real SmolLM2 tokenizer and chat template."""
import pytest
import torch

from conftest import tiny_overrides, tiny_trainer
from fintune.config import build_config

ROWS = [
    [{"role": "user", "content": "What is the Sharpe ratio of a fund returning 12% with 15% volatility?"},
     {"role": "assistant", "content": "Formula: S = (R - Rf) / sigma\nFinal answer: 0.6"}],
    [{"role": "user", "content": "Define beta."}, {"role": "assistant", "content": "Beta is the slope."}],
    [{"role": "user", "content": "A stock fell from $80 to $60. What was the drawdown in percent?"},
     {"role": "assistant", "content": "Formula: dd = 1 - P1 / P0\nSubstitute: P0 = 80, P1 = 60\nFinal answer: 25"}],
]


# "eager" is what train.attention auto picks for bf16 training with compiled layers on a CPU, sdpa elsewhere
@pytest.fixture(scope="module", params=["sdpa", "eager"])
def setup(request, tiny_llama_dir, tmp_path_factory):
    from fintune.templates import detect, tokenize_example
    from fintune.train.backends import load_peft

    root = tmp_path_factory.mktemp("packing")
    cfg = build_config(overrides=tiny_overrides(root, tiny_llama_dir, per_device_train_batch_size=3, max_steps=1,
                                                attention=request.param))
    model, tok = load_peft(cfg, str(tiny_llama_dir), on_cuda=False)
    assert model.config._attn_implementation == request.param
    with torch.no_grad():  # LoRA B starts at zero: make the adapter matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    examples = [tokenize_example(tok, detect(tok.chat_template), r) for r in ROWS]
    trainer = tiny_trainer(cfg, model, tok, ROWS)
    batch = next(iter(trainer.get_train_dataloader()))
    return model, examples, batch


def _alone(model, ex):
    ids = torch.tensor([ex["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]


def _rows_by_example(batch, examples):
    """Which batch row holds which example (the sampler reorders by length)."""
    out = {}
    for row in range(batch["input_ids"].shape[0]):
        n = int(batch["attention_mask"][row].sum())
        out[row] = next(i for i, ex in enumerate(examples) if ex["input_ids"] == batch["input_ids"][row, :n].tolist())
    return out


def test_batched_example_masks_exactly_its_assistant_tokens(setup):
    _, examples, batch = setup
    assert batch["input_ids"].shape[0] == 3 and "attention_mask" in batch
    for row, i in _rows_by_example(batch, examples).items():
        n = len(examples[i]["input_ids"])
        assert batch["labels"][row, :n].tolist() == examples[i]["labels"]   # -100 on the prompt, ids on the reply
        assert (batch["labels"][row, n:] == -100).all()                     # nothing learned from padding
        assert (batch["attention_mask"][row, n:] == 0).all()


def test_batched_example_attends_only_within_itself(setup):
    model, examples, batch = setup
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for row, i in _rows_by_example(batch, examples).items():
        n = len(examples[i]["input_ids"])
        torch.testing.assert_close(logits[row, :n], _alone(model, examples[i]), atol=2e-4, rtol=1e-4)


def test_label_positions_loss_equals_transformers_loss_and_gradients(setup):
    from fintune.train.loss import label_positions_loss

    model, _, batch = setup
    params = [p for p in model.parameters() if p.requires_grad]
    # full logits (without labels the forward TRL patched is the model's own), then the shifted
    # cross-entropy over label positions, as transformers' ForCausalLMLoss computes it
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    reference = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                                  batch["labels"][:, 1:].flatten(), ignore_index=-100)
    ref_grads = torch.autograd.grad(reference, params)
    ours = label_positions_loss(model, batch)
    our_grads = torch.autograd.grad(ours, params)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    for a, b in zip(our_grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    n = int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(label_positions_loss(model, batch, num_items_in_batch=2 * n), reference / 2,
                               atol=1e-5, rtol=1e-5)  # sum / items across accumulated batches
