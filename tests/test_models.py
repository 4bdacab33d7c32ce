"""Where base models come from: the embedded SmolLM2 conversion."""


def test_embedded_conversion_parses_each_gguf_once_and_restores_gguf_py(monkeypatch, tmp_path):
    """transformers parses the file for the tokenizer, the config and the weights; while
    the embedded model converts, each file gets one reader (and one tensor-name map)."""
    import gguf

    from fintune.models import _gguf_parsed_once

    made = []

    class Reader:
        def __init__(self, path, mode="r"):
            made.append(path)

    maps = []
    monkeypatch.setattr(gguf, "GGUFReader", Reader)
    monkeypatch.setattr(gguf, "get_tensor_name_map", lambda arch, n: maps.append((arch, n)) or object())
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    with _gguf_parsed_once():
        first = gguf.GGUFReader(a)
        assert gguf.GGUFReader(str(a)) is first and gguf.GGUFReader(b) is not first
        assert gguf.get_tensor_name_map("llama", 30) is gguf.get_tensor_name_map("llama", 30)
    assert made == [a, b] and maps == [("llama", 30)]
    assert gguf.GGUFReader is Reader  # outside the conversion, gguf-py is as it was
    gguf.GGUFReader(a)
    assert len(made) == 3
