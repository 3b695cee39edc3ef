"""Activation-sensitivity post-training quantization (``fmgauge quantize``)."""
