"""What the README, the help and the profiles say is true of the code."""
import re
import shlex
from pathlib import Path

import pytest

from fintune.config import build_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _code_lines(text: str) -> list[str]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def test_profile_comments_cite_sections_that_exist():
    cited = []
    for path in (ROOT / "fintune" / "configs").glob("*.yaml"):
        text = re.sub(r"\n\s*#\s*", " ", path.read_text())
        cited += re.findall(r"\((README|docs/[\w./-]+), \"([^\"]+)\"\)", text)
    assert cited
    for doc, section in cited:
        body = (ROOT / ("README.md" if doc == "README" else doc)).read_text()
        assert re.search(rf"^#+ {re.escape(section)}", body, re.M), (doc, section)


def test_readme_commands_use_no_files_a_clone_lacks_and_parse():
    """../shared/eval is beside the authors' checkout, not in a clone or the wheel."""
    from fintune.cli import build_parser
    from fintune.cli.eval import eval_parser

    lines = [l for l in _code_lines(README) if l.startswith("fintune ")]
    assert lines
    for line in lines:
        assert "../shared" not in line, line
        argv = shlex.split(line)[1:]
        if argv[0] == "eval":
            eval_parser().parse_args(argv[1:])
        else:
            args, rest = build_parser().parse_known_args(argv)
            assert rest == [], line


def test_the_eval_cache_flag_is_documented_on_a_command_that_takes_it():
    from fintune.cli.eval import eval_parser
    from fintune.cli.parsers import pipeline_parser

    (sentence,) = [s for s in re.split(r"(?<=\.)\s", README) if "--no-eval_cache" in s]
    assert "fintune run" in sentence
    assert pipeline_parser().parse_args(["--no-eval_cache"]).eval_cache is False
    with pytest.raises(SystemExit):
        eval_parser().parse_args(["--no-eval_cache"])


def test_the_help_example_that_reruns_says_what_reruns(tmp_path):
    """`--skip_dataset_prep --skip_training  # merge, export and eval again` reran
    nothing after a complete run; the example now changes what it says reruns."""
    from fintune.cli.parsers import RUN_EXAMPLES, SKIP_FLAGS, pipeline_parser
    from fintune.config import overrides_from_args
    from fintune.manifest import Manifest
    from fintune.pipeline import STAGES, fingerprint, pending

    cfg = build_config(overrides={"llama_cpp_path": str(tmp_path / "lc")})
    manifest = Manifest(tmp_path / "m.json")
    for stage in STAGES:  # a complete run of these settings
        manifest.save_stage(stage.name, {"status": "complete", "fingerprint": fingerprint(stage, cfg, manifest),
                                         "artifacts": []})
    (example,) = [e for e in RUN_EXAMPLES if "--skip_training" in e]
    argv, comment = shlex.split(example.split("#")[0])[1:], example.split("#")[1]
    args = pipeline_parser().parse_args(argv)
    changed = build_config(overrides={**overrides_from_args(args), "llama_cpp_path": str(tmp_path / "lc")})
    reruns = pending(changed, manifest, {f for f in SKIP_FLAGS if getattr(args, f)})
    assert reruns == ["export", "eval"]
    assert "export and eval rerun" in comment and "training left as is" in comment


def test_plan_gives_the_training_time_from_measured_tokens_per_second(tmp_path, capsys):
    import json

    from fintune.cli import main
    from fintune.plan.training import MEASURED_TOKENS_PER_S

    rate, where = MEASURED_TOKENS_PER_S[("embedded:smollm2-135m-instruct", "peft", False)]
    data = tmp_path / "data"
    assert main(["plan", "--config", "cpu-smollm2", "--data_dir", str(data)]) == 0
    want = 300 * 2 * 512 / rate / 60  # max_steps x batch x max_seq_length (no data yet: the upper bound)
    assert f"training time    ~{want:.0f} min: 300 steps of 2 rows of up to 512 tokens at {rate:,} tokens/s " \
           f"(measured on {where}" in capsys.readouterr().out
    data.mkdir()
    (data / "stats.json").write_text(json.dumps({"train": 700, "tokens": {"p50": 250}}))
    assert main(["plan", "--config", "cpu-smollm2", "--data_dir", str(data)]) == 0
    assert f"~{300 * 2 * 250 / rate / 60:.0f} min: 300 steps of 2 rows of 250 tokens (the data's median)" \
        in capsys.readouterr().out
    assert main(["plan", "--config", "r1-distill-qwen-7b-h100", "--backend", "peft"]) == 0
    assert "training time    not estimated: no measured tokens/s for deepseek-ai/DeepSeek-R1-Distill-Qwen-7B " \
           "through peft" in capsys.readouterr().out


def test_plan_on_the_24gb_profile_without_unsloth_names_what_unsloth_needs(capsys):
    from fintune.cli import main
    from fintune.plan.shapes import GiB
    from fintune.plan.training import memory, needed

    assert main(["plan", "--config", "r1-distill-qwen-14b-24gb", "--backend", "peft"]) == 0
    out = capsys.readouterr().out
    cfg = build_config(overrides={"base_model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "load_in_4bit": True,
                                  "max_seq_length": 4096, "per_device_train_batch_size": 1, "lora_r": 32})
    unsloth = needed(memory(cfg, "unsloth"), "unsloth") / GiB
    assert "fits a card of 24 GB: no" in out
    assert f"the unsloth backend needs about {unsloth:.1f} GiB (fits a card of 24 GB)" in out
