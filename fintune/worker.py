"""One step of a model-loading stage (train, DPO, GRPO, merge, eval) in a fresh Python process.

    python -m fintune.worker STEP CONFIG.json RESULT.json

STEP names the step's function (`module:function`, pipeline.step_name). The
orchestrator starts it (``pipeline.run_in_child``), so nothing one stage loads
leaks into the next: GPU and pinned host memory go back when the process ends,
and the patches Unsloth applies to transformers, peft and trl on import stay in
the training process. There, unsloth is imported before anything that imports
those libraries, as Unsloth requires.

The step's outcome goes to RESULT.json (artifact paths, or the error) and the
exit code: 0 done, 2 an error the user can fix (one line printed), 130 stopped
by a signal after saving a checkpoint, 1 a bug (traceback printed).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path

from fintune.config import SECTIONS, build_config
from fintune.errors import FintuneError, TrainingInterrupted
from fintune.logs import setup_logging
from fintune.manifest import write_json_atomic

log = logging.getLogger("fintune")
# the steps that train: Unsloth, where it is the backend, is imported before their libraries
TRAINING_STEPS = ("fintune.train.",)


def load_config(path: str | Path):
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return build_config({s: data[s] for s in SECTIONS}, profile=data["profile"])


def import_unsloth_first(step: str, cfg) -> bool:
    """In a training process, import unsloth before transformers, trl and peft when it
    is the backend that will train (it patches them on import)."""
    if not step.startswith(TRAINING_STEPS):
        return False
    from fintune.train.backends import import_unsloth_first as first

    return first(cfg)


def _write(result_path: str, record: dict) -> None:
    write_json_atomic(result_path, {"pid": os.getpid(), **record})


def main(argv: list[str] | None = None) -> int:
    step, cfg_path, result_path = argv if argv is not None else sys.argv[1:]
    setup_logging()
    try:
        cfg = load_config(cfg_path)
        import_unsloth_first(step, cfg)
        from fintune.pipeline import resolve_step  # after unsloth: stage modules are light, their libraries not

        out = resolve_step(step)(cfg)
    except TrainingInterrupted as e:
        # not printed here: the orchestrator prints it, once (fintune.errors.report)
        _write(result_path, {"status": "interrupted", "error": str(e)})
        return 130
    except FintuneError as e:
        log.error("error: %s", e)
        _write(result_path, {"status": "failed", "error": str(e)})
        return 2
    except KeyboardInterrupt:  # Ctrl-C in a step that sets no handler of its own, or before it set one
        _write(result_path, {"status": "interrupted", "error": f"{step} stopped by SIGINT; the same command "
                                                                 "runs it again"})
        return 130
    except BaseException:  # a bug: keep the traceback for the manifest
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        _write(result_path, {"status": "failed", "error": tb})
        return 1
    paths = out if isinstance(out, list) else [out]
    _write(result_path, {"status": "complete", "artifacts": [str(p) for p in paths]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
