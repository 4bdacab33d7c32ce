"""How the eval samples replies, chosen by name (`eval.eval_sampling`, `--sampling`).

- greedy: temperature 0, reproducible; what the report's figures are unless stated.
- r1: DeepSeek's recommended settings for R1 models (temperature 0.6, top_p 0.95).
- ollama: what `ollama run` samples with for the shipped Modelfile: Ollama's
  documented defaults (temperature 0.8, top_k 40, top_p 0.9, min_p 0,
  repeat_penalty 1.1 over the last 64 tokens) with the Modelfile's PARAMETER
  lines of the model's chat-template family on top. Ollama's llama.cpp-based
  runner applies the repeat penalty; some versions of its Go runner ignore it
  (ollama/ollama#15783), so the Modelfile states every setting it relies on.

A setting left None is llama.cpp's own default and is not sent, which keeps the
keys of replies cached before these settings existed valid for greedy and r1.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable

from fintune.errors import UsageError
from fintune.registry import Registry


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None

    def extra(self) -> dict:
        """The settings beyond temperature and top_p that are set, by llama-server's field names."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("temperature", "top_p", "seed") and getattr(self, f.name) is not None}

    def cli_flags(self) -> list[str]:
        """The same settings as llama-completion flags."""
        flags = []
        for name, value in self.extra().items():
            flags += ["--" + name.replace("_", "-"), str(value)]
        return flags

    def resolve(self, family) -> "Sampling":
        return self


GREEDY = Sampling()
R1_SAMPLING = Sampling(temperature=0.6, top_p=0.95)
# api/types.go DefaultOptions, for the settings llama.cpp's sampler shares
OLLAMA_DEFAULTS = Sampling(temperature=0.8, top_p=0.9, top_k=40, min_p=0.0, repeat_penalty=1.1, repeat_last_n=64)

# a preset maps the model's chat-template family (None when unknown) to its settings
PRESETS: Registry[Callable[[object], Sampling]] = Registry("eval sampling")
PRESETS.register("greedy", lambda family: GREEDY)
PRESETS.register("r1", lambda family: R1_SAMPLING)


@PRESETS.register("ollama")
def ollama(family) -> Sampling:
    if family is None:
        raise UsageError("eval sampling 'ollama' needs the model's chat-template family (a GGUF with a chat template)")
    known = {f.name for f in fields(Sampling)} - {"seed"}
    return replace(OLLAMA_DEFAULTS, **{k: v for k, v in family.params.items() if k in known})


def describe(name: str, results: list[dict]) -> str:
    """The report's line on sampling: the preset and the settings each distinct set of models ran with."""
    seen = []
    for r in results:
        settings = ", ".join(f"{k} {v}" for k, v in (r.get("sampling_settings") or {}).items() if k != "seed")
        if settings and settings not in seen:
            seen.append(settings)
    return f"Sampling: {name}" + (f" ({'; '.join(seen)})" if seen else "")


@dataclass(frozen=True)
class Preset:
    """A preset by name, resolved by the runner once it knows the model's chat-template family."""
    name: str
    seed: int = 0

    def __post_init__(self):
        PRESETS.get(self.name)  # an unknown name fails here, listing the valid ones

    def resolve(self, family) -> Sampling:
        return replace(PRESETS.get(self.name)(family), seed=self.seed)
