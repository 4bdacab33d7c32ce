"""Generate answers: Hugging Face models (optionally with a LoRA adapter), batched."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from fintune.prompts import user_prompt

log = logging.getLogger(__name__)


def build_prompt(tokenizer, item: dict, with_context: bool) -> str:
    content = user_prompt(item["question"], item.get("context") if with_context else None)
    return tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                         tokenize=False, add_generation_prompt=True)


class HFRunner:
    """Greedy batched generation; an adapter is merged in memory for speed."""

    def __init__(self, model_dir: str, adapter: str | None = None, name: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name or (f"{model_dir}+{adapter}" if adapter else model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(adapter or model_dir)
        self.tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        self.model = model.eval()

    def generate(self, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
        import torch

        tok = self.tokenizer
        out: list[str] = [""] * len(prompts)
        # Longest prompts first: batches of similar length pad less.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        start = time.time()
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            for row, i in enumerate(idx):
                out[i] = tok.decode(gen[row, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            log.info("eval: %s %d/%d generated (%.0fs)", self.name, min(b + batch_size, len(order)),
                     len(order), time.time() - start)
        return out


class GGUFRunner:
    """Greedy generation through llama.cpp's llama-completion, one process per
    prompt. On CPU this beats batched transformers generation (111 vs 49-69
    tokens/s measured for SmolLM2-135M on 2 cores), and it evaluates the very
    files users ship."""

    def __init__(self, gguf: str | Path, llama_cpp_path: str | Path, tokenizer_dir: str | Path,
                 name: str | None = None):
        from transformers import AutoTokenizer

        from fintune.export.llama_cpp import LlamaCpp

        self.gguf = Path(gguf)
        self.name = name or self.gguf.name
        self.lc = LlamaCpp(Path(llama_cpp_path))
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def generate(self, prompts: list[str], max_new_tokens: int, batch_size: int = 1) -> list[str]:
        out, start = [], time.time()
        for i, prompt in enumerate(prompts, 1):
            out.append(self.lc.generate(self.gguf, prompt, max_new_tokens))
            if i % 20 == 0 or i == len(prompts):
                log.info("eval: %s %d/%d generated (%.0fs)", self.name, i, len(prompts), time.time() - start)
        return out
