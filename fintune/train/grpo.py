"""Optional GRPO after SFT (and DPO), the stage "grpo" (--grpo): TRL's GRPOTrainer
samples train.grpo_num_generations replies to each training question and rewards
them with the eval's scorer (fintune/train/rewards.py), starting from the training
stage's adapter and writing its own (fintune.adapters.grpo_dir), which merge, export
and eval then use (fintune.adapters.final_adapter_dir). With train.grpo off the stage
does not run, and merge and eval take the training's adapter (pipeline.py Stage.off).

Prompts: the data stage's train.jsonl only, never heldout.jsonl (a row whose
question is a held-out question is dropped and counted even so), asked exactly as
SFT trained them and the eval asks (the row's own user turn, rendered by the
model's chat template with the generation prompt, as eval/runner.py build_prompt).
Gold: a generated row's `answer_numeric` (the generator's exact answer); a user
row's explicit final answer at the end of its reply. Rows with neither are left
out and counted in the adapter record.

Reference model: with a PEFT model and beta > 0, TRL copies the adapter into a
frozen "ref" adapter (trl 1.14.2, trainer/grpo_trainer.py GRPOTrainer.__init__,
`elif is_peft_model(model) and args.beta != 0.0`), so the reference is the SFT
policy on the same base weights; Unsloth removes that block and computes the
reference with the adapter disabled, i.e. the base (unsloth 2026.10.9,
models/rl.py, the `add_adapter_block_pattern` / `peft_pattern` rewrites). Either
way no second copy of the weights; with beta = 0 no reference pass at all. The two
references train different objectives, so beta > 0 on Unsloth is refused
(refuse_unsloth_reference; config.py for an explicit train.backend unsloth).

Backends: on CUDA with Unsloth, the adapter is loaded through Unsloth first, which
patches TRL's GRPOTrainer (models/rl.py patch_trl_rl_trainers); with
train.grpo_use_vllm set and vLLM installed it loads with fast_inference=True, and
Unsloth then turns on use_vllm in colocate mode for a model carrying a `vllm_engine`
(models/rl.py, the "Set use_vllm if not set" block). Elsewhere PEFT: the base + the adapter with is_trainable=True, and
TRL's own generation (model.generate).
"""
from __future__ import annotations

import logging
import re
import time
from collections import Counter
from pathlib import Path

from fintune import machine
from fintune.adapters import grpo_dir, read_adapter_record
from fintune.config import PipelineConfig
from fintune.errors import MissingError, TrainingInterrupted, UsageError
from fintune.jsonl import read_jsonl
from fintune.plan.grpo import require_grpo_fit, use_vllm
from fintune.plan.lines import require_train_fit_on_cpu
from fintune.prompts import first_user_text, text_hash
from fintune.scoring.extract import extract
from fintune.train import backends, signals
from fintune.train import rewards  # module, so a test can swap rewards.reward_funcs
from fintune.train.trainer import pick_precision, resolve_optim, save_on_top

log = logging.getLogger(__name__)


def checkpoints(cfg: PipelineConfig) -> Path:
    return Path(cfg.train.checkpoint_dir) / "grpo"


def run(cfg: PipelineConfig) -> Path:
    """The stage: GRPO from the training stage's adapter (that adapter itself where --grpo is off)."""
    source = Path(cfg.train.lora_output_dir)
    record = read_adapter_record(source)
    if not cfg.train.grpo:
        return source
    backends.import_unsloth_first(cfg)  # before pick_precision starts CUDA
    refuse_unsloth_reference(cfg, backends.choose_backend(cfg.train.backend).backend)
    if machine.world_size() > 1:
        raise UsageError("--grpo runs in a single process; train SFT under torchrun, then GRPO without it")
    on_cuda = machine.cuda_available()
    return train_grpo(cfg, source, grpo_dir(cfg), record["base_model_path"], pick_precision(cfg, on_cuda),
                      on_cuda)


def refuse_unsloth_reference(cfg: PipelineConfig, backend: str) -> None:
    """grpo_beta > 0 trains another objective on Unsloth than on TRL (the module's
    docstring, "Reference model"): refused before anything loads, whichever way the
    backend was chosen (train.backend auto picks Unsloth on a GPU)."""
    if backend == "unsloth" and cfg.train.grpo_beta > 0:
        raise UsageError(f"train.grpo_beta {cfg.train.grpo_beta:g} on the Unsloth backend: Unsloth's GRPO takes "
                         "the base model (adapter disabled) as the KL reference where TRL takes the SFT adapter; "
                         "set --grpo_beta 0, or --backend peft for TRL's reference")


# ---- prompts ---------------------------------------------------------------

def _question(row: dict) -> str:
    text = first_user_text(row["messages"])
    # a generated prompt is the question, then the instruction (fintune/prompts.py user_prompt)
    return text.split("\n\n")[0] if str(row.get("source", "")).startswith("generator:") else text


