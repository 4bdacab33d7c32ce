"""The GRPO stage's line of the plan (fintune/plan/stages.py): what --grpo needs
on the GPU, from the model's config alone, checked by the stage before it loads.

- policy: the training's weights and LoRA + grads + optimizer, and the activations
  and logits of the backward over one group, num_generations rows of prompt + reply
  (training.memory, with the group as the batch): TRL's micro-batch holds num_generations
  rows, taken from the shuffled generation batch, not one prompt's group (trl 1.14.2
  GRPOTrainer._prepare_inputs; fintune/train/grpo.py grpo_args);
- generation: the KV cache of num_generations x (prompt + max_completion_length) tokens
  for each of the step's prompts, which TRL generates together;
- reference, where beta > 0: TRL's frozen copy of the adapter beside the trained one
  (trl 1.14.2 GRPOTrainer.__init__, model.add_adapter("ref", ...)); Unsloth disables the
  adapter instead (unsloth 2026.10.9 models/rl.py), so no second copy of the weights
  either way. Its log-probabilities are computed without gradients before the policy's
  backward, so they do not add to its peak.
Prompts are counted at lines.EVAL_PROMPT_TOKENS (instruction + question + context,
rounded up; a generated question is under 200 tokens), capped by max_seq_length.
"""
from __future__ import annotations

import dataclasses

from fintune import machine
from fintune.plan import training
from fintune.plan.lines import EVAL_PROMPT_TOKENS, Machine, StagePlan, check_gpu, cpu_train, gpu_only, require
from fintune.plan.shapes import GiB, Shapes, best_fit, kv_bytes_per_token, model_config

VLLM_NOTE = ("vLLM is installed: Unsloth's fast_inference also holds its own share of the card "
             "(from_pretrained's gpu_memory_utilization, 0.5 by default), which this line does not count")


def use_vllm(cfg, backend: str) -> bool:
    """vLLM generation only when asked for (train.grpo_use_vllm), through Unsloth's
    fast_inference, and only where vLLM is installed."""
    return cfg.train.grpo_use_vllm and backend == "unsloth" and machine.installed("vllm")


def grpo_seq(cfg, completion: int | None = None) -> int:
    return min(cfg.model.max_seq_length, EVAL_PROMPT_TOKENS + (completion or cfg.train.grpo_max_completion_length))


def grpo_memory(cfg, backend: str, generations: int | None = None, completion: int | None = None) -> float:
    t = cfg.train
    g = generations or t.grpo_num_generations
    seq = grpo_seq(cfg, completion)
    group = dataclasses.replace(cfg, train=dataclasses.replace(t, per_device_train_batch_size=g))
    mem = training.memory(group, backend, seq)
    s = Shapes.of(model_config(cfg.model.base_model))
    # TRL generates a whole step's groups at once (its generation batch)
    mem["generation KV cache"] = g * t.grpo_prompts_per_step * seq * kv_bytes_per_token(s)
    if t.grpo_beta > 0 and backend != "unsloth":
        mem["reference adapter"] = training.trainable(cfg, s) * 4
    return training.needed(mem, backend)


def grpo_line(cfg, backend: str, host: Machine) -> StagePlan:
    t = cfg.train
    est = training.estimate(cfg, backend)
    groups = f"{t.grpo_prompts_per_step} prompts x " if t.grpo_prompts_per_step > 1 else ""
    what = f"{groups}{t.grpo_num_generations} x ({EVAL_PROMPT_TOKENS} + {t.grpo_max_completion_length}) tokens, " \
           f"beta {t.grpo_beta:g}"
    line = StagePlan("grpo", grpo_memory(cfg, backend), 2 * GiB,
                     est["disk"]["adapter"] + est["disk"]["checkpoints"], f"runs ({backend}; {what})")
    if host.gpu_free is None:
        linear, other = Shapes.of(model_config(cfg.model.base_model)).params()
        line = cpu_train(cfg, line, linear + other, host)
        line.action += f"; {what}"
        return line
    line = check_gpu(line, host, lambda: _group_fix(cfg, backend, host.gpu_free))
    if use_vllm(cfg, backend):
        line.why = "; ".join(filter(None, [line.why, VLLM_NOTE]))
    return line


def _group_fix(cfg, backend: str, free: float) -> str:
    """A smaller group, then shorter replies in a group of two, that fits `free` bytes."""
    t = cfg.train
    g = best_fit(range(t.grpo_num_generations - 1, 1, -1),
                 lambda g: grpo_memory(cfg, backend, generations=g) <= free)
    if g:
        return f"--grpo_num_generations {g} (fits by the plan)"
    c = best_fit(range(t.grpo_max_completion_length - 64, 63, -64),
                 lambda c: grpo_memory(cfg, backend, generations=2, completion=c) <= free)
    if c:
        return f"--grpo_num_generations 2 --grpo_max_completion_length {c} (fits by the plan)"
    return "no group fits: turn --grpo off or use a larger GPU"


def require_grpo_fit(cfg, backend: str) -> None:
    """Stop GRPO before it loads anything when its plan does not fit the free GPU memory
    (GRPO holds the policy, the KV cache of a group of replies and the backward over them)."""
    require(grpo_line(cfg, backend, gpu_only()), f"not enough GPU memory for GRPO through {backend}: ")
