"""Typed configuration: defaults, then a YAML file, then command-line flags.

``sections`` holds the dataclasses (one per concern, each field with its help text);
``loading`` reads a profile YAML, which nests fields under their section
(``train: {learning_rate: 2e-4}``), and the flat flags (``--learning_rate``).
"""
from fintune.config.loading import (FLAGS, add_config_flags, build_config, config_fingerprint,
                                    field_default, field_help, format_value, load_yaml, overrides_from_args)
from fintune.config.sections import (ATTENTION_CHOICES, EMBEDDED_BASE, EVAL_MODELS, QWEN_LORA_TARGETS, SECTIONS,
                                     ConfigError, DataConfig, EvalConfig, ExportConfig, LoraConfig, ModelConfig,
                                     PipelineConfig, TrainConfig, setting)

__all__ = ["ATTENTION_CHOICES", "EMBEDDED_BASE", "EVAL_MODELS", "FLAGS", "QWEN_LORA_TARGETS", "SECTIONS",
           "ConfigError", "DataConfig", "EvalConfig", "ExportConfig", "LoraConfig", "ModelConfig", "PipelineConfig",
           "TrainConfig", "add_config_flags", "build_config", "config_fingerprint", "field_default",
           "field_help", "format_value", "load_yaml", "overrides_from_args", "setting"]
