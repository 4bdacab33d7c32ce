"""Training stage on a tiny random model: what changes, what must not."""
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import tiny_overrides, tiny_trainer
from fintune.config import build_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama_dir):
    from fintune import data, train

    root = tmp_path_factory.mktemp("train")
    cfg = build_config(overrides=tiny_overrides(root, tiny_llama_dir))
    data.run(cfg)
    out = train.run(cfg)
    return cfg, out


def test_trl_version_is_the_one_that_trains_on_cpu():
    from importlib.metadata import version

    # TRL 1.15/1.16 SFTTrainer need a Triton GPU driver for their fused LM head.
    assert version("trl") == "1.14.2"


def test_lora_weights_changed_and_base_untouched(trained, tiny_llama_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg, out = trained
    adapter = load_file(str(Path(out) / "adapter_model.safetensors"))
    b = [v for k, v in adapter.items() if "lora_B" in k]
    assert b and all(torch.count_nonzero(t) > 0 for t in b)  # lora_B starts at zero
    base_before = load_file(str(tiny_llama_dir / "model.safetensors"))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out)
    base_after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                  for k, v in model.state_dict().items() if "lora_" not in k}
    for k, v in base_before.items():
        assert torch.equal(base_after[k], v), k



def test_lora_on_the_top_layers_trains_them_alone_and_backprop_stops_below(tiny_llama_dir, tmp_path):
    import torch

    from fintune.train.backends import load_peft

    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, lora_top_layers=1))
    model, _ = load_peft(cfg, str(tiny_llama_dir), on_cuda=False)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".layers.1." in n and "lora_" in n for n in trained)
    reached = []
    for i, layer in enumerate(model.get_base_model().model.layers):
        layer.register_full_backward_hook(lambda *_, i=i: reached.append(i))
    ids = torch.randint(0, 100, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    assert reached == [1]  # layer 0 has nothing to train: no gradient is computed through it
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_compiled_layers_keep_names_and_match_eager_loss_and_grads(tiny_llama_dir, tmp_path):
    import copy

    import torch

    from fintune.train.backends import compile_layers, load_peft

    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, torch_compile=True))
    eager, _ = load_peft(cfg, str(tiny_llama_dir), on_cuda=False)
    compiled = copy.deepcopy(eager)
    assert compile_layers(compiled) == 2
    # nn.Module.compile() sets the compiled forward here
    assert all(layer._compiled_call_impl is not None for layer in compiled.get_base_model().model.layers)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # the saved adapter's names
    torch.manual_seed(0)
    for length in (9, 14):  # a second length must not need a model of its own (dynamic shapes)
        ids = torch.randint(0, 1000, (2, length))
        mask = torch.ones_like(ids)
        mask[1, :3] = 0  # left padding: the layers get an explicit mask
        losses = [m(input_ids=ids, attention_mask=mask, labels=ids).loss for m in (eager, compiled)]
        for loss in losses:
            loss.backward()
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
        grads = [{n: p.grad for n, p in m.named_parameters() if p.requires_grad} for m in (eager, compiled)]
        assert grads[0].keys() == grads[1].keys()
        for name, g in grads[0].items():
            torch.testing.assert_close(grads[1][name], g, rtol=1e-3, atol=1e-5, msg=name)
        for m in (eager, compiled):
            m.zero_grad()


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compiled_layers_share_one_graph_when_every_layer_has_lora(tiny_llama_dir, tmp_path):
    import torch

    from fintune.train.backends import compile_layers, load_peft

    torch._dynamo.reset()
    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, torch_compile=True))
    model, _ = load_peft(cfg, str(tiny_llama_dir), on_cuda=False)
    before = _graphs_compiled()
    compile_layers(model)
    ids = torch.randint(0, 1000, (2, 11))
    assert model.get_input_embeddings()(ids).requires_grad  # layer 0's input now needs a gradient, as the others'
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()  # as in training: no KV cache
    assert _graphs_compiled() - before == 1  # layer 0 no longer compiles a variant of its own

    # LoRA on the top layer only: layer 0's input stays without a gradient, so the backward stops above it
    top, _ = load_peft(build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, torch_compile=True,
                                                             lora_top_layers=1)), str(tiny_llama_dir), on_cuda=False)
    compile_layers(top)
    assert not top.get_input_embeddings()(ids).requires_grad


