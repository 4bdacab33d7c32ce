"""Eval sampling presets: the ollama preset is what `ollama run` samples with
for the shipped Modelfile, and every setting reaches llama.cpp."""
import json

import pytest

from fintune.errors import UsageError
from fintune.sampling import GREEDY, OLLAMA_DEFAULTS, PRESETS, Preset, Sampling
from fintune.export.modelfile import modelfile_text as render
from fintune.registry import UnknownNameError
from fintune.templates import FAMILIES


def modelfile_parameters(text: str) -> dict[str, float]:
    params = {}
    for line in text.splitlines():
        if line.startswith("PARAMETER ") and not line.startswith("PARAMETER stop "):
            _, key, value = line.split(" ", 2)
            params[key] = float(value)
    return params


@pytest.mark.parametrize("name", FAMILIES.names())
def test_ollama_preset_is_ollamas_defaults_under_the_modelfiles_parameters(name):
    family = FAMILIES.get(name)
    written = modelfile_parameters(render(family, "m.gguf"))
    sampling = Preset("ollama", seed=5).resolve(family)
    assert sampling.seed == 5
    for field in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n"):
        want = written.get(field, getattr(OLLAMA_DEFAULTS, field))
        assert getattr(sampling, field) == want, field
    assert "num_ctx" not in sampling.extra()  # a context size, not a sampling setting


def test_presets_by_name_and_their_errors():
    assert Preset("greedy").resolve(None) == GREEDY and GREEDY.extra() == {} and GREEDY.cli_flags() == []
    with pytest.raises(UnknownNameError, match="valid names: greedy, ollama, r1"):
        Preset("beam")
    with pytest.raises(UsageError, match="GGUF"):  # transformers models have no chat-template family here
        Preset("ollama").resolve(None)
    from fintune.config import EvalConfig

    with pytest.raises(Exception, match="greedy, ollama, r1"):
        EvalConfig(eval_sampling="beam")
    assert set(PRESETS.names()) == {"greedy", "ollama", "r1"}


def test_every_setting_reaches_llama_cpp(monkeypatch):
    from fintune import llama_cpp

    s = Sampling(0.2, 0.9, 3, top_k=40, min_p=0.0, repeat_penalty=1.1, repeat_last_n=64)
    assert s.cli_flags() == ["--top-k", "40", "--min-p", "0.0", "--repeat-penalty", "1.1", "--repeat-last-n", "64"]
    sent = {}

    class Reply:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return json.dumps({"content": "x", "timings": {"predicted_n": 1, "predicted_ms": 1}}).encode()

    def urlopen(req, timeout):
        sent.update(json.loads(req.data))
        return Reply()

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    server = llama_cpp.LlamaServer.__new__(llama_cpp.LlamaServer)
    server.url = "http://127.0.0.1:1"
    server.complete("p", 8, temperature=s.temperature, top_p=s.top_p, seed=s.seed, extra=s.extra())
    assert {k: sent[k] for k in ("temperature", "top_p", "seed", "top_k", "min_p", "repeat_penalty",
                                 "repeat_last_n")} == \
        {"temperature": 0.2, "top_p": 0.9, "seed": 3, "top_k": 40, "min_p": 0.0, "repeat_penalty": 1.1,
         "repeat_last_n": 64}
