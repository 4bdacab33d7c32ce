"""Every config field carries its help text (dataclass metadata) and `--help` shows it."""
import dataclasses

import pytest

from fintune.config import loading
from fintune.config import FLAGS, SECTIONS, ConfigError, build_config, field_default, field_help, format_value


def _squash(text: str) -> str:
    """Text without whitespace: argparse rewraps help (and may break after a hyphen)."""
    return "".join(text.split())


def _flag_blocks(help_text: str) -> dict[str, str]:
    """--help text -> {--flag: its invocation line and help lines}."""
    blocks, current = {}, None
    for line in help_text.splitlines():
        stripped = line.strip()
        if line.startswith("  --"):
            current = stripped.split()[0].rstrip(",")
            blocks[current] = stripped
        elif current and line.startswith("   "):
            blocks[current] += " " + stripped
        else:
            current = None
    return blocks


def pipeline_parser():
    from fintune.cli.parsers import pipeline_parser

    return pipeline_parser()


@pytest.fixture(scope="module")
def help_text() -> str:
    return pipeline_parser().format_help()


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_field_has_help_metadata(section):
    for f in dataclasses.fields(SECTIONS[section]):
        text = f.metadata.get("help")
        assert isinstance(text, str) and text.strip(), f"{section}.{f.name} has no help"
        assert not text.startswith("["), f"{section}.{f.name}: the group heading names the section"
        assert field_help(f.name) == text


def test_field_help_and_default_by_name():
    assert "learning rate" in field_help("learning_rate").lower()
    assert field_default("learning_rate") == 2e-4
    assert field_default("quant_types") == ["Q4_K_M", "Q8_0"]
    assert field_default("quant_types") is not field_default("quant_types")  # a fresh list each time
    with pytest.raises(ConfigError, match="learning_rate"):
        field_help("learnig_rate")


def test_a_field_without_help_fails_at_import(monkeypatch):
    @dataclasses.dataclass
    class Bare:
        undocumented_setting: int = 1

    monkeypatch.setitem(SECTIONS, "bare", Bare)
    with pytest.raises(RuntimeError, match="bare.undocumented_setting has no help text"):
        loading._flag_index()


def test_format_value():
    assert format_value(2e-4) == "2e-4"
    assert format_value(5e-6) == "5e-6"
    assert format_value(0.03) == "0.03"
    assert format_value(1.0) == "1.0"
    assert format_value(["Q4_K_M", "Q8_0"]) == "Q4_K_M,Q8_0"
    assert format_value([]) == "none"
    assert format_value(True) == "true" and format_value(None) == "unset"


def test_help_shows_every_fields_text_and_default(help_text):
    blocks = _flag_blocks(help_text)
    for name in FLAGS:
        block = blocks[f"--{name}"]
        assert _squash(field_help(name)) in _squash(block), name
        assert _squash(f"(default: {format_value(field_default(name))})") in _squash(block), name
    assert "[train]" not in help_text and "[lora]" not in help_text


@pytest.mark.parametrize("name, words, default", [
    ("learning_rate", "Peak learning rate of SFT", "2e-4"),
    ("lora_r", "LoRA rank", "16"),
    ("eval_limit", "Held-out questions evaluated per model", "200"),
    ("quant_types", "llama.cpp quantization types", "Q4_K_M,Q8_0"),
    ("paraphrase", "phrasing is rewritten", "0.0"),
])
def test_help_of_sample_fields(help_text, name, words, default):
    block = _flag_blocks(help_text)[f"--{name}"]
    assert _squash(words) in _squash(block)
    assert _squash(block).endswith(_squash(f"(default: {default})"))
    # the flag sits under its section's group heading
    section = FLAGS[name][0]
    heading = help_text.index(f"\n{section} settings:\n")
    following = [help_text.find(f"\n{s} settings:\n", heading + 1) for s in SECTIONS]
    end = min([i for i in following if i > heading] or [len(help_text)])
    assert heading < help_text.index(f"  --{name} ") < end


def test_help_of_booleans_lists_and_percent_signs(help_text):
    blocks = _flag_blocks(help_text)
    assert blocks["--packing"].startswith("--packing, --no-packing")
    assert _squash(blocks["--packing"]).endswith("(default:false)")
    assert _squash(blocks["--dpo_to_sft"]).endswith("(default:true)")
    assert "Comma-separated" in blocks["--quant_types"]
    assert "~30% more step time" in blocks["--gradient_checkpointing"]  # `%` escaped for argparse
    assert _squash("at 5% a year") in _squash(blocks["--smoke_prompt"])
    assert "(default: unset)" in blocks["--resume_from_checkpoint"]


def test_parse_keeps_values_and_unset_flags_are_none():
    from fintune.config import overrides_from_args

    p = pipeline_parser()
    args = p.parse_args(["--learning_rate", "1e-4", "--quant_types", "Q8_0,Q5_K_M", "--no-packing"])
    assert args.learning_rate == 1e-4
    assert args.quant_types == "Q8_0,Q5_K_M" and args.packing is False
    unset = [name for name in FLAGS if name not in ("learning_rate", "quant_types", "packing")]
    assert all(getattr(args, name) is None for name in unset)
    assert overrides_from_args(args) == {"learning_rate": 1e-4, "quant_types": "Q8_0,Q5_K_M", "packing": False}
    assert all(getattr(p.parse_args([]), name) is None for name in FLAGS)


def test_yaml_then_flags_precedence_is_unchanged():
    from fintune.config import overrides_from_args

    args = pipeline_parser().parse_args(["--learning_rate", "1e-4", "--quant_types", "Q8_0"])
    yaml_values = {"train": {"learning_rate": 3e-4, "max_steps": 7}, "export": {"quant_types": ["Q4_K_M"]},
                   "lora": {"lora_r": 8}}
    cfg = build_config(yaml_values, overrides_from_args(args))
    assert cfg.train.learning_rate == 1e-4  # the flag wins over the YAML
    assert cfg.export.quant_types == ["Q8_0"]
    assert cfg.train.max_steps == 7 and cfg.lora.lora_r == 8  # unset flags leave the YAML's values
    assert cfg.eval.eval_limit == 200 and cfg.data.paraphrase == 0.0  # neither: the dataclass default
    assert build_config().train.learning_rate == field_default("learning_rate")
