"""python -m fintune.eval --rescore: an old report recomputed from its
predictions with the current rules; nothing is generated."""
import json

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
    report = json.loads((d / "report.json").read_text())
    (res,) = report["results"]
    assert res["n"] == 3 and res["accuracy"] == 1 / 3 and res["accuracy_lenient"] == 1 / 3
    assert res["tokens_per_second"] == 88.5 and res["eval_file"] == str(f) and report["sampling"] == "greedy"
    rows = {json.loads(l)["id"]: json.loads(l) for l in (d / "predictions.jsonl").read_text().splitlines()}
    assert not rows["a"]["correct"] and not rows["b"]["correct"] and rows["c"]["correct"]
    assert rows["a"]["prompt"].startswith("<|im_start|>user")
    out = capsys.readouterr().out
    assert "| q4_k_m | ext | 3 | 100.0% | 33.3% | 33.3% |" in out
    assert "lenient" in (d / "report.md").read_text() and (d / "report.png").is_file()
    # the recorded eval file is used from now on: no --eval_file needed
    assert main(["--rescore", str(d)]) == 0


def test_rescore_without_a_recorded_eval_file_says_what_to_pass(tmp_path, capsys):
    _, d = _old_run(tmp_path)
    assert main(["--rescore", str(d), "--output", str(tmp_path / "new")]) == 2
    assert "pass --eval_file ext.jsonl" in capsys.readouterr().err
