"""Pipeline eval stage: base vs tuned (adapter, merged, every GGUF) in one report,
on the generated held-out set and on external sets, plus llama.cpp perplexity
of each GGUF on held-out text and its generation speed.

On a CUDA GPU the Hugging Face runner generates in large batches. On CPU the
base model runs through llama.cpp instead, which measured faster than batched
transformers generation here (see runner.GGUFRunner): it is converted to an F16
GGUF once for that and cached (models.base_gguf), by the export stage beside
its own conversion when the pipeline runs both (models.convert_base_beside).
"""
from __future__ import annotations

import logging
from pathlib import Path

from fintune import machine, models
from fintune.adapters import final_adapter_dir, read_adapter_record
from fintune.config import PipelineConfig
from fintune.eval import interrupt
from fintune.eval.evaluate import evaluate, load_eval_file, set_name
from fintune.eval.report import markdown, quant_notes, stratified, write_report
from fintune.eval.runner import GGUFRunner, HFRunner
from fintune.jsonl import read_jsonl
from fintune.llama_cpp import LlamaCpp
from fintune.plan.eval import eval_lines
from fintune.plan.lines import this_machine
from fintune.sampling import Preset, describe

log = logging.getLogger(__name__)


def runners(cfg: PipelineConfig, base_path: str):
    """(name, runner factory, whether it runs a GGUF through llama.cpp) for every
    model in eval_models, in that order, but those the plan leaves out. A factory
    takes the llama.cpp server's thread count (None: its default), which the HF
    runners ignore."""
    fits = planned(cfg)
    for name in cfg.eval.eval_models:
        line = fits[name]
        if not line.ok:
            log.warning("eval: %s left out of the report: %s", name, line.why)
            continue
        if line.action == "4-bit":
            log.info("eval: %s %s", name, line.why)
        made = runner_factory(cfg, name, base_path, nf4=line.action == "4-bit")
        if made is not None:
            yield (name, *made)


def runner_factory(cfg: PipelineConfig, name: str, base_path: str, nf4: bool):
    """(factory, runs a GGUF) for one eval model, or None for a GGUF not exported."""
    adapter, lcp = str(final_adapter_dir(cfg)), cfg.export.llama_cpp_path
    sampling = Preset(cfg.eval.eval_sampling)
    replies = models.cache_dir() / "eval-replies" if cfg.eval.eval_cache else None

    def gguf_runner(path: Path, label: str):
        return lambda threads: GGUFRunner(path, lcp, adapter, label, sampling, cfg.eval.eval_parallel, replies,
                                          threads)

    def hf_runner(model_dir: str, adapter_dir: str | None):
        return lambda threads: HFRunner(model_dir, adapter_dir, name=name, sampling=sampling, load_in_4bit=nf4)

    if name == "base":
        # on a CPU the base runs through llama.cpp: faster than batched transformers here
        return (hf_runner(base_path, None), False) if machine.cuda_available() else \
            (gguf_runner(models.base_gguf(cfg, base_path), "base"), True)
    if name == "adapter":
        return hf_runner(base_path, adapter), False
    if name == "merged":
        return hf_runner(cfg.export.merged_model_dir, None), False
    path = cfg.export.gguf_path(name)
    if not path.is_file():
        log.warning("eval: %s not found (%s not exported?); left out of the report", path, name)
        return None
    return gguf_runner(path, name.lower()), True


def planned(cfg: PipelineConfig) -> dict:
    """{eval model: its plan line on this machine}: an HF model in bf16, 4-bit or left
    out; a GGUF on the GPU, in RAM or left out (fintune/plan/eval.py), each with its
    expected time."""
    lines = eval_lines(cfg, this_machine(cfg))
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
    n = cfg.eval.eval_concurrency or (1 if machine.cuda_available() else 2)
    cores = machine.cpu_count()
    n = min(n, cores, models)
    return (n, max(1, cores // n)) if n > 1 else (1, None)


def eval_sets(cfg: PipelineConfig) -> list[tuple[str, list[dict], list[bool]]]:
    """(name, items, context modes): the held-out set, then each external file."""
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


def run(cfg: PipelineConfig) -> Path:
    """The eval stage; Ctrl-C stops it within seconds, keeping the replies cached so far."""
    hint = (f"the GGUF models' finished replies are kept in {models.cache_dir() / 'eval-replies'}; continue with "
            "the same command, which takes them from there" if cfg.eval.eval_cache else
            "continue with the same command (eval_cache is off: every reply is generated again)")
    with interrupt.stop_on_signal(hint):
        return _run(cfg)


def _run(cfg: PipelineConfig) -> Path:
    from concurrent.futures import ThreadPoolExecutor

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
                              "gguf_models_at_once": at_once, "llama_cpp_threads": threads,
                              "notes": notes},  # --rescore carries them over
                       notes=notes)
    print(markdown(results) + "".join(f"\n{n}" for n in notes))
    return out


def evaluate_model(cfg: PipelineConfig, runner, sets) -> tuple[list, list]:
    """(results, predictions) of one model on every eval set; closes the runner."""
    results, predictions = [], []
    try:
        for path, items, modes in sets:
            for with_context, tools in ((c, t) for c in modes for t in cfg.eval.eval_tools):
                eval_set = set_name(path, with_context, len(modes) > 1)
                res, rows = evaluate(runner, items, eval_set, with_context, cfg.eval.eval_max_new_tokens,
                                     cfg.eval.eval_batch_size, eval_file=path, instruction=cfg.data.instruction,
                                     tools=tools == "on")
                results.append(res)
                predictions += rows
                if "not_run" in res:
                    log.info("eval: %s on %s with the tool: %s", runner.name, eval_set, res["not_run"])
                    continue
                log.info("eval: %s on %s: accuracy %.1f%% [%.1f, %.1f] (lenient %.1f%%) format %.0f%% "
                         "(n=%d, %.0fs, %s tok/s)", runner.name, eval_set, 100 * res["accuracy"],
                         100 * res["ci95"][0], 100 * res["ci95"][1], 100 * res["accuracy_lenient"],
                         100 * res["format_rate"], res["n"], res["seconds"], res["tokens_per_second"])
    finally:
        runner.close()
    return results, predictions
