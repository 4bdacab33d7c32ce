"""fintune: fine-tune an open reasoning model into a finance specialist and ship it as GGUF."""
__version__ = "0.1.0"