def test_validation_of_a_compiled_model_runs_eager_and_compiles_nothing(tiny_llama_dir, tmp_path):
    import math

    import torch

    from fintune.train.backends import compile_layers, eager_evaluation, load_peft
    from fintune.train.loss import sft_trainer_class

    torch._dynamo.reset()
    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, torch_compile=True, max_steps=1))
    model, tok = load_peft(cfg, str(tiny_llama_dir), on_cuda=False)
    compile_layers(model)
    rows = [[{"role": "user", "content": f"What is {i} x 3?"}, {"role": "assistant", "content": f"Final answer: {3 * i}"}]
            for i in range(4)]
    trainer = tiny_trainer(cfg, model, tok, rows, eager_evaluation(sft_trainer_class(lean_loss=True)), eval_rows=rows)
    trainer.train()
    compiled = _graphs_compiled()
    loss = trainer.evaluate()["eval_loss"]
    assert _graphs_compiled() == compiled and math.isfinite(loss)
    model(input_ids=torch.tensor([trainer.train_dataset[0]["input_ids"]]))  # the training graphs stay in use
    assert all(layer._compiled_call_impl is not None for layer in model.get_base_model().model.layers)


def test_without_a_cxx_compiler_compile_is_skipped_not_failed(tiny_llama_dir, tmp_path, monkeypatch):
    import shutil

    from fintune.train.backends import compile_layers, load_peft

    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir))
    model, _ = load_peft(cfg, str(tiny_llama_dir), on_cuda=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert compile_layers(model) == 0
    assert all(layer._compiled_call_impl is None for layer in model.get_base_model().model.layers)


def test_lora_top_layers_beyond_the_model_means_every_layer(tiny_llama_dir, tmp_path):
    from types import SimpleNamespace

    from transformers import AutoConfig

    from fintune.train.backends import lora_layers

    model = SimpleNamespace(config=AutoConfig.from_pretrained(tiny_llama_dir))
    for top, want in ((0, None), (1, [1]), (2, None), (5, None)):
        cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, lora_top_layers=top))
        assert lora_layers(cfg, model) == want

def test_adapter_record_names_base_and_settings(trained, tiny_llama_dir):
    cfg, out = trained
    rec = json.loads((Path(out) / "fintune_adapter.json").read_text())
    assert rec["base_model_path"] == str(tiny_llama_dir)
    assert rec["lora"]["lora_r"] == 4 and rec["backend"] == "peft"
    assert rec["global_step"] == 3
    log = [json.loads(l) for l in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in row for row in log)
    assert (Path(out) / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_from_latest_checkpoint(trained):
    from fintune.train.trainer import resolve_checkpoint

    cfg, _ = trained
    latest = resolve_checkpoint("checkpoint-latest", cfg.train.checkpoint_dir)
    assert Path(latest).name == "checkpoint-3"  # save_steps=2, plus the final step
    assert resolve_checkpoint("latest", cfg.train.checkpoint_dir) == latest
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint("latest", Path(cfg.train.checkpoint_dir) / "nowhere")


def test_masked_positions_are_exactly_the_prompt(tokenizer):
    from fintune.templates import detect
    from fintune.train.trainer import build_dataset

    rows = [{"id": "a", "messages": [{"role": "user", "content": "Q?"},
                                     {"role": "assistant", "content": "A.\nFinal answer: 1"}]}]
    (ex,), stats = build_dataset(rows, tokenizer, detect(tokenizer.chat_template), 512)
    n_prompt = len(tokenizer(tokenizer.apply_chat_template(rows[0]["messages"][:1], tokenize=False,
                                                           add_generation_prompt=True),
                             add_special_tokens=False)["input_ids"])
    assert ex["labels"][:n_prompt] == [-100] * n_prompt
    assert all(l != -100 for l in ex["labels"][n_prompt:])


def test_overlong_rows_are_counted_not_silently_dropped(tokenizer):
    from fintune.templates import detect
    from fintune.train.trainer import build_dataset

    rows = [{"id": str(i), "messages": [{"role": "user", "content": "Q " * n},
                                        {"role": "assistant", "content": "A"}]} for i, n in enumerate((5, 900))]
    kept, stats = build_dataset(rows, tokenizer, detect(tokenizer.chat_template), 256)
    assert stats == {"kept": 1, "dropped_too_long": 1}


def test_unsloth_is_refused_without_cuda():
    from fintune.errors import UsageError
    from fintune.machine import cuda_available
    from fintune.train.backends import choose_backend

    if cuda_available():
        pytest.skip("machine has CUDA")
    with pytest.raises(UsageError, match="CUDA"):
        choose_backend("unsloth")
    assert choose_backend("auto").backend == "peft"


def test_avx2_cpu_trains_in_fp32_without_timing_bf16(monkeypatch):
    """On an x86 CPU without AVX512 there are no bf16 instructions; a timing
    taken while another process ran once chose bf16 there (100 s a step)."""
    import platform

    import torch

    from fintune.config import build_config
    from fintune import machine as backends  # the machine's bf16 speed lives in fintune.machine
    from fintune.train.trainer import pick_precision

    cfg = build_config(overrides={"precision": "auto"})
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(torch, "randn", lambda *a: (_ for _ in ()).throw(AssertionError("bf16 was timed")))
    assert backends.bf16_matmul_speedup() == 0.0
    assert pick_precision(cfg, on_cuda=False) == "fp32"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(backends, "bf16_matmul_speedup", lambda: 3.0)
    assert pick_precision(cfg, on_cuda=False) == "bf16"


def test_attention_auto_is_eager_only_where_the_layers_are_compiled_on_a_cpu(tmp_path, tiny_llama_dir, monkeypatch):
    from fintune.config import ConfigError
    from fintune import machine
    from fintune.train import backends

    def pick(on_cuda=False, precision="bf16", **flags):
        cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, **flags))
        return backends.attention_for(cfg, on_cuda, precision)

    monkeypatch.setattr(machine, "has_cpp_compiler", lambda: True)
    assert pick(torch_compile=True) == "eager"
    assert pick(torch_compile=True, precision="fp32") is None        # SDPA's fp32 kernel is the faster one
    assert pick(torch_compile=False) is None                         # eager mode: SDPA (transformers' default)
    assert pick(torch_compile=True, on_cuda=True) is None
    assert pick(torch_compile=True, max_seq_length=2048) is None     # long rows: no [T, T] scores kept per layer
    assert pick(torch_compile=False, attention="eager") == "eager"   # an explicit choice wins
    assert pick(torch_compile=True, attention="sdpa") == "sdpa"
    monkeypatch.setattr(machine, "has_cpp_compiler", lambda: False)
    assert pick(torch_compile=True) is None                          # nothing will be compiled
    with pytest.raises(ConfigError, match="train.attention must be one of auto, eager, sdpa"):
        build_config(overrides={"attention": "fast"})


