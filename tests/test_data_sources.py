"""User data: every format in every file type, and every kind of bad input
ending up in rejects.jsonl with file, line and field (never a traceback,
never a silent drop)."""
import json
from pathlib import Path

import pytest

from fintune.config import build_config
from fintune.jsonl import DataError

GOOD = {"messages": [{"role": "user", "content": "Define beta."}, {"role": "assistant", "content": "Beta is ..."}]}


def _run(tmp_path, files: dict, **kw):
    from fintune import data

    folder = tmp_path / "datasets"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        p = folder / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        elif callable(content):
            content(p)
        else:
            p.write_text(content, encoding="utf-8")
    cfg = build_config(overrides={"dataset_folder": str(folder), "data_dir": str(tmp_path / "out"),
                                  "num_generated": 10, "contamination_files": "", "max_reject_fraction": 1.0, **kw})
    out = data.run(cfg)
    rejects = [json.loads(l) for l in (out / "rejects.jsonl").read_text().splitlines()]
    return out, rejects, json.loads((out / "stats.json").read_text())


def _lines(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _msgs(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


BAD_CASES = {
    "invalid_json": (_lines(GOOD, '{"messages": [oops'), "u.jsonl:2", "json", "invalid JSON"),
    "not_utf8": (_lines(GOOD).encode() + b'{"text": "caf\xe9"}\n', "u.jsonl:2", "encoding", "not UTF-8"),
    "unknown_role": (_lines(GOOD, _msgs(("banker", "hi"), ("assistant", "yo"))), "u.jsonl:2",
                     "messages[0].role", "unknown role 'banker'"),
    "empty_content": (_lines(GOOD, _msgs(("user", "hi"), ("assistant", "  "))), "u.jsonl:2",
                      "messages[1].content", "empty"),
    "non_string_content": (_lines(GOOD, _msgs(("user", "hi"), ("assistant", 42))), "u.jsonl:2",
                           "messages[1].content", "must be a string, got int"),
    "not_ending_with_assistant": (_lines(GOOD, _msgs(("user", "hi"), ("assistant", "a"), ("user", "b"))),
                                  "u.jsonl:2", "messages", "must end with an assistant"),
    "misnamed_field": (_lines(GOOD, {"mesages": GOOD["messages"]}), "u.jsonl:2", "messages",
                       "missing: u.jsonl holds messages rows"),
    "misnamed_first_row": (_lines({"mesages": GOOD["messages"]}, GOOD), "u.jsonl:1", "format",
                           "known formats: alpaca (keys instruction, output); messages (keys messages)"),
    "missing_field_alpaca": (_lines({"instruction": "x", "output": "y"}, {"instruction": "x", "output": None}),
                             "u.jsonl:2", "output", "missing"),
    "dpo_chosen_equals_rejected": (_lines({"prompt": "p", "chosen": "a", "rejected": "b"},
                                          {"prompt": "p", "chosen": "same", "rejected": "same"}),
                                   "u.jsonl:2", "rejected", "identical to chosen"),
    "huge_line": (_lines(GOOD, {"text": "x" * 3_000_000}), "u.jsonl:2", "line", "over max_line_bytes"),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_row_is_rejected_with_file_line_and_field(tmp_path, case):
    content, where, field, reason = BAD_CASES[case]
    out, rejects, stats = _run(tmp_path, {"u.jsonl": content})
    assert len(rejects) == 1, rejects
    r = rejects[0]
    assert r["where"].endswith(where) and r["field"] == field and reason in r["reason"], r
    assert stats["counts"]["kept:u.jsonl"] == 1 and stats["counts"]["rejected:u.jsonl"] == 1


def test_utf8_bom_is_accepted(tmp_path):
    out, rejects, stats = _run(tmp_path, {"u.jsonl": b"\xef\xbb\xbf" + _lines(GOOD).encode()})
    assert rejects == [] and stats["counts"]["kept:u.jsonl"] == 1


def test_empty_file_is_reported(tmp_path):
    out, rejects, _ = _run(tmp_path, {"empty.jsonl": "", "u.jsonl": _lines(GOOD)})
    assert rejects == [{"where": str(tmp_path / "datasets" / "empty.jsonl"), "field": "file", "reason": "empty file"}]


def test_csv_with_missing_columns_lists_the_formats(tmp_path):
    out, rejects, _ = _run(tmp_path, {"q.csv": "instruction,answer\nCompute CAGR,14%\n"})
    assert rejects[0]["where"].endswith("q.csv:2") and rejects[0]["field"] == "format"
    assert "alpaca (keys instruction, output)" in rejects[0]["reason"]


def test_undetectable_file_and_unsupported_type(tmp_path):
    out, rejects, _ = _run(tmp_path, {"x.jsonl": _lines({"foo": 1}), "notes.txt": "hello"})
    reasons = {Path(r["where"].split(":")[0]).name: r for r in rejects}
    assert "known formats" in reasons["x.jsonl"]["reason"]
    assert "unsupported file type .txt" in reasons["notes.txt"]["reason"]


def test_duplicates_are_removed_and_counted(tmp_path):
    out, rejects, stats = _run(tmp_path, {"u.jsonl": _lines(GOOD, GOOD, GOOD)})
    assert stats["counts"]["duplicates_removed"] == 2
    assert sum(r["reason"] == "exact duplicate" for r in rejects) == 2


def test_too_many_rejects_fail_the_stage_naming_the_rejects_file(tmp_path):
    with pytest.raises(DataError, match="rejects.jsonl"):
        _run(tmp_path, {"u.jsonl": _lines(GOOD, "{bad")}, max_reject_fraction=0.05)


def _parquet(path):
    import pandas as pd

    pd.DataFrame([{"prompt": "Is a 2% stop sensible?", "chosen": "Size it by risk: ...", "rejected": "Yes."},
                  {"prompt": [{"role": "user", "content": "Beta of cash?"}], "chosen": "0", "rejected": "1"}]
                 ).assign(prompt=lambda d: d.prompt.map(lambda v: json.dumps(v) if isinstance(v, list) else v)
                          ).to_parquet(path)


def test_one_file_of_each_format_and_type(tmp_path):
    files = {
        "chat.jsonl": _lines(GOOD, _msgs(("system", "Be brief."), ("user", "Define alpha."), ("assistant", "Excess return."))),
        "share.json": json.dumps([{"conversations": [{"from": "human", "value": "Define VaR."},
                                                     {"from": "gpt", "value": "A loss quantile."}]}]),
        "alpaca.csv": "instruction,input,output\nCompute CAGR.,\"100 -> 150, 3 years\",14.47%\nDefine EPS.,,Earnings per share\n",
        "pairs.parquet": _parquet,
        "notes.jsonl": _lines({"text": "A bond's price falls when yields rise."}),
    }
    out, rejects, stats = _run(tmp_path, files)
    assert rejects == []
    c = stats["counts"]
    assert {k: c[k] for k in c if k.startswith("format:")} == {
        "format:messages": 2, "format:sharegpt": 1, "format:alpaca": 2, "format:preference": 2, "format:text": 1}
    rows = [json.loads(l) for l in (out / "train.jsonl").read_text().splitlines()]
    user = [r for r in rows if r["source"].startswith("file:")]
    assert len(user) == 8 and stats["dpo_pairs"] == 2
    dpo = [json.loads(l) for l in (out / "dpo.jsonl").read_text().splitlines()]
    assert dpo[1]["prompt"] == [{"role": "user", "content": "Beta of cash?"}]
    assert dpo[0]["chosen"] == [{"role": "assistant", "content": "Size it by risk: ..."}]
    assert next(r for r in user if r["format"] == "text")["text"].startswith("A bond's price")
    assert next(r for r in user if r["id"] == "alpaca-2")["messages"][0]["content"] == "Compute CAGR.\n\n100 -> 150, 3 years"


def test_preference_pairs_can_stay_out_of_sft(tmp_path):
    out, _, stats = _run(tmp_path, {"p.jsonl": _lines({"prompt": "p", "chosen": "a", "rejected": "b"})},
                         dpo_to_sft=False)
    rows = [json.loads(l) for l in (out / "train.jsonl").read_text().splitlines()]
    assert not any(r["source"] == "file:p.jsonl" for r in rows) and stats["dpo_pairs"] == 1


def test_format_override_per_file(tmp_path):
    out, rejects, stats = _run(tmp_path, {"a.jsonl": _lines({"instruction": "x", "output": "y", "text": "z"})},
                               dataset_formats="a.jsonl=text")
    assert stats["counts"]["format:text"] == 1
    with pytest.raises(DataError, match="missing.jsonl"):
        _run(tmp_path, {}, dataset_formats="missing.jsonl=text")


def test_rows_over_max_seq_length_are_rejected_and_counted(tmp_path, capsys):
    long = _msgs(("user", "Explain duration."), ("assistant", "Duration " * 400))
    out, rejects, stats = _run(tmp_path, {"u.jsonl": _lines(GOOD, long)}, max_seq_length=256)
    mine = [r for r in rejects if r["where"] == "u-2"]
    assert len(mine) == 1 and mine[0]["field"] == "tokens" and "over max_seq_length=256" in mine[0]["reason"]
    assert stats["counts"]["dropped_too_long"] == sum("over max_seq_length" in r["reason"] for r in rejects)
    t = stats["tokens"]
    assert t["checked"] and t["template"] == "chatml" and 0 < t["p50"] <= t["p90"] <= t["max"] <= 256
    printed = capsys.readouterr().out
    assert "| u.jsonl | 2 | 0 |" in printed and "token lengths: p50" in printed
