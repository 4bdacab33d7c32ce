"""LlamaCpp wrapper on a stand-in binary: output that is not valid UTF-8 (a
generation cut inside a multi-byte character) and llama.cpp's timing lines."""
import stat

from fintune.export.llama_cpp import LlamaCpp

FAKE = """#!/bin/sh
printf 'Final answer: 12 \\342\\202'
printf 'common_perf_print:        eval time =     500.00 ms /    20 runs   (   25.00 ms per token)\\n' >&2
"""


def test_cut_multibyte_output_and_timings(tmp_path):
    binary = tmp_path / "build" / "bin" / "llama-completion"
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE)
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    c = LlamaCpp(tmp_path).complete(tmp_path / "m.gguf", "prompt", 20)
    assert c.text.startswith("Final answer: 12") and "\ufffd" in c.text
    assert c.n_tokens == 20 and c.eval_seconds == 0.5
