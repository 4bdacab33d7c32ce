"""Pipeline eval stage: base vs tuned (adapter, merged, every GGUF) in one report,
on the generated held-out set and on external sets, plus llama.cpp perplexity
of each GGUF on held-out text and its generation speed.

On a CUDA GPU the Hugging Face runner generates in large batches. On CPU the
base model runs through llama.cpp instead, which measured faster than batched
transformers generation here (see runner.GGUFRunner): it is converted to an F16
GGUF once for that and cached, by the export stage beside its own conversion
when the pipeline runs both (convert_base_beside).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from fintune.config import PipelineConfig
from fintune.eval.evaluate import evaluate, load_eval_file, set_name
from fintune.eval.report import markdown, stratified, write_report
from fintune.eval.runner import GGUFRunner, HFRunner
from fintune.eval.sampling import Preset, describe
from fintune.export.llama_cpp import PPL_CHUNKS
from fintune.train import final_adapter_dir

log = logging.getLogger(__name__)


def base_gguf_path(base_path: str) -> Path:
    """Where the F16 GGUF of the base checkpoint is cached: keyed on its folder, or on
    its hub id (nothing is downloaded to name the file)."""
    from fintune.models import cache_dir

    where = Path(base_path)
    key_text = str(where.resolve()) if where.is_dir() or where.is_absolute() else str(base_path)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:10]
    return cache_dir() / f"base-{Path(base_path).name}-{key}-f16.gguf"


def base_gguf(cfg: PipelineConfig, base_path: str) -> Path:
    """F16 GGUF of the base checkpoint, converted once into the cache."""
    from fintune.export.llama_cpp import LlamaCpp
    from fintune.manifest import atomic_path
    from fintune.models import local_dir

    out = base_gguf_path(base_path)
    if not out.is_file():
        with atomic_path(out) as tmp:
            # llama.cpp's converter reads a folder: a hub id is its snapshot in the HF cache
            LlamaCpp(Path(cfg.export.llama_cpp_path)).convert(local_dir(base_path), tmp, "f16")
    return out


def convert_base_beside(cfg: PipelineConfig):
    """Start converting the base model's GGUF, which this stage's CPU base runner
    needs, in a thread: for the export stage, whose own conversion keeps one core
    busy and leaves the other idle (7 s of this stage's start on a first run
    otherwise). Returns the future, or None where there is nothing to convert (no
    base model in eval_models, a CUDA GPU, no adapter record, already cached)."""
    from concurrent.futures import ThreadPoolExecutor

    from fintune.errors import FintuneError
    from fintune.train.backends import cuda_available
    from fintune.train.trainer import read_adapter_record

    if "base" not in cfg.eval.eval_models or cuda_available():
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


def runners(cfg: PipelineConfig, base_path: str):
    """(name, runner factory, whether it runs a GGUF through llama.cpp) for every
    model in eval_models, in that order. A factory takes the llama.cpp server's
    thread count (None: its default), which the HF runners ignore."""
    from fintune.train.backends import cuda_available

    from fintune.models import cache_dir

    adapter, lcp = str(final_adapter_dir(cfg)), cfg.export.llama_cpp_path
    sampling = Preset(cfg.eval.eval_sampling)
    replies = cache_dir() / "eval-replies" if cfg.eval.eval_cache else None
    fits = planned(cfg)
    for name in cfg.eval.eval_models:
        line = fits[name]
        if not line.ok:
            log.warning("eval: %s left out of the report: %s", name, line.why)
            continue
        nf4 = line.action == "4-bit"
        if nf4:
            log.info("eval: %s %s", name, line.why)
        if name == "base":
            if cuda_available():
                yield name, lambda threads, nf4=nf4: HFRunner(base_path, None, name="base", sampling=sampling,
                                                              load_in_4bit=nf4), False
            else:
                yield name, lambda threads: GGUFRunner(base_gguf(cfg, base_path), lcp, adapter, "base", sampling,
                                                      cfg.eval.eval_parallel, replies, threads), True
        elif name == "adapter":
            yield name, lambda threads, nf4=nf4: HFRunner(base_path, adapter, name="adapter", sampling=sampling,
                                                          load_in_4bit=nf4), False
        elif name == "merged":
            yield name, (lambda threads, nf4=nf4: HFRunner(cfg.export.merged_model_dir, None, name="merged",
                                                           sampling=sampling, load_in_4bit=nf4)), False
        else:
            path = cfg.export.gguf_path(name)
            if not path.is_file():
                log.warning("eval: %s not found (%s not exported?); left out of the report", path, name)
                continue
            yield name, (lambda threads, path=path, name=name: GGUFRunner(
                path, lcp, adapter, name.lower(), sampling, cfg.eval.eval_parallel, replies, threads)), True


def planned(cfg: PipelineConfig) -> dict:
    """{eval model: its plan line on this machine}: an HF model in bf16, 4-bit or left
    out; a GGUF on the GPU, in RAM or left out (train/plan_stages.py), each with its
    expected time."""
    from fintune.train import plan_stages

    m = plan_stages.this_machine(cfg)
    lines = plan_stages.eval_lines(cfg, m)
    for line in lines:
        if line.ok:
            log.info("eval: plan %s: %s, %.1f GiB GPU, %.1f GiB RAM%s", line.stage, line.action, line.gpu / 2**30,
                     line.ram / 2**30, f", up to ~{line.seconds / 60:.0f} min" if line.seconds else "")
    return dict(zip(cfg.eval.eval_models, lines))


def concurrency(cfg: PipelineConfig, models: int) -> tuple[int, int | None]:
    """(of `models` GGUF models, how many are evaluated at once; llama.cpp threads for
    each, None = its default).

    Auto on a CPU: two at a time, each on half the cores. A model this small keeps
    two cores' threads waiting on each other: with two single-threaded llama-servers
    side by side, the eval stage took 126 s for the base, F16, Q8_0 and Q4_K_M
    models on the 58 held-out items, against 149 s one after another (2 cores, AMD
    EPYC, replies not cached). On a GPU machine the models run one at a time, as before."""
    from fintune.train.backends import cuda_available

    n = cfg.eval.eval_concurrency or (1 if cuda_available() else 2)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = min(n, cores, models)
    return (n, max(1, cores // n)) if n > 1 else (1, None)


def eval_sets(cfg: PipelineConfig) -> list[tuple[str, list[dict], list[bool]]]:
    """(name, items, context modes): the held-out set, then each external file."""
    from fintune.data.jsonl import read_jsonl

    heldout = Path(cfg.data.data_dir) / "heldout.jsonl"
    sets = [(str(heldout), stratified(list(read_jsonl(heldout)), cfg.eval.eval_limit), [True])]
    for f in cfg.eval.eval_files:
        if not Path(f).is_file():
            log.warning("eval: external set %s not found; left out", f)
            continue
        items = load_eval_file(f, cfg.eval.external_eval_limit)
        sets.append((f, items, [True, False] if any(it.get("context") for it in items) else [True]))
    return sets


def perplexities(cfg: PipelineConfig, items: list[dict]) -> dict[str, float]:
    """llama.cpp perplexity of each exported GGUF on the held-out worked solutions, one
    file after another on every core: scoring is batched, so two at a time on one thread
    each gained nothing (3 files in 9 s against 7 s, 2 cores, AMD EPYC)."""
    from fintune.export.llama_cpp import LlamaCpp

    text = "\n\n".join(f"{it['question']}\n{it['meta']['solution']}" for it in items
                       if (it.get("meta") or {}).get("solution"))
    if not text:
        return {}
    path = Path(cfg.eval.eval_dir) / "heldout_text.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    lc = LlamaCpp(Path(cfg.export.llama_cpp_path))
    out = {}
    for q in [cfg.export.gguf_outtype.upper()] + list(cfg.export.quant_types):
        gguf = cfg.export.gguf_path(q)
        if gguf.is_file() and q not in out:
            out[q] = lc.perplexity(gguf, path)
            log.info("eval: perplexity %s = %.3f", q, out[q])
    return out


def quant_notes(results: list[dict], ppl: dict[str, float]) -> list[str]:
    notes = []
    for r in results:
        if r["model"] != "q4_k_m":
            continue
        ref = next((x for x in results if x["eval_set"] == r["eval_set"] and x["model"] in ("f16", "bf16")), None)
        if ref:
            notes.append(f"Q4_K_M vs {ref['model'].upper()} on {r['eval_set']}: "
                         f"{100 * (r['accuracy'] - ref['accuracy']):+.1f} points accuracy")
    if ppl:
        notes.append(f"Perplexity on held-out worked solutions (llama-perplexity, ctx 128, first {PPL_CHUNKS} chunks): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in ppl.items()))
    return notes


def run(cfg: PipelineConfig) -> Path:
    from concurrent.futures import ThreadPoolExecutor

    from fintune.train.trainer import read_adapter_record

    base = read_adapter_record(final_adapter_dir(cfg))["base_model_path"]
    sets = eval_sets(cfg)
    models = list(runners(cfg, base))
    at_once, threads = concurrency(cfg, sum(gguf for *_, gguf in models))
    done: dict[str, tuple[list, list]] = {}
    side_by_side = []  # GGUF runners, made here: tokenizers loading in two threads at once crashed one
    for name, make, gguf in models:
        if gguf and at_once > 1:
            side_by_side.append((name, make(threads)))
        else:
            done[name] = evaluate_model(cfg, make(threads), sets)
    if side_by_side:
        log.info("eval: %d GGUF models, %d at a time, llama.cpp on %d thread(s) each",
                 len(side_by_side), at_once, threads)
        with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="eval") as pool:
            outs = pool.map(lambda job: evaluate_model(cfg, job[1], sets), side_by_side)
            done.update(zip([name for name, _ in side_by_side], outs))
    order = [name for name in cfg.eval.eval_models if name in done]
    results = [r for name in order for r in done[name][0]]
    predictions = [p for name in order for p in done[name][1]]
    ppl = perplexities(cfg, sets[0][1][: cfg.eval.eval_limit]) if cfg.eval.perplexity else {}
    notes = quant_notes(results, ppl) + [describe(cfg.eval.eval_sampling, results)]
    if side_by_side:
        notes.append(f"Speed: GGUF models evaluated {at_once} at a time, llama.cpp on {threads} thread(s) each; "
                     "tokens/s is each model's while another decoded beside it")
    out = write_report(Path(cfg.eval.eval_dir), results, predictions,
                       extra={"perplexity": ppl, "sampling": cfg.eval.eval_sampling,
                              "gguf_models_at_once": at_once, "llama_cpp_threads": threads}, notes=notes)
    print(markdown(results) + "".join(f"\n{n}" for n in notes))
    return out


def evaluate_model(cfg: PipelineConfig, runner, sets) -> tuple[list, list]:
    """(results, predictions) of one model on every eval set; closes the runner."""
    results, predictions = [], []
    try:
        for path, items, modes in sets:
            for with_context in modes:
                eval_set = set_name(path, with_context, len(modes) > 1)
                res, rows = evaluate(runner, items, eval_set, with_context, cfg.eval.eval_max_new_tokens,
                                     cfg.eval.eval_batch_size, eval_file=path, instruction=cfg.data.instruction)
                results.append(res)
                predictions += rows
                log.info("eval: %s on %s: accuracy %.1f%% [%.1f, %.1f] (lenient %.1f%%) format %.0f%% "
                         "(n=%d, %.0fs, %s tok/s)", runner.name, eval_set, 100 * res["accuracy"],
                         100 * res["ci95"][0], 100 * res["ci95"][1], 100 * res["accuracy_lenient"],
                         100 * res["format_rate"], res["n"], res["seconds"], res["tokens_per_second"])
    finally:
        runner.close()
    return results, predictions
