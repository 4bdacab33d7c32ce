"""Generate answers: Hugging Face models (optionally with a LoRA adapter),
batched; or a GGUF file through llama.cpp. Each runner counts the tokens it
generated and the time it took, for the tokens/s column of the report."""
from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from fintune import llama_cpp  # module attributes: tests stand in for the server there
from fintune.errors import UsageError
from fintune.eval import interrupt
from fintune.gguf import read_header
from fintune.prompts import user_prompt
from fintune.sampling import GREEDY, Preset, Sampling
from fintune.scoring import stop  # stop.RULE read when a runner is made: part of the reply cache's key
from fintune.templates import detect, for_llama_cpp

log = logging.getLogger(__name__)


def build_prompt(tokenizer, item: dict, with_context: bool, instruction: str = "final_answer") -> str:
    """The model's own chat template around the question, asked with the
    profile's instruction (data.instruction), the one its replies were trained on."""
    content = user_prompt(item["question"], item.get("context") if with_context else None, instruction)
    return tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                         tokenize=False, add_generation_prompt=True)


class GGUFChatTemplate:
    """Chat template and special tokens read from a GGUF header, so a GGUF file
    can be evaluated without the tokenizer files it was made from."""

    def __init__(self, gguf: str | Path):
        h = read_header(gguf, skip_arrays=False)
        self.chat_template = h.get("tokenizer.chat_template")
        if not self.chat_template:
            raise UsageError(f"{gguf} has no tokenizer.chat_template; pass --tokenizer DIR")
        tokens = h["tokenizer.ggml.tokens"]
        self.bos_token = tokens[h["tokenizer.ggml.bos_token_id"]] if "tokenizer.ggml.bos_token_id" in h else ""
        self.eos_token = tokens[h["tokenizer.ggml.eos_token_id"]] if "tokenizer.ggml.eos_token_id" in h else ""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template([messages], chat_template=self.chat_template,
                                            add_generation_prompt=add_generation_prompt,
                                            bos_token=self.bos_token, eos_token=self.eos_token)
        return rendered[0]


class _Counted:
    tokens: int = 0
    seconds: float = 0.0
    cached: int = 0  # replies taken from a cache instead of generated

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def hf_device() -> tuple[str, str]:
    """(device, dtype) for HF generation: CUDA in bf16 (fp16 where bf16 is not
    supported), else CPU in fp32 (where the GGUF runner is the faster path)."""
    import torch

    if torch.cuda.is_available():
        return "cuda", "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "cpu", "float32"