def test_compiled_eager_attention_needs_one_graph_with_or_without_padding(tiny_llama_dir, tmp_path):
    """With SDPA a batch without padding reaches the layers with no mask and compiled a
    second variant (14 s of a cold first run, measured); eager attention always gets one."""
    import torch

    from fintune.train.backends import compile_layers, load_peft

    torch._dynamo.reset()
    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, torch_compile=True, attention="eager"))
    model, _ = load_peft(cfg, str(tiny_llama_dir), on_cuda=False)
    assert model.config._attn_implementation == "eager"
    before = _graphs_compiled()
    compile_layers(model)
    ids = torch.randint(0, 1000, (2, 11))
    padded = torch.ones_like(ids)
    padded[1, 8:] = 0
    for mask in (padded, torch.ones_like(ids)):
        model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss.backward()
    assert _graphs_compiled() - before == 1


def test_neftune_noises_the_embeddings_only_while_training(tiny_llama_dir, tmp_path):
    import torch
    from transformers import TrainerCallback

    from fintune.config import ConfigError
    from fintune.train.backends import load_peft

    rows = [[{"role": "user", "content": f"What is {i} x 3?"}, {"role": "assistant", "content": f"Final answer: {3 * i}"}]
            for i in range(4)]
    ids = torch.tensor([[5, 17, 42, 99]])
    seen = []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):  # in train mode by then
            emb = model.get_input_embeddings()
            seen.append((emb(ids) - emb.weight[ids]).abs().max().item())

    for alpha in (0.0, 5.0):
        cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, max_steps=2, val_fraction=0.0,
                                                    neftune_noise_alpha=alpha))
        model, tok = load_peft(cfg, str(tiny_llama_dir), on_cuda=False)
        trainer = tiny_trainer(cfg, model, tok, rows)
        trainer.add_callback(Probe())
        trainer.train()
        emb = model.get_input_embeddings()
        assert torch.equal(emb(ids), emb.weight[ids])  # no noise left on the embeddings after training
    off, on = seen[:2], seen[2:]
    # uniform noise of alpha / sqrt(length x hidden) per element; none with alpha 0
    assert off == [0.0, 0.0] and all(0 < d <= 5.0 / (4 * 256) ** 0.5 for d in on)
    with pytest.raises(ConfigError, match="neftune_noise_alpha"):
        build_config(overrides={"neftune_noise_alpha": -1.0})