def _solution_text(replies: list[dict]) -> str:
    """The worked solution's lines over every assistant turn (a calculator solution writes
    its formula and substitution before the calls and its answer after the results)."""
    return "\n".join(m.get("content") or "" for m in replies if m["role"] == "assistant")


def _user_gold(reply: str) -> float | None:
    """The explicit final answer a user row's reply ends with, or None."""
    ex = extract(reply)
    last = next((ln for ln in reversed(reply.strip().splitlines()) if ln.strip()), "")
    return ex.value if ex.explicit and ex.raw and ex.raw.strip() in last else None


def heldout_hashes(cfg: PipelineConfig) -> set[str]:
    path = Path(cfg.data.data_dir) / "heldout.jsonl"
    return {text_hash(item["question"]) for item in read_jsonl(path)} if path.is_file() else set()


def prompt_rows(cfg: PipelineConfig, tokenizer) -> tuple[list[dict], Counter]:
    """(GRPO's prompt rows, counts of what was kept and left out, by reason)."""
    path = Path(cfg.data.data_dir) / "train.jsonl"
    if not path.is_file():
        raise MissingError(f"--grpo needs the data stage's {path}: run the data stage first")
    held = heldout_hashes(cfg)
    room = cfg.model.max_seq_length - cfg.train.grpo_max_completion_length
    rows, counts = [], Counter()
    for row in read_jsonl(path):
        msgs = row.get("messages")
        if not msgs or msgs[-1]["role"] != "assistant" or len(msgs) < 2:
            counts["left_out:no_checkable_answer"] += 1
            continue
        question = _question(row)
        if text_hash(question) in held:
            counts["left_out:heldout_question"] += 1
            continue
        generated = row.get("answer_numeric") is not None
        gold = float(row["answer_numeric"]) if generated else _user_gold(msgs[-1]["content"])
        if gold is None:
            counts["left_out:no_checkable_answer"] += 1
            continue
        # up to the first reply, without the tools: TRL's GRPOTrainer runs no tool loop, so a
        # calculator conversation is asked as its question alone and answered by hand
        first_reply = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        prompt = msgs[:first_reply]
        rendered = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        if len(tokenizer(rendered, add_special_tokens=False)["input_ids"]) > room:
            counts["left_out:prompt_too_long"] += 1
            continue
        counts["kept:generated" if generated else "kept:user"] += 1
        rows.append({"id": row["id"], "prompt": prompt, "gold": gold, "question": question,
                     # the worked solution the formula and substitution lines are checked against
                     "solution": _solution_text(msgs[first_reply:]) if generated else None,
                     "open_think": rendered.endswith("<think>\n")})
    if not rows:
        raise UsageError(f"--grpo: no training row of {path} has a checkable numeric answer "
                         f"({dict(counts)}); generated rows carry one (data.generators quant)")
    return rows, counts


# ---- the trainer -----------------------------------------------------------

def grpo_args(cfg: PipelineConfig, precision: str, on_cuda: bool, vllm: bool):
    """The train.grpo_* settings under TRL's names. A micro-batch holds num_generations
    replies and grpo_prompts_per_step micro-batches make an optimizer step (the generation
    batch, generated at once). TRL shuffles the generation batch's rows before splitting it
    into micro-batches (trl 1.14.2 grpo_trainer.py GRPOTrainer._prepare_inputs:
    shuffle_sequence_dict, then split_tensor_dict), so with more than one prompt per step a
    micro-batch mixes the groups' replies; advantages are computed per group before that."""
    from trl import GRPOConfig

    t = cfg.train
    return GRPOConfig(
        output_dir=str(checkpoints(cfg)), num_generations=t.grpo_num_generations,
        max_completion_length=t.grpo_max_completion_length, beta=t.grpo_beta, learning_rate=t.grpo_learning_rate,
        max_steps=t.grpo_max_steps, temperature=t.grpo_temperature,
        per_device_train_batch_size=t.grpo_num_generations, gradient_accumulation_steps=t.grpo_prompts_per_step,
        logging_steps=1, save_steps=t.grpo_save_steps, save_total_limit=t.save_total_limit, seed=t.train_seed,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not on_cuda,
        optim=resolve_optim(t.optim, on_cuda), gradient_checkpointing=t.gradient_checkpointing,
        use_vllm=vllm, **({"vllm_mode": "colocate"} if vllm else {}),
        report_to=["tensorboard"], dataloader_num_workers=0)


