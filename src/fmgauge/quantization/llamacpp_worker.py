"""Score a GGUF file with llama.cpp on given token ids: the per-window NLLs of ``quantize eval --engine llama.cpp``.

Runs in the interpreter ``make llama`` builds (numpy + llama-cpp-python over the llama.cpp libraries compiled from
the sdist), so it imports nothing from fmgauge: ``python llamacpp_worker.py job.json``. The job holds the model
path, an ``.npy`` of the 1-D token stream, the windows ``[begin, end, n_target]`` (fmgauge's protocol, computed by
fmgauge), ``n_ctx`` and ``threads``. Each window's ids are evaluated as they are (no BOS added, no re-tokenization),
with logits for every position; the NLL of the last ``n_target`` tokens is computed in float64 from those logits.
Writes ``{"window_nll": [...], "n_tokens", "seconds", "cpu_seconds", "peak_rss_mb", "llama_cpp"}`` to the job's
``out`` path and a progress line to stderr every 30 s.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _log_softmax_nll(logits, targets):  # noqa: ANN001, ANN202  (numpy arrays: (n, V) float32, (n,) int)
    import numpy as np

    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return lse - x[np.arange(len(targets)), targets]


def main(job_path: str) -> None:
    import llama_cpp
    import numpy as np

    with open(job_path) as f:
        job = json.load(f)
    ids = np.load(job["ids"])
    t0, c0 = time.perf_counter(), time.process_time()
    llm = llama_cpp.Llama(model_path=job["model"], n_ctx=job["n_ctx"], n_batch=job["n_ctx"], n_ubatch=job["n_ctx"],
                          logits_all=True, n_threads=job["threads"], n_threads_batch=job["threads"], verbose=False)
    out, n_tok, last = [], 0, time.perf_counter()
    windows = job["windows"]
    for i, (begin, end, n_target) in enumerate(windows):
        toks = [int(t) for t in ids[begin:end]]
        llm.reset()
        llm.eval(toks)
        logits = np.asarray(llm.scores[: len(toks)])  # (T, V): position p predicts token p + 1
        pred = logits[len(toks) - 1 - n_target: len(toks) - 1]
        nll = _log_softmax_nll(pred, np.asarray(toks[len(toks) - n_target:]))
        out.append(float(nll.mean()))
        n_tok += int(n_target)
        now = time.perf_counter()
        if now - last > 30 or i + 1 == len(windows):
            rate = (i + 1) / (now - t0)
            print(f"llama.cpp perplexity: window {i + 1}/{len(windows)} | {rate:.2f} window/s | "
                  f"ppl so far {float(np.exp(np.average(out, weights=None))):.3f}", file=sys.stderr, flush=True)
            last = now
    res = {"window_nll": out, "n_tokens": n_tok, "seconds": time.perf_counter() - t0,
           "cpu_seconds": time.process_time() - c0,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "llama_cpp": getattr(llama_cpp, "__version__", "?")}
    with open(job["out"], "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main(sys.argv[1])
