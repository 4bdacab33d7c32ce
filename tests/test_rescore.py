"""fintune eval --rescore: an old report recomputed from its predictions with
the current rules, beside it; nothing is generated and the old report, and the
run manifest that records it, stay as they were."""
import json
from collections import Counter
from pathlib import Path

from fintune.cli import eval_main as main

ITEMS = [
    {"id": "a", "question": "What is the abnormal return?", "context": None, "answer": "0", "answer_numeric": 0.0},
    {"id": "b", "question": "What is the required return?", "context": None, "answer": "0.02", "answer_numeric": 0.02},
    {"id": "c", "question": "What is the NPV?", "context": None, "answer": "1200", "answer_numeric": 1200.0},
]
# as an older version wrote them: both flattering verdicts marked correct
PREDICTIONS = [
    {"model": "q4_k_m", "eval_set": "ext", "id": "a", "output": "Final answer: 0.125", "extracted": 0.125,
     "method": "final_answer", "gold": 0.0, "correct": True, "correct_strict": False, "scaled": True,
     "prompt": "<|im_start|>user\nWhat is the abnormal return?<|im_end|>\n<|im_start|>assistant\n"},
    {"model": "q4_k_m", "eval_set": "ext", "id": "b", "output": "z(14) = 1.575, z(15) = 1.575, z(16) = 1.575",
     "extracted": 1.575, "method": "last_number", "gold": 0.02, "correct": True, "correct_strict": False,
     "scaled": True, "prompt": "..."},
    {"model": "q4_k_m", "eval_set": "ext", "id": "c", "output": "Final answer: 1,200", "extracted": 1200.0,
     "method": "final_answer", "gold": 1200.0, "correct": True, "correct_strict": True, "scaled": False,
     "prompt": "..."},
]


def _old_run(tmp_path):
    f = tmp_path / "ext.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in ITEMS))
    d = tmp_path / "run"
    d.mkdir()
    (d / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PREDICTIONS))
    (d / "report.json").write_text(json.dumps({"results": [
        {"model": "q4_k_m", "eval_set": "ext", "n": 3, "accuracy": 1.0, "tokens_per_second": 88.5,
         "seconds": 12.0}], "sampling": "greedy"}))
    return f, d


def test_rescore_recomputes_an_old_report_with_the_current_rules(tmp_path, capsys):
    f, d = _old_run(tmp_path)
    assert main(["--rescore", str(d), "--eval_file", str(f)]) == 0
    new = d / "rescored"
    report = json.loads((new / "report.json").read_text())
    (res,) = report["results"]
    assert res["n"] == 3 and res["accuracy"] == 1 / 3 and res["accuracy_lenient"] == 1 / 3
    assert res["tokens_per_second"] == 88.5 and res["eval_file"] == str(f) and report["sampling"] == "greedy"
    rows = {json.loads(l)["id"]: json.loads(l) for l in (new / "predictions.jsonl").read_text().splitlines()}
    assert not rows["a"]["correct"] and not rows["b"]["correct"] and rows["c"]["correct"]
    assert rows["a"]["prompt"].startswith("<|im_start|>user")
    out = capsys.readouterr().out
    assert "| q4_k_m | ext | 3 | 100.0% | 33.3% | 33.3% |" in out
    assert "lenient" in (new / "report.md").read_text() and (new / "report.png").is_file()
    # the rescored report records its eval file: no --eval_file needed to rescore it again
    assert main(["--rescore", str(new)]) == 0
    assert json.loads((new / "rescored" / "report.json").read_text())["results"][0]["accuracy"] == 1 / 3


def test_rescore_without_a_recorded_eval_file_says_what_to_pass(tmp_path, capsys):
    _, d = _old_run(tmp_path)
    assert main(["--rescore", str(d), "--output", str(tmp_path / "new")]) == 2
    assert "pass --eval_file ext.jsonl" in capsys.readouterr().err


class _Tokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "<|im_start|>user\n" + messages[0]["content"] + "<|im_end|>\n<|im_start|>assistant\n"


