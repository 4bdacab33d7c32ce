"""Replies of a GGUF model, cached by content, so a rerun does not generate them again.

Each reply is stored under a key made of everything that decides it: the GGUF
file's sha256, the exact prompt, the sampling settings and seed, the token
limit, the stop rule, the llama.cpp build and, for a reply with the calculator
offered, the tool setting (the tools and the call cap). Any part that differs is a miss.
The base model's replies are what this saves on a second run, or in a second
project on the same machine (the cache lives in the fintune cache folder);
a new fine-tune has a new sha256 and always generates. Scoring is never
cached: cached replies are scored with the current rules.
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from fintune.manifest import sha256_file


class ReplyCache:
    def __init__(self, root: Path, gguf: Path, settings: dict):
        """`settings`: every generation setting besides prompt, seed and token limit (JSON-able)."""
        self.model_sha256 = sha256_file(gguf)
        self.settings = settings
        self.path = Path(root) / f"{self.model_sha256[:20]}.jsonl"
        self._lock = threading.Lock()
        self._entries = self._load()

    def _load(self) -> dict[str, dict]:
        entries = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash mid-write
                    continue
                entries[rec["key"]] = rec
        return entries

    def key(self, prompt: str, seed: int, max_new_tokens: int, tools: dict | None = None) -> str:
        """`tools`: what the model was offered and how the loop ran (eval/tools.py); a reply
        without the tool has no such field, so keys written before it existed still match."""
        blob = json.dumps({"model": self.model_sha256, "prompt": prompt, "seed": seed,
                           "max_new_tokens": max_new_tokens, **self.settings, **({"tools": tools} if tools else {})},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, key: str, text: str, n_tokens: int, seconds: float, stop_reason: str | None, **more) -> None:
        """`more`: further JSON-able fields of the record (a tool loop's calls)."""
        rec = {"key": key, "text": text, "n_tokens": n_tokens, "seconds": seconds, "stop_reason": stop_reason,
               **more}
        with self._lock:
            self._entries[key] = rec
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
