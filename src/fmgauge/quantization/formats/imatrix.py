"""fmgauge's per-input-channel statistics as llama.cpp importance-matrix files, so ``llama-quantize --imatrix``
quantizes with them.

An importance matrix gives, for every weight tensor (by its GGUF name, e.g. ``blk.3.ffn_down.weight``), one
non-negative weight per input column; ``llama-quantize`` weights each column's squared rounding error by it when it
chooses block scales (and, for the K-quants, mins). ``llama-imatrix`` records ``E[x_j²]`` of the tensor's input over
its calibration text — the activation second moment AWQ reads (fmgauge: ``LayerStats.sq``). fmgauge can instead
write the gradient-weighted sensitivity ``S_j = E[‖g‖² x_j²]`` of Xu (2026) (``LayerStats.fisher``): the expected
loss change of perturbing column j, the quantity the first-order expansion says the quantizer should weight.

Two on-disk layouts, both read by llama.cpp's ``common_imatrix_load`` (tools/imatrix, common/imatrix-loader):

- GGUF (``*.gguf``, what ``llama-imatrix`` writes by default): ``general.type = imatrix``, ``imatrix.datasets``
  (string array), ``imatrix.chunk_count`` / ``imatrix.chunk_size`` (uint32); per tensor ``<name>.in_sum2`` F32
  (ne = (d_in, 1)) holding Σ over tokens and ``<name>.counts`` F32 (ne = (1, 1)) holding the token count. The
  loader divides the sums by the count.
- legacy ``.dat``: int32 n_entries; per entry int32 name length, the name, int32 ncall, int32 nval, nval float32
  (the mean times ncall); then int32 chunk count, int32 length and the dataset name. The loader divides by ncall.

Either way llama-quantize sees the per-column means this module was given.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from fmgauge.core.validation import FmgaugeError

METRICS = {"act2": "sq", "fisher": "fisher"}  # imatrix kind -> LayerStats field


def gguf_names(hf_names: list[str], n_layers: int) -> dict[str, str]:
    """HF Linear names (``model.layers.3.mlp.down_proj``) -> llama.cpp tensor names (``blk.3.ffn_down.weight``)."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    out = {}
    for n in hf_names:
        mapped = names.get_name(n)
        if mapped is None:
            raise FmgaugeError(f"imatrix: layer {n!r} has no llama.cpp tensor name for arch llama.")
        out[n] = f"{mapped}.weight"
    return out


def entries_from_stats(stats, metric: str, n_layers: int) -> dict[str, np.ndarray]:  # noqa: ANN001  (CalibStats)
    """Per-column means (d_in,) float32 by GGUF tensor name from a calibration capture: ``act2`` = E[x²] (what
    llama-imatrix measures), ``fisher`` = S_j (needs a capture with gradients)."""
    if metric not in METRICS:
        raise FmgaugeError(f"imatrix metric must be one of {', '.join(METRICS)}, got {metric!r}.")
    field = METRICS[metric]
    names = gguf_names(list(stats.layers), n_layers)
    out = {}
    for n, st in stats.layers.items():
        v = getattr(st, field)
        if v is None:
            raise FmgaugeError(f"imatrix {metric}: the capture has no {field!r} for {n} (capture with "
                               f"gradients=True for fisher).")
        out[names[n]] = v.detach().double().cpu().numpy()
    return out


def write_imatrix(path: str | Path, means: dict[str, np.ndarray], *, n_tokens: int, chunk_size: int,
                  dataset: str = "fmgauge calibration") -> Path:
    """Write per-column means (name -> (d_in,) non-negative) as an importance matrix at ``path``: GGUF when it ends
    in ``.gguf``, llama.cpp's legacy layout otherwise. ``n_tokens`` is the calibration token count (the GGUF
    ``counts``) and ``chunk_size`` the tokens per chunk (``chunk_count = ceil(n_tokens / chunk_size)``)."""
    if not means:
        raise FmgaugeError("imatrix: nothing to write (no entries).")
    if n_tokens < 1 or chunk_size < 1:
        raise FmgaugeError(f"imatrix: n_tokens and chunk_size must be positive, got {n_tokens} and {chunk_size}.")
    for name, v in means.items():
        v = np.asarray(v)
        if v.ndim != 1 or not np.isfinite(v).all() or (v < 0).any():
            raise FmgaugeError(f"imatrix: entry {name!r} must be a finite non-negative vector, got shape {v.shape}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = -(-n_tokens // chunk_size)
    names = sorted(means)
    if path.suffix == ".gguf":
        import gguf

        w = gguf.GGUFWriter(path, "imatrix")
        w.kv_data[0].pop("general.architecture", None)  # llama-imatrix writes no architecture
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", [dataset])
        w.add_uint32("imatrix.chunk_count", chunks)
        w.add_uint32("imatrix.chunk_size", chunk_size)
        for name in names:
            sums = (np.asarray(means[name], dtype=np.float64) * n_tokens).astype(np.float32)
            w.add_tensor(f"{name}.in_sum2", sums.reshape(1, -1))
            w.add_tensor(f"{name}.counts", np.array([[float(n_tokens)]], dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=False)
        w.close()
        return path
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(names)))
        for name in names:
            raw = name.encode()
            vals = (np.asarray(means[name], dtype=np.float64) * chunks).astype("<f4")
            f.write(struct.pack("<i", len(raw)) + raw + struct.pack("<ii", chunks, len(vals)) + vals.tobytes())
        ds = dataset.encode()
        f.write(struct.pack("<i", chunks) + struct.pack("<i", len(ds)) + ds)
    return path


def read_imatrix(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """The per-column means llama-quantize would use (name -> (d_in,) float32) and the file's metadata, read the way
    llama.cpp reads either layout (sums / counts for GGUF, values / ncall for legacy)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] == b"GGUF":
        import gguf

        r = gguf.GGUFReader(path)
        sums, counts = {}, {}
        for t in r.tensors:
            if t.name.endswith(".in_sum2"):
                sums[t.name[: -len(".in_sum2")]] = np.array(t.data, dtype=np.float32).reshape(-1)
            elif t.name.endswith(".counts"):
                counts[t.name[: -len(".counts")]] = float(np.array(t.data).reshape(-1)[0])
        if set(sums) != set(counts):
            raise FmgaugeError(f"{path}: mismatched sums and counts for {sorted(set(sums) ^ set(counts))[:3]}.")
        meta = {k: r.fields[k].contents() for k in ("general.type", "imatrix.datasets", "imatrix.chunk_count",
                                                     "imatrix.chunk_size") if k in r.fields}
        return {n: (s / counts[n] if counts[n] > 0 else np.ones_like(s)).astype(np.float32)
                for n, s in sums.items()}, {"layout": "gguf", **meta}
    out, off = {}, 4
    (n,) = struct.unpack_from("<i", data, 0)
    for _ in range(n):
        (ln,) = struct.unpack_from("<i", data, off)
        name = data[off + 4: off + 4 + ln].decode()
        off += 4 + ln
        ncall, nval = struct.unpack_from("<ii", data, off)
        off += 8
        vals = np.frombuffer(data, dtype="<f4", count=nval, offset=off).astype(np.float32)
        off += 4 * nval
        out[name] = vals / ncall if ncall > 0 else vals
    meta: dict = {"layout": "legacy"}
    if off < len(data):
        chunks, ln = struct.unpack_from("<ii", data, off)
        meta.update(chunk_count=chunks, dataset=data[off + 8: off + 8 + ln].decode())
    return out, meta


__all__ = ["METRICS", "entries_from_stats", "gguf_names", "read_imatrix", "write_imatrix"]
