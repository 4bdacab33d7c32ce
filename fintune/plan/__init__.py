"""The resource plan: what each stage needs on this machine, from the model's config
alone, before anything loads. `fintune plan` prints it; every stage checks its own
line with the same functions, so what is printed is what the stages do.

- shapes.py    a model's shapes and sizes (parameters, KV cache, GGUF files)
- training.py  the training's peak GPU memory by part, and its check (require_fit)
- lines.py     Machine and StagePlan, the checks the stages share
- stages.py    train, DPO, merge, export lines and the stage table
- grpo.py      the GRPO line
- eval.py      one line per eval model, with its expected time
- preflight.py what later stages need (llama.cpp, quant types, outputs, eval files, the
               base model), checked before the first stage runs
"""
