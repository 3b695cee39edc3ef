"""Export formats for quantized models (one module per on-disk format)."""