def load(cfg: PipelineConfig, adapter: Path, model_path: str, precision: str, on_cuda: bool):
    """(trainable model from the adapter, the adapter's tokenizer, backend), after the plan's
    check: on CUDA the GPU line, on a CPU the RAM the training stage checks."""
    backend = backends.choose_backend(cfg.train.backend).backend
    if on_cuda:
        require_grpo_fit(cfg, backend)
    else:
        require_train_fit_on_cpu(cfg)
    if backend == "unsloth":
        vllm = use_vllm(cfg, backend)
        extra = {"fast_inference": True, "max_lora_rank": cfg.lora.lora_r} if vllm else {}
        model, tokenizer = backends.load_unsloth_adapter(cfg, str(adapter), **extra)
        return model, tokenizer, backend
    from peft import PeftModel
    from transformers import AutoTokenizer

    base, _ = backends.load_base(cfg, model_path, on_cuda, precision)
    model = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    return model, AutoTokenizer.from_pretrained(adapter), backend


def resume_point(cfg: PipelineConfig) -> str | None:
    """--resume_from_checkpoint latest: GRPO's newest checkpoint-N, where there is one (the
    flag may have been meant for the SFT run before it); a path inside GRPO's folder as given."""
    value, folder = cfg.train.resume_from_checkpoint, checkpoints(cfg)
    if value in ("latest", "checkpoint-latest"):
        found = [p for p in folder.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
        return str(max(found, key=lambda p: int(p.name.split("-")[1]))) if found else None
    if value and Path(value).resolve().parent == folder.resolve():
        return value
    return None


class GenerationClock:
    """Seconds spent in model.generate, TRL's own generation (under unwrap_model_for_generation,
    trl 1.14.2 GRPOTrainer._generate_single_turn, on the model it was given); vLLM's is not timed."""

    def __init__(self, model):
        self.seconds, inner = 0.0, model.generate

        def generate(*a, **k):
            start = time.time()
            try:
                return inner(*a, **k)
            finally:
                self.seconds += time.time() - start

        model.generate = generate


def train_grpo(cfg: PipelineConfig, source: Path, out: Path, model_path: str, precision: str,
               on_cuda: bool) -> Path:
    model, tokenizer, backend = load(cfg, source, model_path, precision, on_cuda)
    # TRL after the load: Unsloth, where it is the backend, must be imported first
    from datasets import Dataset
    from trl import GRPOTrainer

    rows, counts = prompt_rows(cfg, tokenizer)
    log.info("grpo: %d prompts (%s)", len(rows), ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    args = grpo_args(cfg, precision, on_cuda, use_vllm(cfg, backend))
    clock = None if args.use_vllm else GenerationClock(model)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards.reward_funcs(cfg.train), args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    resume = resume_point(cfg)
    if resume:
        log.info("grpo: resuming from %s", resume)
    start = time.time()
    with signals.checkpoint_on_signal(trainer) as stopper:
        result = trainer.train(resume_from_checkpoint=resume)
    if stopper.received:
        raise TrainingInterrupted(
            f"GRPO stopped by {stopper.received} at step {trainer.state.global_step}; checkpoint saved in "
            f"{checkpoints(cfg)}; continue with --resume_from_checkpoint latest")
    return save(cfg, trainer, tokenizer, source, out, counts, backend, time.time() - start, result,
                clock.seconds if clock else None, int(Path(resume).name.split("-")[1]) if resume else 0)


def save(cfg, trainer, tokenizer, source: Path, out: Path, counts: Counter, backend: str, seconds: float,
         result, generation_seconds: float | None, first_step: int = 0) -> Path:
    t, history = cfg.train, trainer.state.log_history
    steps = [h for h in history if "completions/mean_length" in h]
    # this run's steps: a resumed run's history starts with the checkpoint's
    session = [h for h in steps if h["step"] > first_step]
    tokens = round(sum(h["completions/mean_length"] for h in session) * t.grpo_num_generations
                   * t.grpo_prompts_per_step)
    save_on_top(trainer, tokenizer, source, out, "before_grpo", "grpo", {
        "source_adapter": str(source), "backend": backend, "use_vllm": trainer.args.use_vllm,
        "prompts": sum(v for k, v in counts.items() if k.startswith("kept:")), "counts": dict(counts),
        **{k: getattr(t, k) for k in vars(t) if k.startswith("grpo_")},
        "global_step": trainer.state.global_step, "train_loss": getattr(result, "training_loss", None),
        "seconds": round(seconds, 1), "steps_this_run": len(session), "completion_tokens_this_run": tokens,
        "generation_seconds": round(generation_seconds, 1) if generation_seconds is not None else None,
        "generation_tokens_per_second": round(tokens / generation_seconds, 1) if generation_seconds else None,
        "reward_first_last": [steps[0].get("reward"), steps[-1].get("reward")] if steps else None})
    log.info("grpo: %d steps in %.0fs, mean reward %s at the first step, %s at the last -> %s",
             trainer.state.global_step, seconds, steps[0].get("reward") if steps else "?",
             steps[-1].get("reward") if steps else "?", out)
    return out
