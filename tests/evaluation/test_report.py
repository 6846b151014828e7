"""`qcompile --report`: the HTML table, its PNG plot, and SQNR figures that mean something."""
from __future__ import annotations

import html
import json
import os
import re

import numpy as np
from conftest import BUNDLED_CALIB, BUNDLED_MODEL, make_model, save_calib, save_model
from onnx import helper

from qcompiler.cli import main
from qcompiler.graph_meta import layer_label
from qcompiler.numerics.observers import RANGE_OBSERVERS


def test_report_renders_table_and_plot(tmp_path, capsys):
    out, report = tmp_path / "out", tmp_path / "rep" / "report.html"
    assert main([str(BUNDLED_MODEL), "--calib", str(BUNDLED_CALIB), "-o", str(out),
                 "--report", str(report), "--calib-limit", "16", "--quiet"]) == 0
    assert "report:" in capsys.readouterr().out
    text = report.read_text()
    layers = json.loads((out / "model.json").read_text())["layers"]
    rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td><td>([^<]*)</td>"
                      r"<td class='(\w+)'>\w+</td><td>([^<]*)</td><td>([^<]*)</td>"
                      r"<td>([^<]*)</td><td>([^<]*)</td></tr>", text)
    assert len(rows) == len(layers) > 5
    for (idx, name, op, status, scale, zp, sqnr, observer), layer in zip(rows, layers):
        assert observer == ("percentile" if layer.get("tensor") else "-"), (name, observer)
        assert (name, op, status) == (html.unescape(" + ".join([layer_label(layer),
                                                                *layer["fused"]])),
                                      layer["op"], layer["status"])
        assert float(scale) > 0 and int(zp) == layer["zero_point"]
        # Every integer layer of the trained model tracks its float value closely; a wrong
        # scale, zero point or tensor mapping would give a few dB at best.
        assert sqnr == "exact" or float(sqnr) > 15.0, (name, op, sqnr)
    png = report.with_name("report_sqnr.png")
    assert f'<img src="{png.name}"' in text
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 600 and height >= 300
    assert not list(report.parent.glob(".*"))  # no temporary files left behind
    umask = os.umask(0)
    os.umask(umask)
    for f in (report, png, out / "model.json", out / "libfashion_cnn.a"):  # as `open` makes them
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


def test_report_names_the_observer_auto_chose_per_layer(tmp_path, rng):
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
                        helper.make_node("Relu", ["c"], ["r"]),
                        helper.make_node("Conv", ["r", "w2"], ["y"])],
                       {"x": (1, 2, 6, 6)}, {"y": None},
                       {"w": w, "w2": rng.standard_normal((3, 4, 1, 1))})
    calib = rng.standard_normal((8, 2, 6, 6)).astype(np.float32)
    calib[0, 0, 0, 0] = 40.0  # an outlier the next layer sees
    out, report = tmp_path / "out", tmp_path / "report.html"
    assert main([str(save_model(model, tmp_path)), "--calib",
                 str(save_calib({"x": calib}, tmp_path)), "-o", str(out), "--observer",
                 "auto", "--report", str(report), "--quiet"]) == 0
    chosen = re.findall(r"<td>(\w+) \(next layer ([\d.]+|exact) dB\)</td></tr>",
                        report.read_text())
    assert len(chosen) == 2 and all(kind in RANGE_OBSERVERS for kind, _ in chosen), chosen
