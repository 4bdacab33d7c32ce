"""Ollama Modelfile for an exported GGUF, from the chat-template family."""
from __future__ import annotations

from pathlib import Path

from fintune.templates import TemplateFamily


def quote(text: str) -> str:
    """Quote a value for a Modelfile.

    Triple quotes keep newlines readable but have no escape, so a value that
    itself contains three double quotes is written as a one-line double-quoted
    string with backslash escapes instead; it can never close the block early.
    """
    if '"""' not in text:
        return f'"""{text}"""'
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def modelfile_text(family: TemplateFamily, gguf_path: str | Path, system: str | None = None,
           others: list[str | Path] | None = None, think_prefix: bool = False) -> str:
    template = (family.ollama_template_thinking if think_prefix and family.ollama_template_thinking
                else family.ollama_template)
    lines = [f"# Ollama Modelfile for {Path(gguf_path).name} (chat template family: {family.name})",
             "# Create:  ollama create <name> -f Modelfile"]
    for other in others or []:
        lines.append(f"# Other quantization: swap the FROM line for ./{Path(other).name}")
    lines += [f"FROM ./{Path(gguf_path).name}", "", f"TEMPLATE {quote(template)}"]
    if system and family.system_allowed:
        lines.append(f"SYSTEM {quote(system)}")
    lines.append("")
    for stop in family.stops:
        lines.append(f"PARAMETER stop {_one_line(stop)}")
    for key, value in family.params.items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def _one_line(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
