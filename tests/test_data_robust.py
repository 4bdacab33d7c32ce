"""Issue-14 cases: whatever a parser raises on one line, row or row group is
that unit's reject (file and line named), the other files' rows are all
prepared, and a file that gives no row is named in the summary."""
import json

import pytest

from fintune.jsonl import DataError
from test_data_sources import GOOD, _lines, _run

OTHER = [{"messages": [{"role": "user", "content": f"Define term {i}."},
                       {"role": "assistant", "content": f"Term {i} is ..."}]} for i in range(3)]


def _train_ids(out):
    return {json.loads(l)["id"] for l in (out / "train.jsonl").read_text().splitlines()}


def _good_file():
    return {"good.jsonl": _lines(*OTHER)}


def _only(rejects, name):
    return [r for r in rejects if name in r["where"]]


def test_over_deep_json_line_is_a_reject_naming_file_and_line(tmp_path):
    deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    third = {"messages": [{"role": "user", "content": "Define coupon."},
                          {"role": "assistant", "content": "The interest a bond pays."}]}
    out, rejects, stats = _run(tmp_path, {**_good_file(), "u.jsonl": _lines(GOOD, deep, third)})
    bad = _only(rejects, "u.jsonl")
    assert len(bad) == 1 and bad[0]["where"] == f"{tmp_path}/datasets/u.jsonl:2"
    assert bad[0]["field"] == "json" and "nested too deeply" in bad[0]["reason"]
    assert {"good-1", "good-2", "good-3", "u-1", "u-3"} <= _train_ids(out)
    assert stats["counts"]["kept:good.jsonl"] == 3 and stats["counts"]["rejected:u.jsonl"] == 1


def test_blank_lines_only_file_is_named_as_giving_nothing(tmp_path, capsys):
    files = {**_good_file(), "blank.jsonl": "\n   \n\t\n"}
    out, rejects, stats = _run(tmp_path, files)
    blank = str(tmp_path / "datasets" / "blank.jsonl")
    assert stats["files_without_rows"] == [{"file": blank, "reason": "only blank lines"}]
    printed = capsys.readouterr().out
    assert "| blank.jsonl | 0 | 0 |" in printed and "contributed 0 rows: blank.jsonl (only blank lines)" in printed
    assert {"good-1", "good-2", "good-3"} <= _train_ids(out)
    with pytest.raises(DataError, match=r"--strict_inputs: .*blank.jsonl gave no rows \(only blank lines\)"):
        _run(tmp_path, files, strict_inputs=True)


def test_every_way_a_file_gives_nothing_is_named(tmp_path):
    files = {**_good_file(), "empty.jsonl": "", "allbad.jsonl": _lines("{oops", "[1]"),
             "nothing.json": "[]", "header.csv": "instruction,output\n", "damaged.parquet": b"PAR1 not really"}
    _, _, stats = _run(tmp_path, files)
    got = {f["file"].rsplit("/", 1)[1]: f["reason"] for f in stats["files_without_rows"]}
    assert got["empty.jsonl"] == "empty file"
    assert got["allbad.jsonl"].startswith("every row rejected (2")
    assert got["nothing.json"] == "an empty list" and got["header.csv"] == "a header and no data rows"
    assert got["damaged.parquet"].startswith("unreadable Parquet")
    assert "good.jsonl" not in got


def test_numbers_beyond_float_range_are_rejects(tmp_path):
    inf_row = '{"text": "A perpetuity.", "weight": 1e400}'
    long_int = '{"text": "A big number.", "weight": ' + "9" * 5000 + "}"
    nan_row = '{"text": "Not a number.", "weight": NaN}'
    out, rejects, _ = _run(tmp_path, {**_good_file(), "u.jsonl": _lines(GOOD, inf_row, long_int, nan_row)})
    bad = {r["where"].rsplit(":", 1)[1]: r for r in _only(rejects, "u.jsonl")}
    assert set(bad) == {"2", "3", "4"} and all(r["field"] == "json" for r in bad.values())
    assert "1e400 is outside the float range" in bad["2"]["reason"]
    assert "4300 digits" in bad["3"]["reason"] and "NaN is not a JSON number" in bad["4"]["reason"]
    assert {"good-1", "good-2", "good-3", "u-1"} <= _train_ids(out)


