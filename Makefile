# The README's commands. Everything runs in a cached virtualenv made by scripts/venv.sh.
VENV := .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test lint bench peers llama clean
setup:
	@scripts/venv.sh >/dev/null

demo: setup  ## the main job: weak-label studies, real text labelers then PneumoniaMNIST -> runs/demo/report.html
	$(VENV)/bin/fmgauge weak-labels calibrate --config configs/weaklabels/demo-text.yaml \
		--config configs/weaklabels/demo.yaml --out runs/demo

test: setup  ## lint + the fast test suite (2 workers, one test file per worker at a time: module fixtures built once)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

bench: setup  ## slow, honest measurements -> docs/benchmarks.md (never in CI)
	$(PY) benchmarks/bench_students.py
	$(PY) benchmarks/bench_sweep.py

peers:  ## the peers' own venvs, for `fmgauge quantize compare --peers llmcompressor,gptqmodel`
	@scripts/peers-venv.sh llmcompressor
	@scripts/peers-venv.sh gptqmodel

llama:  ## llama.cpp (llama-quantize, llama-imatrix, llama-perplexity + llama-cpp-python) from the PyPI sdist, cached in ~/.cache/fmgauge/llama-cpp, for `quantize eval --engine llama.cpp` / `compare --peers llama.cpp`
	@scripts/llama-build.sh

clean:
	rm -rf runs/demo .pytest_cache
