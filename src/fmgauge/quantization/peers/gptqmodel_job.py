"""Run GPTQModel's GPTQ on a model with given calibration token ids and save its GPTQ checkpoint.

Runs in GPTQModel's own interpreter (``scripts/peers-venv.sh gptqmodel``), so it imports nothing from fmgauge; the
job file has the keys of :mod:`.llmcompressor_job` (``method`` must be ``gptq``)::

    python gptqmodel_job.py JOB.json

Settings follow fmgauge's GPTQ: damping ``percdamp`` (GPTQModel's default is 0.05; fmgauge and the reference use
0.01), act-order only when asked (``desc_act``), GPTQModel's "act group aware" reordering off, true-sequential
calibration (its default, like fmgauge's block-by-block GPTQ). Writes ``out_dir`` (``quant_method: gptq``) and
``out_dir/peer_run.json`` (wall / CPU seconds of ``quantize``, peak RSS MB, versions).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def main(path: str) -> None:
    job = json.loads(Path(path).read_text())
    if job["method"] != "gptq":
        raise SystemExit(f"gptqmodel_job: method {job['method']!r} is not run here (gptq only)")
    threads = int(job.get("threads") or 1)
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(threads, 2)))  # its CPU pool wants 2 loader workers
    import numpy as np
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig

    torch.set_num_threads(threads)
    ids = np.load(job["calib"])
    cfg = QuantizeConfig(bits=job["bits"], group_size=job["group_size"], sym=job["sym"], desc_act=job["actorder"],
                         damp_percent=job["percdamp"], act_group_aware=False)
    model = GPTQModel.load(job["model_dir"], cfg, device="cpu")
    data = [{"input_ids": torch.tensor(r, dtype=torch.long).unsqueeze(0),
             "attention_mask": torch.ones(1, len(r), dtype=torch.long)} for r in ids]
    t0, c0 = time.perf_counter(), time.process_time()
    model.quantize(data, batch_size=1)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = Path(job["out_dir"])
    model.save(str(out))

    import gptqmodel
    import transformers

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    (out / "peer_run.json").write_text(json.dumps({
        "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "threads": torch.get_num_threads(),
        "calib_tokens": int(ids.size), "format": "gptq",
        "versions": {"gptqmodel": gptqmodel.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__}}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: gptqmodel_job.py JOB.json")
    main(sys.argv[1])