class HFRunner(_Counted):
    """Batched generation on the GPU when there is one; an adapter is merged in memory for speed."""

    def __init__(self, model_dir: str, adapter: str | None = None, name: str | None = None,
                 sampling: Sampling | Preset = GREEDY, device: tuple[str, str] | None = None,
                 load_in_4bit: bool = False):
        """`sampling`: settings, or a preset (fintune/sampling.py); `load_in_4bit`: NF4 with
        double quantization on CUDA, as QLoRA trains, where the plan says 16-bit does
        not fit (eval/stage.py). An adapter stays unmerged on a 4-bit model: merging
        would round it into 4-bit weights."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name or (f"{model_dir}+{adapter}" if adapter else str(model_dir))
        self.sampling = sampling.resolve(None)
        if self.sampling.extra():  # transformers' repetition penalty is another rule than llama.cpp's
            raise UsageError(f"{self.name}: sampling settings {sorted(self.sampling.extra())} apply to GGUF models only")
        self.device, self.dtype = device or hf_device()
        self.tokenizer = AutoTokenizer.from_pretrained(adapter or model_dir)
        self.tokenizer.padding_side = "left"
        kwargs: dict = {"dtype": getattr(torch, self.dtype)}
        if load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs.update(device_map={"": self.device}, quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=kwargs["dtype"]))
            self.dtype = "nf4"
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
            model = model if load_in_4bit else model.merge_and_unload()
        self.model = (model if load_in_4bit else model.to(self.device)).eval()
        self.tokens, self.seconds = 0, 0.0
        self.stops: Counter = Counter()
        log.info("eval: %s on %s in %s", self.name, self.device, self.dtype)

    def generate(self, prompts: list[str], max_new_tokens: int, batch_size: int,
                 expected: list[int] | None = None) -> list[str]:
        """`expected` is unused: batches here are ordered by prompt length (padding)."""
        import torch

        tok, s = self.tokenizer, self.sampling
        out: list[str] = [""] * len(prompts)
        # Longest prompts first: batches of similar length pad less.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        start = time.time()
        torch.manual_seed(s.seed)
        kw = dict(do_sample=True, temperature=s.temperature, top_p=s.top_p) if s.temperature > 0 \
            else dict(do_sample=False)
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(self.device)
            with torch.no_grad():
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                          eos_token_id=tok.eos_token_id,
                                          stopping_criteria=interrupt.hf_stopping_criteria(), **kw)
            interrupt.check()  # a batch a signal cut short is not a set of replies
            new = gen[:, enc["input_ids"].shape[1]:]
            self.tokens += int((new != tok.pad_token_id).sum())
            for row, i in enumerate(idx):
                # the batch decodes to its longest reply: the stop rule is applied after
                out[i], reason = stop.cut(tok.decode(new[row], skip_special_tokens=True),
                                     open_think=prompts[i].endswith("<think>\n"))
                self.stops.update([reason] if reason else [])
            log.info("eval: %s %d/%d generated (%.0fs)", self.name, min(b + batch_size, len(order)),
                     len(order), time.time() - start)
        self.seconds += time.time() - start
        return out

    def close(self) -> None:
        """Give the model's memory back before the next model loads."""
        import gc

        import torch

        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class GGUFRunner(_Counted):
    """Generation through llama.cpp on the very files users ship: llama-server
    with `parallel` slots decoding together when it is built and parallel > 1,
    else llama-completion, one process per prompt. On CPU even the latter beats
    batched transformers generation (111 vs 49-69 tokens/s measured for
    SmolLM2-135M on 2 cores)."""

    def __init__(self, gguf: str | Path, llama_cpp_path: str | Path, tokenizer_dir: str | Path | None = None,
                 name: str | None = None, sampling: Sampling | Preset = GREEDY, parallel: int = 1,
                 cache_dir: str | Path | None = None, threads: int | None = None,
                 chat_template_file: str | Path | None = None):
        """`sampling`: settings, or a preset, resolved for the GGUF's chat template
        (fintune/sampling.py); `threads`: llama-server's threads (None: its default, one per core);
        `chat_template_file`: the template llama-server renders chats with the tool in (else the GGUF's)."""
        self.gguf = Path(gguf)
        self.chat_template_file = Path(chat_template_file) if chat_template_file else None
        self.name = name or self.gguf.name
        self.lc = llama_cpp.LlamaCpp(Path(llama_cpp_path))
        self.parallel = parallel
        self.threads = threads
        if tokenizer_dir:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        else:
            self.tokenizer = GGUFChatTemplate(self.gguf)
        if isinstance(sampling, Preset):
            sampling = sampling.resolve(detect(self.tokenizer.chat_template))
        self.sampling = sampling
        self.tokens, self.seconds = 0, 0.0
        self.device, self.dtype = "cuda (llama.cpp)" if self.lc.cuda_build else "cpu (llama.cpp)", "gguf"
        if cache_dir is not None:
            from fintune.eval.cache import ReplyCache

            # what decides a reply besides prompt, seed and token limit
            self.cache = ReplyCache(cache_dir, self.gguf, {
                "temperature": sampling.temperature, "top_p": sampling.top_p, **sampling.extra(), "stop_rule": stop.RULE,
                "llama_cpp": self.lc.version(), "slots": parallel, "threads": threads or "default",
                # what shares a decode batch changes some replies (see _generate)
                "dispatch": "longest expected first where every item has a reference, else prompt order",
                **({"chat_template_file": self.chat_template_file.read_text(encoding="utf-8")}
                   if self.chat_template_file else {})})
        else:
            self.cache = None
        self.cached = 0            # replies taken from the cache
        self.stops: Counter = Counter()  # replies the stop rule ended, by reason

    def close(self) -> None:
        pass

    def generate(self, prompts: list[str], max_new_tokens: int, batch_size: int = 1,
                 expected: list[int] | None = None) -> list[str]:
        """Replies under the stop rule (fintune/scoring/stop.py); replies in the cache are not generated again.
        `expected`: a length hint per prompt (e.g. its reference solution's); the longest
        are sent first, so the last slots to finish hold short replies (see _generate)."""
        prompts = [for_llama_cpp(p, self.gguf) for p in prompts]  # llama.cpp adds the BOS itself
        seeds = [self.sampling.seed + i + 1 for i in range(len(prompts))]
        keys = [self.cache.key(p, seed, max_new_tokens) for p, seed in zip(prompts, seeds)] if self.cache \
            else [None] * len(prompts)
        out: list = [None] * len(prompts)
        for i, key in enumerate(keys):
            if key and (rec := self.cache.get(key)):
                out[i] = llama_cpp.Completion(rec["text"], rec["n_tokens"], rec["seconds"], rec["stop_reason"])
                self.cached += 1
        todo = [i for i, c in enumerate(out) if c is None]
        if todo:
            if expected:
                todo.sort(key=lambda i: -expected[i])

            def done(j: int, c: llama_cpp.Completion) -> None:
                """Each reply is cached as it ends: a stop on Ctrl-C keeps every finished one."""
                if keys[todo[j]]:
                    self.cache.put(keys[todo[j]], c.text, c.n_tokens, c.eval_seconds, c.stop_reason)

            replies = self._generate([prompts[i] for i in todo], [seeds[i] for i in todo], max_new_tokens, done)
            for i, c in zip(todo, replies):
                out[i] = c
        self.stops.update(c.stop_reason for c in out if c.stop_reason)
        return [c.text for c in out]

    def context_size(self, prompts: list[str], n: int, floor: int = 1024) -> int:
        """Context per sequence: the longest prompt plus `n` new tokens, in steps of 256,
        at least `floor` (what the CPU default's replies were measured with). A reply
        that reaches the context's end is cut there, short of `n`: an R1 profile asks
        for 2048 new tokens. Prompt lengths come from the tokenizer where there is one,
        else their UTF-8 bytes, which no byte-level BPE exceeds."""
        if hasattr(self.tokenizer, "encode"):  # a transformers tokenizer, not GGUFChatTemplate
            longest = max((len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts), default=0)
        else:
            longest = max((len(p.encode("utf-8")) for p in prompts), default=0)
        need = longest + n + 1  # the BOS llama.cpp adds
        return max(floor, -(-need // 256) * 256)

    def _generate(self, prompts: list[str], seeds: list[int], n: int, done=None) -> list:
        """Prompts go to the slots in the order given. Sent longest first, the long
        replies decode beside others instead of alone at the end while the other slots
        idle: 35.3-37.7 s instead of 39.4-40.7 s for the F16 model on the 58 held-out
        items (16 slots, 2 cores, AMD EPYC). Batched decoding is not batch-invariant: in
        the other order 57 of the F16 model's 58 replies and 43 of Q8_0's were the same.
        `done(j, completion)` is called as each reply ends, from the thread that got it."""
        from concurrent.futures import ThreadPoolExecutor

        start = time.time()
        ctx = self.context_size(prompts, n)
        server = self._server(ctx)
        progress = _Progress(self.name, len(prompts), start)

        def one(i):
            interrupt.check()
            c = self._complete(server, prompts[i], seeds[i], n, ctx)
            interrupt.check()  # a signal ended its tool: the reply may be cut, so it is neither kept nor cached
            if done:
                done(i, c)
            progress.step()
            return c

        try:
            with ThreadPoolExecutor(max_workers=max(1, self.parallel)) as pool:
                results = list(pool.map(one, range(len(prompts))))
        finally:
            if server:
                server.__exit__()
        self.tokens += sum(c.n_tokens for c in results)
        # with parallel slots the requests overlap: wall time, not the sum of theirs
        self.seconds += time.time() - start if server else sum(c.eval_seconds for c in results)
        return results

    def _server(self, ctx: int) -> llama_cpp.LlamaServer | None:
        """llama-server with `parallel` slots, started; None for one llama-completion a prompt."""
        if self.parallel <= 1:
            return None
        try:
            return llama_cpp.LlamaServer(self.lc, self.gguf, slots=self.parallel, ctx_per_slot=ctx,
                               threads=self.threads).__enter__()
        except llama_cpp.LlamaCppError as e:
            interrupt.check()  # ended by a signal, not unavailable
            self.lc.binary("llama-completion")  # neither tool: that error says how to build them
            log.info("eval: one llama-completion per prompt, since llama-server is unavailable: %s", e)
            return None

    def _complete(self, server: llama_cpp.LlamaServer | None, prompt: str, seed: int, n: int,
                  ctx: int) -> llama_cpp.Completion:
        """One reply under the stop rule: streamed from the server and dropped as soon as
        the rule says it is over, or cut after llama-completion wrote all of it."""
        s = self.sampling

        def rule(text):
            return stop.cut(text, open_think=prompt.endswith("<think>\n"))

        if server:
            return server.complete(prompt, n, temperature=s.temperature, top_p=s.top_p, seed=seed, stop=rule,
                                   extra=s.extra())
        c = self.lc.complete(self.gguf, prompt, n, temperature=s.temperature, top_p=s.top_p, seed=seed,
                             ctx=ctx, flags=s.cli_flags())
        c.text, c.stop_reason = rule(c.text)
        return c


class _Progress:
    """A log line every 20 replies and at the last, from the generating threads."""

    def __init__(self, name: str, total: int, start: float):
        import threading

        self.name, self.total, self.start, self.done = name, total, start, 0
        self.lock = threading.Lock()

    def step(self) -> None:
        with self.lock:
            self.done += 1
            if self.done % 20 == 0 or self.done == self.total:
                log.info("eval: %s %d/%d generated (%.0fs)", self.name, self.done, self.total,
                         time.time() - self.start)
