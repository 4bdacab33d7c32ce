import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_help_is_instant_and_imports_no_torch():
    start = time.time()
    out = subprocess.run([sys.executable, "-c",
                          "import sys; from fintune.cli.parsers import pipeline_parser; pipeline_parser().format_help();"
                          "from fintune.cli import build_parser; build_parser().format_help();"
                          "print('torch' in sys.modules, 'transformers' in sys.modules)"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False False"
    assert time.time() - start < 10


def test_config_error_is_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rat: 1\n")
    out = subprocess.run([sys.executable, "train_financial_model.py", "--config", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "unknown key train.learning_rat" in out.stderr


def test_train_entry_has_its_flags():
    out = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True, cwd=ROOT)
    for flag in ("--model_name", "--dataset_folder", "--output_dir", "--resume_from_checkpoint"):
        assert flag in out.stdout


# --- the `fintune` command (fintune/commands.py) -------------------------------------------------

STAGE_COMMANDS = ["run", "plan", "data", "train", "merge", "export", "eval"]


@pytest.mark.parametrize("name", STAGE_COMMANDS)
def test_every_subcommand_help_exits_0(name, capsys):
    from fintune.cli import main

    with pytest.raises(SystemExit) as e:  # argparse ends --help with SystemExit(0)
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fintune {name} ") and "\nexamples:\n" in out
    assert f"\n  fintune {name}" in out.split("\nexamples:")[1]  # %(prog)s, as the user invoked it
    if name == "eval":  # fintune/eval/cli.py's own parser, grouped like the others
        for group in ("eval sets:", "model (one of --model, --gguf):", "prompts and generation:", "output:"):
            assert f"\n{group}\n" in out
        assert "--eval_file" in out.split("eval sets:")[1].split("model (")[0]


def test_top_help_lists_a_command_per_stage(capsys):
    from fintune.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in STAGE_COMMANDS:
        assert f"\n    {name} " in out
    assert "fintune plan --config r1-distill-qwen-14b-24gb" in out


def _group_blocks(help_text: str) -> dict[str, str]:
    """--help text -> {group heading: its lines}."""
    blocks, current = {}, None
    for line in help_text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
            blocks[current] = ""
        elif current:
            blocks[current] += line + "\n"
    return blocks


@pytest.mark.parametrize("argv", [["run"], ["train"], ["plan"], ["merge"]])
def test_help_groups_every_setting_under_its_section(argv):
    from fintune.cli import build_parser
    from fintune.config import FLAGS

    sub = build_parser()._subparsers._group_actions[0].choices[argv[0]]
    blocks = _group_blocks(sub.format_help())
    assert "--config NAME|FILE" in blocks["profile and paths"]
    for name, (section, _) in FLAGS.items():
        assert f"--{name} " in blocks[f"{section} settings"] or f"--{name}," in blocks[f"{section} settings"], name
    if argv[0] == "run":
        for flag in ("--dry_run", "--quick", "--skip_training", "--skip_quantization"):
            assert flag in blocks["stages"]
    assert "examples" in blocks


def test_skip_flags_name_the_pipeline_stages():
    from fintune.cli.parsers import SKIP_FLAGS
    from fintune.pipeline import STAGES

    assert SKIP_FLAGS == {s.skip_flag: s.name for s in STAGES}


def test_profiles_ship_in_the_package_and_configs_is_that_folder():
    import fintune
    from fintune.cli.parsers import profiles

    package_dir = Path(fintune.__file__).parent / "configs"
    assert (ROOT / "configs").is_symlink() and (ROOT / "configs").resolve() == package_dir.resolve()
    names = profiles().names()
    assert names == sorted(p.stem for p in package_dir.glob("*.yaml"))
    assert {"cpu-smollm2", "r1-distill-qwen-14b-24gb", "r1-distill-qwen-7b-h100"} <= set(names)


def test_config_takes_a_profile_name_from_any_directory(tmp_path, monkeypatch):
    from fintune.cli.parsers import load_config, parse, pipeline_parser

    monkeypatch.chdir(tmp_path)  # no configs/ here
    cfg = load_config(parse(pipeline_parser(), ["--config", "r1-distill-qwen-7b-h100"]))
    assert cfg.profile == "r1-distill-qwen-7b-h100" and cfg.model.base_model.endswith("R1-Distill-Qwen-7B")
    # a path still works, and wins over a name
    (tmp_path / "mine.yaml").write_text("profile: mine\ntrain:\n  max_steps: 7\n")
    cfg = load_config(parse(pipeline_parser(), ["--config", "mine.yaml"]))
    assert cfg.profile == "mine" and cfg.train.max_steps == 7


@pytest.mark.parametrize("given", ["r1-distill-qwen-14b", "configs/nope.yaml"])
def test_a_wrong_profile_is_one_line_listing_the_valid_names(given, caplog):
    from fintune.cli.parsers import profiles
    from fintune.cli import main

    assert main(["plan", "--config", given]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and given in errors[0]
    assert all(name in errors[0] for name in profiles().names())


def test_plan_is_the_dry_run(capsys):
    from fintune.cli import run_main as script_main
    from fintune.cli import main

    flags = ["--config", "r1-distill-qwen-14b-24gb", "--backend", "unsloth"]
    assert main(["plan"] + flags) == 0
    plan = capsys.readouterr().out
    assert script_main(flags + ["--dry_run"]) == 0
    dry = capsys.readouterr().out
    # the estimate (the first block; later ones read this machine's free RAM and disk)
    assert "estimated peak GPU memory" in plan and plan.split("\n\n")[0] == dry.split("\n\n")[0]


def test_stage_command_runs_that_stage_alone(tmp_path, smollm2_dir):
    import json

    from conftest import as_flags, tiny_overrides
    from fintune.cli import main

    manifest = tmp_path / "run_manifest.json"
    flags = as_flags(tiny_overrides(tmp_path, smollm2_dir, num_generated=30))
    assert main(["data", "--config", "cpu-smollm2", "--manifest", str(manifest)] + flags) == 0
    stages = json.loads(manifest.read_text())["stages"]
    assert list(stages) == ["data"] and stages["data"]["status"] == "complete"
    assert (tmp_path / "data" / "train.jsonl").is_file()
    # a second call finds it up to date: the same manifest record, not rewritten
    assert main(["data", "--config", "cpu-smollm2", "--manifest", str(manifest)] + flags) == 0
    assert json.loads(manifest.read_text())["stages"] == stages
