"""bench/generated_eval_set.py: a measuring set that shares no draw with a run's data."""
import json
import sys

from conftest import ROOT


def test_generated_eval_set_alternates_splits_and_shares_nothing_with_the_data_stage(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import generated_eval_set

    from fintune.config import build_config, load_yaml
    from fintune.data import quant
    from fintune.data.prepare import quant_draws

    out = tmp_path / "gen.jsonl"
    assert generated_eval_set.main(["--per_split", "58", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["meta"]["split"] for r in rows[:4]] == ["unseen_template", "random"] * 2 and len(rows) == 116
    assert len({r["meta"]["family"] for r in rows}) == len(quant.FAMILIES.names())
    assert all(r["answer_numeric"] is not None and r["meta"]["solution"] for r in rows)
    # the CPU profile's data stage: its training and held-out draws
    train, unseen, fresh = quant_draws(build_config(load_yaml(ROOT / "configs" / "cpu-smollm2.yaml")).data)
    assert len(train) == 2000 and len(unseen) + len(fresh) == 100
    assert not {p.question for p in train + unseen + fresh} & {r["question"] for r in rows}
