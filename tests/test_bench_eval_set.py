"""bench/generated_eval_set.py: a measuring set that shares no draw with a run's data."""
import json
import sys

from conftest import ROOT


def test_generated_eval_set_alternates_splits_and_shares_nothing_with_the_data_stage(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import generated_eval_set

    from fintune.config import build_config, load_yaml
    from fintune.data import quant

    out = tmp_path / "gen.jsonl"
    assert generated_eval_set.main(["--per_split", "58", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["meta"]["split"] for r in rows[:4]] == ["unseen_template", "random"] * 2 and len(rows) == 116
    assert len({r["meta"]["family"] for r in rows}) == len(quant.FAMILIES.names())
    assert all(r["answer_numeric"] is not None and r["meta"]["solution"] for r in rows)
    # the default data stage's draws: training (data_seed), held-out (+ 1 unseen, + 2 fresh)
    d = build_config(load_yaml(ROOT / "configs" / "cpu-smollm2.yaml")).data
    seen = {p.question for p in quant.generate_set(d.num_generated, d.data_seed)}
    seen |= {p.question for p in quant.generate_unseen(100, d.data_seed + 1)}
    seen |= {p.question for p in quant.generate_set(100, d.data_seed + 2)}
    assert not seen & {r["question"] for r in rows}
