"""The run manifest: what each stage produced, so reruns and skips can trust it.

``outputs/run_manifest.json`` holds one record per stage: status, start and end
time, the fingerprint of the config and inputs it ran with, and every artifact
(file, or every file inside an artifact directory) with size and sha256. A stage
is up to date when its record is complete, its fingerprint matches and every
artifact still matches; that is what stops a finished stage from being redone
by accident.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from fintune.errors import FintuneError


class ArtifactError(FintuneError, RuntimeError):
    """A recorded artifact is missing or changed; the message names it."""


def sha256_file(path: Path, bufsize: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def describe(path: str | Path) -> dict[str, Any]:
    """Size and sha256 of a file, or of every file below a directory."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"artifact missing: {path}")
    files = []
    for f in _files_of(path):
        st = f.stat()
        files.append({"path": str(f), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                      "sha256": sha256_file(f)})
    return {"path": str(path), "size": sum(f["size"] for f in files), "files": files}


def check(artifact: dict[str, Any]) -> None:
    """Raise ArtifactError naming the first file that is missing or changed.

    Size and mtime unchanged is taken as unchanged; otherwise the hash decides,
    so a touched-but-identical file still passes.
    """
    root = Path(artifact["path"])
    if not root.exists():
        raise ArtifactError(f"artifact missing: {root}")
    recorded = {f["path"] for f in artifact["files"]}
    if root.is_dir():
        extra = [str(p) for p in _files_of(root) if str(p) not in recorded]
        if extra:
            raise ArtifactError(f"artifact changed: {root} has files not in the manifest: {extra[:3]}")
    for f in artifact["files"]:
        p = Path(f["path"])
        if not p.is_file():
            raise ArtifactError(f"artifact missing: {p}")
        st = p.stat()
        if st.st_size != f["size"]:
            raise ArtifactError(f"artifact changed: {p} is {st.st_size} bytes, manifest says {f['size']}")
        if st.st_mtime_ns != f["mtime_ns"] and sha256_file(p) != f["sha256"]:
            raise ArtifactError(f"artifact changed: {p} no longer matches its sha256 in the manifest")


@dataclass
class Manifest:
    path: Path

    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"stages": {}}
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{self.path}: not valid JSON ({e}); delete it to start over") from None

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.load()["stages"].get(name)

    def save_stage(self, name: str, record: dict[str, Any]) -> None:
        if int(os.environ.get("RANK", "0")) != 0:
            return  # under torchrun only the main process keeps the record
        data = self.load()
        data["stages"][name] = record
        write_json_atomic(self.path, data)

    def is_up_to_date(self, name: str, fingerprint: str) -> tuple[bool, str]:
        rec = self.stage(name)
        if rec is None:
            return False, "never ran"
        if rec.get("status") != "complete":
            return False, f"last run ended {rec.get('status')}"
        if rec.get("fingerprint") != fingerprint:
            return False, "config or inputs changed"
        try:
            for art in rec["artifacts"]:
                check(art)
        except ArtifactError as e:
            return False, str(e)
        return True, "up to date"

    def verify_complete(self, name: str) -> dict[str, Any] | None:
        """For a skipped stage: its record (if any) must still match what is on disk."""
        rec = self.stage(name)
        if rec is None or rec.get("status") != "complete":
            return None
        for art in rec["artifacts"]:
            check(art)
        return rec


def write_json_atomic(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``final`` only on success.

    Works for files and directories. A crash leaves ``.NAME.partial`` behind,
    never a half-written file under the finished name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.exists():
        raise ArtifactError(f"nothing was written for {final}")
    _remove(final)
    os.replace(tmp, final)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