def test_lone_surrogate_escape_is_a_reject_not_a_crash_when_writing(tmp_path):
    out, rejects, _ = _run(tmp_path, {**_good_file(), "u.jsonl": _lines(GOOD, '{"text": "caf\\ud800"}')})
    bad = _only(rejects, "u.jsonl")
    assert len(bad) == 1 and bad[0]["where"].endswith("u.jsonl:2") and "not valid Unicode" in bad[0]["reason"]
    assert {"good-1", "u-1"} <= _train_ids(out)


def test_csv_row_that_breaks_the_parser_rejects_that_row_only(tmp_path):
    csv_text = (b"instruction,input,output\n"
                b"Compute CAGR.,,14.47%\n"
                b"Compute CAGR,100 -> 150, 3 years,14.47%\n"          # unquoted comma: 4 fields
                b"Define EPS.,,\"" + b"x" * 400 + b"\"\n"            # cell over max_line_bytes
                b"Define caf\xe9.,,A shop.\n"                          # not UTF-8
                b"Define P/E.,,Price over earnings.\n")
    out, rejects, stats = _run(tmp_path, {**_good_file(), "a.csv": csv_text}, max_line_bytes=300)
    bad = {r["where"].rsplit(":", 1)[1]: r for r in _only(rejects, "a.csv")}
    assert set(bad) == {"3", "4", "5"}
    assert bad["3"]["field"] == "csv" and "4 fields, the header has 3" in bad["3"]["reason"]
    assert bad["4"]["field"] == "csv" and "field larger than field limit" in bad["4"]["reason"]
    assert bad["5"]["field"] == "encoding" and "not UTF-8" in bad["5"]["reason"]
    assert {"good-1", "good-2", "good-3", "a-2", "a-6"} <= _train_ids(out)
    assert stats["counts"]["kept:a.csv"] == 2 and stats["counts"]["rejected:a.csv"] == 3


def test_parquet_row_group_of_wrong_types_rejects_its_rows_only(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def mixed(path):
        # group 0 converts; group 1 holds timestamps past year 9999 (OverflowError in pyarrow)
        t = pa.table({"text": ["Duration is ...", "Convexity is ...", "Gamma is ...", "Vega is ..."],
                      "asof": pa.array([0, 86400, 10**12, 10**12 + 5], type=pa.timestamp("s"))})
        pq.write_table(t, path, row_group_size=2)

    def ints(path):
        pq.write_table(pa.table({"text": pa.array([1, 2], type=pa.int64())}), path)

    out, rejects, stats = _run(tmp_path, {**_good_file(), "m.parquet": mixed, "n.parquet": ints})
    m = {r["where"].rsplit(":", 1)[1]: r for r in _only(rejects, "m.parquet")}
    assert set(m) == {"row 2", "row 3"}
    assert all(r["field"] == "asof" and "OverflowError" in r["reason"] for r in m.values())
    n = _only(rejects, "n.parquet")
    assert [r["where"].rsplit(":", 1)[1] for r in n] == ["row 0", "row 1"]
    assert all(r["field"] == "text" and "must be a string, got int" in r["reason"] for r in n)
    assert {"good-1", "good-2", "good-3", "m-r0", "m-r1"} <= _train_ids(out)
    assert stats["files_without_rows"][0]["reason"].startswith("every row rejected (2")


def test_eval_and_contamination_readers_name_file_and_line(tmp_path):
    from fintune.jsonl import read_jsonl

    f = tmp_path / "e.jsonl"
    f.write_text(_lines({"id": 1}, '{"q": ' + "[" * 100_000 + "]" * 100_000 + "}"))
    with pytest.raises(DataError, match=rf"{f}:2: JSON nested too deeply"):
        list(read_jsonl(f))


def test_cli_reports_a_deep_line_and_finishes(tmp_path):
    """The run in the issue: one over-deep line no longer ends the data stage."""
    from fintune.cli import run_main as main

    folder = tmp_path / "datasets"
    folder.mkdir()
    (folder / "good.jsonl").write_text(_lines(*OTHER))
    (folder / "deep.jsonl").write_text(_lines("[" * 100_000 + "]" * 100_000, GOOD))
    rc = main(["--config", "configs/cpu-smollm2.yaml", "--dataset_folder", str(folder),
               "--data_dir", str(tmp_path / "data"), "--num_generated", "10", "--contamination_files", "",
               "--manifest", str(tmp_path / "m.json"), "--max_reject_fraction", "0.5",
               "--skip_training", "--skip_merge", "--skip_quantization", "--skip_eval"])
    assert rc == 0
    assert {"good-1", "good-2", "good-3", "deep-2"} <= _train_ids(tmp_path / "data")
