"""Optional DPO after SFT (--dpo): TRL's DPOTrainer on the preference pairs the
data stage wrote to dpo.jsonl, starting from the SFT adapter.

TRL copies a PEFT model's adapter into a frozen "ref" adapter when no reference
model is given (trl 1.14.2, trainer/dpo_trainer.py DPOTrainer.__init__,
model.add_adapter("ref", ...)), so the reference policy is the SFT model, as in the
DPO paper's recipe, without a second copy of the base weights.

The backend is SFT's: on CUDA with Unsloth the adapter is loaded through Unsloth
(backends.load_unsloth_adapter), and TRL's DPOTrainer is Unsloth's, since importing
unsloth rewrites TRL's trainers (unsloth 2026.10.9, models/llama.py runs
PatchFastRL -> models/rl.py patch_trl_rl_trainers; PatchDPOTrainer is a no-op kept
for old notebooks). On CUDA the plan's DPO line is checked before anything loads.
The tokenizer, with its chat template, is the SFT adapter's.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from fintune import machine
from fintune.adapters import read_adapter_record, sft_dir
from fintune.config import PipelineConfig
from fintune.errors import MissingError
from fintune.jsonl import read_jsonl
from fintune.plan.stages import dpo_seq, require_dpo_fit
from fintune.templates import detect
from fintune.train import backends
from fintune.train.trainer import pick_precision, resolve_optim, save_on_top

log = logging.getLogger(__name__)


def pairs_path(cfg: PipelineConfig) -> Path:
    return Path(cfg.data.data_dir) / "dpo.jsonl"


def run(cfg: PipelineConfig) -> Path:
    """DPO from the SFT adapter the training step left beside the output directory."""
    backends.import_unsloth_first(cfg)  # before pick_precision starts CUDA
    sft = sft_dir(cfg)
    model_path = read_adapter_record(sft)["base_model_path"]
    on_cuda = machine.cuda_available()
    return train_pairs(cfg, sft, Path(cfg.train.lora_output_dir), model_path, pick_precision(cfg, on_cuda),
                       on_cuda)


def as_trained(tokenizer, pairs: list[dict]) -> list[dict]:
    """Pairs in the text SFT trained, where the chat template cannot render a reply as the
    model writes it (DeepSeek-R1: templates._render_deepseek_r1). Given conversational
    pairs, TRL renders prompt + reply with the template and takes the completion where
    the token lists diverge (trl 1.14.2 dpo_trainer.py `tokenize_fn`); R1's template
    drops the reasoning block, so chosen and rejected would be trained without the
    `<think>` block SFT taught, and with the current template without the `<think>\n`
    its generation prompt opens. Given text, TRL tokenizes it with the tokenizer's own
    special tokens (trl/data_utils.py `_tokenize`: processing_class(text=...)) and adds
    EOS only where a reply lacks it: the BOS the tokenizer adds itself is taken off the
    prompt here, so the sequence has one, as in SFT. Other families render replies as
    trained and stay conversational."""
    family = detect(tokenizer.chat_template)
    if family.render is None:
        return pairs
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [bos]
    out = []
    for pair in pairs:
        prompt, chosen = family.split(tokenizer, pair["prompt"], pair["chosen"][-1])
        _, rejected = family.split(tokenizer, pair["prompt"], pair["rejected"][-1])
        if adds_bos:
            prompt = prompt.removeprefix(tokenizer.bos_token)
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


def load(cfg: PipelineConfig, sft: Path, model_path: str, precision: str, on_cuda: bool):
    """(trainable model from the SFT adapter, the SFT adapter's tokenizer, backend), through
    SFT's backend, after the plan's check on CUDA."""
    backend = backends.choose_backend(cfg.train.backend).backend
    if on_cuda:
        require_dpo_fit(cfg, backend)
    if backend == "unsloth":
        model, tokenizer = backends.load_unsloth_adapter(cfg, str(sft))
        return model, tokenizer, backend
    from peft import PeftModel
    from transformers import AutoTokenizer

    base, _ = backends.load_base(cfg, model_path, on_cuda, precision)
    model = PeftModel.from_pretrained(base, sft, is_trainable=True)
    return model, AutoTokenizer.from_pretrained(sft), backend


def train_pairs(cfg: PipelineConfig, sft: Path, out: Path, model_path: str, precision: str,
                on_cuda: bool) -> Path:
    path = pairs_path(cfg)
    if not path.is_file():
        raise MissingError(f"--dpo needs preference pairs: {path} not found (put prompt/chosen/rejected "
                                f"rows in {cfg.data.dataset_folder}/)")
    pairs = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in read_jsonl(path)]
    t = cfg.train
    model, tokenizer, backend = load(cfg, sft, model_path, precision, on_cuda)
    pairs = as_trained(tokenizer, pairs)
    # TRL after the load: Unsloth, where it is the backend, must be imported first
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(Path(t.checkpoint_dir) / "dpo"), beta=t.dpo_beta, learning_rate=t.dpo_learning_rate,
        max_steps=t.dpo_max_steps, num_train_epochs=1, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, logging_steps=t.logging_steps,
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, seed=t.train_seed,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not on_cuda,
        optim=resolve_optim(t.optim, on_cuda),
        max_length=dpo_seq(cfg), gradient_checkpointing=t.gradient_checkpointing,
        report_to=["tensorboard"], dataloader_num_workers=0)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer)
    start = time.time()
    result = trainer.train()
    save_on_top(trainer, tokenizer, sft, out, "sft", "dpo", {
        "sft_adapter": str(sft), "pairs": len(pairs), "beta": t.dpo_beta, "backend": backend,
        "global_step": trainer.state.global_step, "train_loss": getattr(result, "training_loss", None),
        "seconds": round(time.time() - start, 1)})
    log.info("dpo: %d pairs, %d steps, loss %s -> %s", len(pairs), trainer.state.global_step,
             getattr(result, "training_loss", "?"), out)
    return out
