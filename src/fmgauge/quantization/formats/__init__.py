"""On-disk formats that other libraries load (GPTQ, ...): writers and independent readers of fmgauge grids."""
