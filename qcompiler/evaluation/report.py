"""`qcompile --report OUT/report.html`: where a person looks for the layer that hurts.

Per layer: the op, integer or float, its output scale and zero point, and the SQNR of its
output, float graph vs dequantized integer graph (the reference), over calibration inputs:
`10 log10(sum f^2 / sum (f - s (q - zp))^2)` dB. The errors compound, so the SQNR of a layer
includes everything before it; a sudden drop marks the layer to look at.
"""
from __future__ import annotations

import html
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from qcompiler.graph_meta import graph_meta, layer_label
from qcompiler.numerics.calibrate import probe_module
from qcompiler.numerics.observers import ObserverChoice
from qcompiler.numerics.qparams import dtype_range
from qcompiler.numerics.sqnr import sqnr_db
from qcompiler.pipeline import Compiled
from qcompiler.reference import Reference
from qcompiler.reference import quantize as quantize_ref
from qcompiler.targets.x86 import x86_target


def layer_sqnr(compiled: Compiled, calib: dict[str, np.ndarray], limit: int = 8
               ) -> list[dict]:
    """The summary's layers, each with `sqnr_db` over the first `limit` calibration samples."""
    meta = graph_meta(compiled.quantized)
    layers = [dict(x) for x in meta["layers"]]
    host = tvm.target.Target(x86_target().tvm_target)
    probe, _ = probe_module(compiled.float_mod)
    vm = relax.VirtualMachine(tvm.compile(probe, host), tvm.cpu())
    ref = Reference(compiled.quantized, host)
    batch = compiled.inputs[0].shape[0]
    n = min(limit, next(iter(calib.values())).shape[0])
    n -= n % batch
    signal = np.zeros(len(layers))
    noise = np.zeros(len(layers))
    for start in range(0, max(n, batch), batch):
        feeds = [calib[i.name][start:start + batch] for i in compiled.inputs]
        floats = [r.numpy() for r in vm["main"](*[tvm.runtime.tensor(x) for x in feeds])]
        q_in = [quantize_ref(x, {**qp.to_json(), **dict(zip(("lo", "hi"),
                                                             dtype_range(qp.dtype)))})
                for x, qp in zip(feeds, compiled.in_qparams)]
        ints = ref.run_all(*q_in)
        for k, layer in enumerate(layers):
            q = ints.get(layer.get("tensor", ""))
            if q is None or layer.get("index", -1) < 0:
                continue
            f = floats[layer["index"]].astype(np.float64)
            deq = (q.astype(np.float64) - layer["zero_point"]) * layer["scale"]
            signal[k] += float(np.sum(f * f))
            noise[k] += float(np.sum((f - deq) ** 2))
    for k, layer in enumerate(layers):
        layer["sqnr_db"] = sqnr_db(signal[k], noise[k]) if layer.get("tensor") else None
        if 0 <= layer.get("index", -1) < len(compiled.observers):  # which observer, and why
            layer["observer"] = compiled.observers[layer["index"]]
    return layers


def _plot(layers: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [dict(x, n=i) for i, x in enumerate(layers) if x.get("sqnr_db") is not None]
    vals = [min(x["sqnr_db"], 100.0) if x["sqnr_db"] != -math.inf else -10.0 for x in shown]
    colors = ["tab:blue" if x["status"] == "integer" else "tab:orange" for x in shown]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(shown)), 3.5), dpi=100)
    ax.bar(range(len(shown)), vals, color=colors)
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([f"#{x['n']} {x['op']}" for x in shown], rotation=90, fontsize=6)
    ax.set_ylabel("SQNR float vs int8 (dB)")
    ax.set_title("Per-layer output SQNR (blue: integer, orange: float fallback)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _fmt_db(v: float | None) -> str:
    if v is None:
        return "-"
    return "exact" if v == math.inf else f"{v:.1f}"


def _layer_cell(layer: dict) -> str:
    """Its ONNX node as Netron shows it, then ` + ` the nodes fused into it."""
    return html.escape(" + ".join([layer_label(layer), *layer.get("fused", [])]))


def _fmt_observer(choice: ObserverChoice | None) -> str:
    """`entropy`, or under `--observer auto` `entropy (next layer 31.2 dB)`: the consumers'
    SQNR that chose it (qcompiler.numerics.observer_choice)."""
    if choice is None:
        return "-"
    if choice.sqnr_db is None:
        return choice.observer
    return f"{choice.observer} (next layer {_fmt_db(choice.sqnr_db)} dB)"


def _publish(tmp: str, path: Path) -> None:
    """Rename a finished temporary file into place with the permissions a plain `open` would
    give it (mkstemp makes it 0600: a report nobody else could read)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    _publish(tmp, path)


def write_report(path: Path, layers: list[dict], title: str) -> None:
    """OUT/report.html plus its plot, `<name>_sqnr.png`, side by side (written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_name(f"{path.stem}_sqnr.png")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{png.name}.", suffix=".png")
    os.close(fd)
    _plot(layers, Path(tmp))
    _publish(tmp, png)
    rows = "\n".join(
        f"<tr><td>{i}</td><td>{_layer_cell(x)}</td><td>{html.escape(x['op'])}</td>"
        f"<td class='{x['status']}'>{x['status']}</td><td>{x.get('scale', 0):.6g}</td>"
        f"<td>{x.get('zero_point', 0)}</td><td>{_fmt_db(x.get('sqnr_db'))}</td>"
        f"<td>{_fmt_observer(x.get('observer'))}</td></tr>"
        for i, x in enumerate(layers))
    n_int = sum(x["status"] == "integer" for x in layers)
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>qcompiler report: {html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;text-align:right}}
td:nth-child(2),td:nth-child(3){{text-align:left}} .float{{color:#c60}}</style></head>
<body><h1>qcompiler report: {html.escape(title)}</h1>
<p>{n_int} of {len(layers)} layers integer. SQNR: float graph vs dequantized integer graph
(the reference) on calibration inputs; errors accumulate from the input on.</p>
<img src="{html.escape(png.name)}" alt="SQNR by layer">
<table id="layers"><thead><tr><th>#</th><th>layer</th><th>op</th><th>status</th>
<th>scale</th><th>zero point</th><th>SQNR (dB)</th><th>observer</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
    _atomic_write(path, doc.encode())