class _Runner:
    """Stands in for generation only: the report below is made by the eval stage's own
    evaluate(), quant_notes(), sampling.describe() and write_report()."""
    name, device, dtype, tokens, seconds, cached = "q4_k_m", "cpu (llama.cpp)", "gguf", 0, 0.0, 0

    def __init__(self, replies):
        from fintune.sampling import GREEDY

        self.replies, self.sampling, self.tokenizer, self.stops = replies, GREEDY, _Tokenizer(), Counter()

    def generate(self, prompts, max_new_tokens, batch_size, expected=None):
        self.tokens, self.seconds = self.tokens + 177, self.seconds + 2.0
        self.stops.update(["repeat"])
        return self.replies[:len(prompts)]


def _pipeline_report(tmp_path):
    """An eval folder as the pipeline's eval stage leaves it, and a manifest recording it."""
    from fintune.eval.evaluate import evaluate
    from fintune.eval.report import quant_notes, write_report
    from fintune.manifest import Manifest, describe
    from fintune.sampling import describe as sampling_line

    f = tmp_path / "ext.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in ITEMS))
    res, rows = evaluate(_Runner([p["output"] for p in PREDICTIONS]), ITEMS, "ext", True, 64, 4, eval_file=f)
    notes = quant_notes([res], {}) + [sampling_line("greedy", [res]),
                                      "Speed: GGUF models evaluated 2 at a time, llama.cpp on 1 thread(s) each"]
    d = tmp_path / "outputs" / "eval"
    report = write_report(d, [res], rows, extra={"perplexity": {}, "sampling": "greedy", "notes": notes},
                          notes=notes)  # as eval/stage.py writes it
    manifest = Manifest(tmp_path / "outputs" / "run_manifest.json")
    manifest.save_stage("eval", {"status": "complete", "fingerprint": "fp", "artifacts": [describe(report)]})
    return d, manifest


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_rescore_of_the_pipelines_report_writes_beside_it_and_keeps_what_generation_measured(tmp_path, capsys):
    d, manifest = _pipeline_report(tmp_path)
    before = _files(d)
    assert main(["--rescore", str(d)]) == 0
    assert _files(d) == before  # report.json, .md, .png and predictions.jsonl untouched
    assert manifest.is_up_to_date("eval", "fp") == (True, "up to date")  # the next run does not redo the eval
    old_md, new_md = (d / "report.md").read_text(), (d / "rescored" / "report.md").read_text()
    for line in ("Ran on: q4_k_m cpu (llama.cpp) (gguf)", "Stop rule: ", "Sampling: greedy", "Speed: GGUF models"):
        assert line in old_md and line in new_md, line
    assert "cached" not in new_md
    (res,) = json.loads((d / "rescored" / "report.json").read_text())["results"]
    assert res["tokens_per_second"] == 88.5 and res["stopped_by_rule"] == {"repeat": 1}
    assert "| q4_k_m | off | ext | 3 | 33.3% |" in new_md and "| 88.5 |" in new_md
    assert f"report: {d / 'rescored' / 'report.json'}" in capsys.readouterr().err


def test_rescore_of_a_report_that_kept_no_notes_carries_its_sampling_and_speed_lines(tmp_path):
    d, _ = _pipeline_report(tmp_path)
    report = json.loads((d / "report.json").read_text())
    del report["notes"]  # as written before report.json kept them
    (d / "report.json").write_text(json.dumps(report))
    assert main(["--rescore", str(d), "--output", str(tmp_path / "new")]) == 0
    notes = json.loads((tmp_path / "new" / "report.json").read_text())["notes"]
    assert [n.split(":")[0] for n in notes] == ["Sampling", "Speed"]


def test_rescore_refuses_to_write_over_the_report_it_reads(tmp_path, capsys):
    d, _ = _pipeline_report(tmp_path)
    before = _files(d)
    assert main(["--rescore", str(d), "--output", str(d) + "/"]) == 2
    err = capsys.readouterr().err
    assert "that is the report being rescored" in err and len(err.strip().splitlines()) == 1
    assert _files(d) == before
