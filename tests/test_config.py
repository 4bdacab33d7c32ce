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


def test_unknown_flag_lists_valid_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--learning_rat", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--learning_rate" in err and "--skip_training" in err


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
