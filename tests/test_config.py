import pytest

from fintune.cli import run_main as main
from fintune.cli.parsers import pipeline_parser
from fintune.config import ConfigError, build_config, load_yaml


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_precedence_defaults_then_yaml_then_flags(tmp_path):
    y = load_yaml(write(tmp_path, "train:\n  learning_rate: 0.5\n  max_steps: 7\nlora:\n  lora_r: 4\n"))
    cfg = build_config(y, {"max_steps": 9})
    assert cfg.train.learning_rate == 0.5      # YAML over default
    assert cfg.train.max_steps == 9            # flag over YAML
    assert cfg.lora.lora_r == 4
    assert cfg.lora.lora_alpha == 32           # default kept


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_yaml(write(tmp_path, "train:\n  learning_rat: 1\n"))
    assert "train.learning_rat" in str(e.value) and "learning_rate" in str(e.value)


def test_unknown_yaml_section_lists_sections(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_yaml(write(tmp_path, "trainer:\n  x: 1\n"))
    assert "valid sections" in str(e.value) and "train" in str(e.value)


def test_bad_value_names_the_field():
    with pytest.raises(ConfigError, match="train.backend"):
        build_config(overrides={"backend": "tensorflow"})
    with pytest.raises(ConfigError, match="must be int"):
        build_config(overrides={"max_steps": "many"})


def test_unknown_flag_is_one_short_line_with_the_nearest_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--learning_rat", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("unrecognized arguments: --learning_rat 1; did you mean --learning_rate?")
    assert "--skip_training" not in "\n".join(err) and len("\n".join(err)) < 300  # not every option


@pytest.mark.parametrize("argv", [["run", "--xyzzy"], ["eval", "--xyzzy"], ["plan", "--max-stepz", "3"]])
def test_every_command_answers_an_unknown_flag_in_one_line(argv, capsys):
    from fintune.cli import main as fintune

    with pytest.raises(SystemExit) as e:
        fintune(argv)
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"fintune {argv[0]}: error: unrecognized arguments: {argv[1]}")
    assert "did you mean --max_steps?" in last if argv[1] == "--max-stepz" else "--help` lists" in last


def test_hyphenated_flags_are_the_underscored_ones(monkeypatch):
    """As HF's own parser accepts both spellings (transformers 5.17 hf_argparser.py
    _parse_dataclass_field adds --{name with hyphens}), --learning-rate is --learning_rate."""
    from fintune import cli
    from fintune.cli.parsers import parse, plan_parser

    seen = {}
    monkeypatch.setitem(cli.COMMANDS, "plan", ("", plan_parser, lambda args: seen.update(vars(args)) or 0))
    assert cli.main(["plan", "--learning-rate", "1e-4", "--lora-r=8", "--no-eval-cache"]) == 0
    assert seen["learning_rate"] == 1e-4 and seen["lora_r"] == 8 and seen["eval_cache"] is False
    args = parse(pipeline_parser(), ["--max-steps", "5", "--skip-eval", "--no-eval_cache"])
    assert args.max_steps == 5 and args.skip_eval and args.eval_cache is False


def test_a_flat_yaml_key_is_told_which_section_it_belongs_to(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_yaml(write(tmp_path, "learning_rate: 2e-4\nlora_r: 8\n"))
    assert str(e.value).endswith("unknown section 'learning_rate': it is a setting of [train]; put it under train:")


def test_flag_abbreviations_are_refused():
    # "--lr" must not silently mean --lr_scheduler_type
    args, unknown = pipeline_parser().parse_known_args(["--lr", "3"])
    assert unknown == ["--lr", "3"]


def test_issue_flag_names_exist():
    opts = {o for a in pipeline_parser()._actions for o in a.option_strings}
    for flag in ["--config", "--base_model", "--dataset_folder", "--llama_cpp_path", "--lora_output_dir",
                 "--merged_model_dir", "--gguf_f16_path", "--gguf_q4_path", "--gguf_q8_path",
                 "--learning_rate", "--num_train_epochs", "--max_steps", "--max_seq_length",
                 "--per_device_train_batch_size", "--gradient_accumulation_steps", "--lora_r", "--lora_alpha",
                 "--skip_dataset_prep", "--skip_training", "--skip_merge", "--skip_quantization",
                 "--skip_eval", "--resume_from_checkpoint"]:
        assert flag in opts


def test_profiles_load():
    from pathlib import Path

    for p in sorted(Path("configs").glob("*.yaml")):
        cfg = build_config(load_yaml(p))
        assert cfg.profile == p.stem
    gpu = build_config(load_yaml("configs/r1-distill-qwen-14b-24gb.yaml"))
    assert (gpu.lora.lora_r, gpu.lora.lora_alpha, gpu.model.max_seq_length) == (32, 64, 4096)
    assert (gpu.train.per_device_train_batch_size, gpu.train.gradient_accumulation_steps) == (1, 8)
    assert gpu.train.learning_rate == 1e-5 and gpu.train.lr_scheduler_type == "cosine"
    assert gpu.model.load_in_4bit
