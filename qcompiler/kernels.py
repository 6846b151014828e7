"""Integer kernels of the quantized graph as TE computes (one PrimFunc per layer).

Each PrimFunc carries `qcompiler.op` and `qcompiler.attrs` (JSON) so that the numpy reference
and the reports read the same graph the compiler builds. Schedules (per target) are applied to
these PrimFuncs later; the compute here is the numeric contract and nothing else.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm import te, tirx

from qcompiler.numerics import nibbles
from qcompiler.numerics.qparams import dtype_range
from qcompiler.numerics.requantize import Q31, RequantizeAttrs
from qcompiler.numerics.shapes import conv2d_out_hw, conv2d_transpose_out_hw, pool2d_out_hw


def fixed_point_multiply(x: Any, m0: Any, shift: Any) -> Any:
    """`q_multiply_shift(x, m0, 31, shift)` as int64: `(x * m0 + 2^(30 - shift)) >> (31 - shift)`.

    The TIR side of `qcompiler.numerics.requantize.q_multiply_shift` (the reference's numpy
    form; that module's docstring maps the targets' vector forms): the same arithmetic, exact,
    never wrapping, left un-truncated for the caller's clamp. Written out because TVM 0.27's
    intrinsic legalizer rejects a per-element shift and its `(x << shift) * m0` can overflow
    int64.
    """
    x64 = x.astype("int64")
    s64 = shift.astype("int64") if hasattr(shift, "astype") else tirx.const(shift, "int64")
    m64 = m0.astype("int64") if hasattr(m0, "astype") else tirx.const(m0, "int64")
    total = tirx.const(Q31, "int64") - s64
    return (x64 * m64 + (tirx.const(1, "int64") << (total - 1))) >> total


def clamp_cast(v: Any, zp_y: int, lo: int, hi: int, dtype: str) -> Any:
    """`clamp(v + zp_y, lo, hi)` in int64 (no wrap), then the storage dtype."""
    v = v.astype("int64") + tirx.const(zp_y, "int64")
    return tvm.te.min(tvm.te.max(v, tirx.const(lo, "int64")), tirx.const(hi, "int64")).astype(dtype)


def requantized(v: Any, attrs: dict) -> Any:
    """A kernel's output from its rescaled sum `v`: `clamp(zp_y + v, lo, hi)` as `out_dtype`,
    read from the attributes (`RequantizeAttrs`)."""
    rq = RequantizeAttrs.from_attrs(attrs)
    return clamp_cast(v, rq.zp_y, rq.lo, rq.hi, rq.out_dtype)


def _prim_func(op: str, attrs: dict, tensors: list) -> tirx.PrimFunc:
    func = te.create_prim_func(tensors)
    if nibbles.is_nibbles(attrs):
        sch = tvm.s_tir.Schedule(func)
        unpack_in_pairs(sch, "w_unpack")
        func = sch.mod["main"]
    return func.with_attr({"qcompiler.op": op, "qcompiler.attrs": json.dumps(attrs)})


def weight_operand(shape: tuple, attrs: dict, name: str = "w") -> tuple[te.Tensor, te.Tensor]:
    """(the kernel's weight parameter, the int8 tensor of `shape` its compute reads): one
    placeholder, or with nibble storage (`qcompiler.numerics.nibbles`) the uint8 bytes and an unpack
    stage, `w = (nib ^ 8) - 8` in int32. The stage is a separate block (computed once per call,
    at the kernel's root), so the dot-product schedules still tensorize a plain int8 buffer;
    `unpack_in_pairs` schedules it."""
    if not nibbles.is_nibbles(attrs):
        w = te.placeholder(shape, "int8", name=name)
        return w, w
    packed = te.placeholder((nibbles.packed_size(shape),), "uint8", name=f"{name}_nibbles")
    strides = [int(np.prod(shape[k + 1:], dtype=np.int64)) for k in range(len(shape))]

    def body(*i: Any) -> Any:
        e = sum(ik * s for ik, s in zip(i, strides))  # the element's C-order position
        byte = packed[tirx.floordiv(e, 2)].astype("int32")
        nib = (byte >> (tirx.floormod(e, 2) * 4)) & 15
        return ((nib ^ 8) - 8).astype("int8")

    return packed, te.compute(shape, body, name=f"{name}_unpack")


def unpack_in_pairs(sch: tvm.s_tir.Schedule, block: str) -> None:
    """Loop a `weight_operand` unpack stage over its bytes, two weights an iteration (its loops
    fused, split by 2, the inner one unrolled): LLVM then vectorizes the byte loads and the
    interleaved stores, twice as fast as a loop over weights (0.05 vs 0.11 ns a weight on a
    2.4M-weight tensor, znver4). A thread split measured no faster: it stays serial."""
    fused = sch.fuse(*sch.get_loops(sch.get_sblock(block)))
    _, pair = sch.split(fused, [None, 2])
    sch.unroll(pair)


def _channel_params(w_shape: tuple, attrs: dict, cout: int | None = None) -> tuple:
    """(operands, weights read): the constant operands of a conv/dense kernel, its weights
    (int8, or nibbles: `weight_operand`) and per output channel the int32 bias, Q31 multiplier
    and shift (cout: w_shape[0] unless the layout says otherwise); and the int8 weights."""
    cout = w_shape[0] if cout is None else cout
    w, read = weight_operand(w_shape, attrs)
    return (w, *(te.placeholder((cout,), "int32", name=n) for n in ("bias", "m0", "shift"))), \
        read


def _requantize_channels(acc: te.Tensor, channel_axis: int, params: tuple, attrs: dict
                         ) -> te.Tensor:
    """`clamp(zp_y + qms(acc + bias[c], M0[c], n[c]), lo, hi)` over an accumulator tensor."""
    _, bias, m0, shift = params

    def body(*i: Any) -> Any:
        c = i[channel_axis]
        return requantized(fixed_point_multiply(acc[i] + bias[c], m0[c], shift[c]), attrs)

    return te.compute(acc.shape, body, name="requantize")


def _flat(op: str, attrs: dict, shape: tuple, x_dtype: str, y_dtype: str,
          element: Callable[[Any], Any]) -> tirx.PrimFunc:
    """`y = element(x)` over a tensor walked flat, with no alignment asked of the float side
    (4-byte elements): a caller's float buffer, however aligned, is read or written in
    place by the library (`backend.c_source` stages no copy of it). The flat index's
    unravelled form folds back to it when the buffers are flattened (one loop, vectorized)."""
    from tvm.script import tirx as T

    total = int(np.prod(shape, dtype=np.int64))
    strides = [int(np.prod(shape[k + 1:], dtype=np.int64)) for k in range(len(shape))]
    ax, ay = (4 if d == "float32" else 64 for d in (x_dtype, y_dtype))

    def at(v: Any) -> tuple:
        return tuple(v // s % d if k else v // s
                     for k, (s, d) in enumerate(zip(strides, shape)))

    @T.prim_func(s_tir=True)
    def main(x: T.Buffer(shape, x_dtype, align=ax), y: T.Buffer(shape, y_dtype, align=ay)
             ) -> None:
        T.func_attr({"tirx.noalias": True})
        for i in range(total):
            with T.sblock(op):
                v = T.axis.spatial(total, i)
                y[at(v)] = element(x[at(v)])

    return main.with_attr({"qcompiler.op": op, "qcompiler.attrs": json.dumps(attrs)})


def quantize(shape: tuple, scale: float, zp: int, dtype: str, lo: int, hi: int) -> tirx.PrimFunc:
    """ONNX QuantizeLinear: `clamp(round_half_to_even(x / s) + zp)` in float32."""
    s = tirx.const(scale, "float32")

    def element(x: Any) -> Any:
        # Clamp in float first so the cast to int32 is defined for any finite input.
        r = tvm.te.min(tvm.te.max(tirx.nearbyint(x / s), tirx.const(-2.0**30, "float32")),
                       tirx.const(2.0**30, "float32")).astype("int32")
        return clamp_cast(r, zp, lo, hi, dtype)

    attrs = {"scale": scale, "zero_point": zp, "dtype": dtype, "lo": lo, "hi": hi}
    return _flat("quantize", attrs, shape, "float32", dtype, element)


def dequantize(shape: tuple, dtype: str, scale: float, zp: int) -> tirx.PrimFunc:
    """ONNX DequantizeLinear: `float32(q - zp) * s`."""
    return _flat("dequantize", {"scale": scale, "zero_point": zp}, shape, dtype, "float32",
                 lambda q: (q.astype("int32") - zp).astype("float32")
                 * tirx.const(scale, "float32"))


def conv2d(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
           epilogue: Callable | None = None) -> tirx.PrimFunc:
    """`y = clamp(zp_y + qms(sum((x - zp_x) * w) + bias[c], M0[c], n[c]))`, int32 accumulation.

    attrs: strides, padding (top, left, bottom, right), dilation, groups, zp_x, zp_y, lo, hi,
    out_dtype. Padding uses zp_x, the quantized zero, so padded taps contribute exactly 0.
    `epilogue`: another form of the requantize stage, `(acc, channel_axis, params, attrs) ->
    y` (a schedule's, with the same numbers).
    """
    n, cin, h, w_ = x_shape
    cout, cin_g, kh, kw = w_shape
    sh, sw = attrs["strides"]
    pt, pl, pb, pr = attrs["padding"]
    dh, dw = attrs["dilation"]
    groups = attrs["groups"]
    cout_g = cout // groups
    oh, ow = conv2d_out_hw(x_shape, w_shape, attrs)
    x = te.placeholder(x_shape, x_dtype, name="x")
    params, wt = _channel_params(w_shape, attrs)
    zp_x = attrs["zp_x"]
    xc = te.compute(
        (n, cin, h + pt + pb, w_ + pl + pr),
        lambda b, c, i, j: tirx.if_then_else(
            tirx.all(i >= pt, i < h + pt, j >= pl, j < w_ + pl),
            x[b, c, i - pt, j - pl].astype("int32") - zp_x, tirx.const(0, "int32")),
        name="x_centered")
    acc = _grouped_sum(xc, (n, cout, oh, ow), (cin_g, cout_g, kh, kw), (sh, sw), (dh, dw),
                       lambda o, c, ky, kx: wt[o, c, ky, kx])
    y = (epilogue or _requantize_channels)(acc, 1, params, attrs)
    fused = table_stage(y, attrs)
    return _prim_func("conv2d_lut" if fused else "conv2d", attrs, [x, *params, *(fused or [y])])


def _grouped_sum(xc: te.Tensor, out_shape: tuple, groups_shape: tuple, strides: tuple,
                 dilation: tuple, weight: Any) -> te.Tensor:
    """`acc[b, o, i, j] = sum_{c, ky, kx} xc[b, g(o) cin_g + c, i sh + ky dh, j sw + kx dw]
    * weight(o, c, ky, kx)` over a centered, padded input: the int32 core of both convs."""
    cin_g, cout_g, kh, kw = groups_shape
    (sh, sw), (dh, dw) = strides, dilation
    rc = te.reduce_axis((0, cin_g), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        out_shape,
        lambda b, o, i, j: te.sum(
            xc[b, (o // cout_g) * cin_g + rc, i * sh + ry * dh, j * sw + rx * dw]
            * weight(o, rc, ry, rx).astype("int32"), axis=[rc, ry, rx]),
        name="acc")


def dense(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict) -> tirx.PrimFunc:
    """`y[b, o] = clamp(zp_y + qms(sum_k (x[b,k] - zp_x) * w[o,k] + bias[o], M0[o], n[o]))`."""
    n, k = x_shape
    cout, _ = w_shape
    x = te.placeholder(x_shape, x_dtype, name="x")
    params, wt = _channel_params(w_shape, attrs)
    rk = te.reduce_axis((0, k), name="rk")
    acc = te.compute(
        (n, cout), lambda b, o: te.sum(
            (x[b, rk].astype("int32") - attrs["zp_x"]) * wt[o, rk].astype("int32"), axis=rk),
        name="acc")
    y = _requantize_channels(acc, 1, params, attrs)
    return _prim_func("dense", attrs, [x, *params, y])


def add(shape: tuple, a_dtype: str, b_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """Residual add, both inputs rescaled to the output scale at 2^-k precision, then rounded:

    `y = clamp(zp_y + ((qms(a - zp_a, Ma) + qms(b - zp_b, Mb) + 2^(k-1)) >> k))`,
    where `Ma = s_a / s_y * 2^k` (likewise `Mb`); k is chosen so both terms fit in int32.
    """
    a = te.placeholder(shape, a_dtype, name="a")
    b = te.placeholder(shape, b_dtype, name="b")
    y = te.compute(shape, add_body(a, b, attrs), name="add")
    return _prim_func("add", attrs, [a, b, y])


def add_body(a: te.Tensor, b: te.Tensor, attrs: dict) -> Callable:
    """The add's element function over two tensors of one shape (also fused into a conv's
    epilogue, `schedules.blocked`)."""
    k = attrs["k"]
    rnd = tirx.const((1 << k) >> 1, "int64")

    def body(*i: Any) -> Any:
        ta = fixed_point_multiply(a[i].astype("int32") - attrs["zp_a"], attrs["m0_a"],
                                  attrs["shift_a"])
        tb = fixed_point_multiply(b[i].astype("int32") - attrs["zp_b"], attrs["m0_b"],
                                  attrs["shift_b"])
        return requantized((ta + tb + rnd) >> k, attrs)

    return body


def requantize(shape: tuple, x_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """`y = clamp(zp_y + qms(x - zp_x, M0, n))`: change of qparams (concat inputs, clamps)."""
    x = te.placeholder(shape, x_dtype, name="x")
    rq = RequantizeAttrs.from_attrs(attrs)
    y = te.compute(shape, lambda *i: requantized(
        fixed_point_multiply(x[i].astype("int32") - attrs["zp_x"], rq.m0, rq.shift), attrs),
        name="requantize")
    return _prim_func("requantize", attrs, [x, y])


def max_pool2d(x_shape: tuple, x_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """Max over the window on the integers (monotonic, so the qparams pass through).

    Padding takes the dtype's minimum, which never wins against a real element.
    """
    n, c, h, w = x_shape
    oh, ow = pool2d_out_hw(x_shape[2:], attrs)
    kh, kw = attrs["kernel"]
    sh, sw = attrs["strides"]
    pt, pl, _, _ = attrs["padding"]
    x = te.placeholder(x_shape, x_dtype, name="x")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    lowest = tirx.const(attrs["dtype_min"], x_dtype)

    def tap(b: Any, ch: Any, i: Any, j: Any) -> Any:
        yy, xx = i * sh + ry - pt, j * sw + rx - pl
        return tirx.if_then_else(tirx.all(yy >= 0, yy < h, xx >= 0, xx < w),
                                 x[b, ch, yy, xx], lowest)

    y = te.compute((n, c, oh, ow), lambda b, ch, i, j: te.max(tap(b, ch, i, j), axis=[ry, rx]),
                   name="max_pool")
    return _prim_func("max_pool2d", attrs, [x, y])


def avg_pool2d(x_shape: tuple, x_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """Integer sum of `x - zp_x` over the window, then a fixed-point divide per output position:

    `y[i, j] = clamp(zp_y + qms(sum, M0[i, j], n[i, j]))`, `M[i, j] = s_x / (s_y * count[i, j])`.
    """
    n, c, h, w = x_shape
    oh, ow = pool2d_out_hw(x_shape[2:], attrs)
    kh, kw = attrs["kernel"]
    sh, sw = attrs["strides"]
    pt, pl, _, _ = attrs["padding"]
    x = te.placeholder(x_shape, x_dtype, name="x")
    m0 = te.placeholder((oh, ow), "int32", name="m0")
    shift = te.placeholder((oh, ow), "int32", name="shift")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def tap(b: Any, ch: Any, i: Any, j: Any) -> Any:
        yy, xx = i * sh + ry - pt, j * sw + rx - pl
        return tirx.if_then_else(tirx.all(yy >= 0, yy < h, xx >= 0, xx < w),
                                 x[b, ch, yy, xx].astype("int32") - attrs["zp_x"],
                                 tirx.const(0, "int32"))

    acc = te.compute((n, c, oh, ow), lambda b, ch, i, j: te.sum(tap(b, ch, i, j), axis=[ry, rx]),
                     name="pool_sum")
    y = te.compute((n, c, oh, ow), lambda b, ch, i, j: requantized(
        fixed_point_multiply(acc[b, ch, i, j], m0[i, j], shift[i, j]), attrs), name="avg_pool")
    return _prim_func("avg_pool2d", attrs, [x, m0, shift, y])


def table_entry(table: te.Tensor, x: Any, row: Any = 0) -> Any:
    """`T[row, x - qmin]`: the entry of a table (`numerics.lut.tables`) that byte `x` picks
    (also a stage of a conv fused with its table, `blocked.stages.table_stage`)."""
    return table[row, x.astype("int32") - dtype_range(str(x.dtype))[0]]


def table_stage(y: te.Tensor, attrs: dict) -> list[te.Tensor]:
    """With attribute `lut` (a one-row table's attributes, `numerics.lut.lut_attrs`; a conv
    fused with the table that takes its output): [the table operand, `table[0, y - qmin]`],
    the activation applied to the conv's bytes in its epilogue (no pass of its own over
    memory); else []."""
    if "lut" not in attrs:
        return []
    qmin, qmax = dtype_range(str(y.dtype))
    table = te.placeholder((1, qmax - qmin + 1), attrs["lut"]["out_dtype"], name="table")
    return [table, te.compute(tuple(y.shape), lambda *i: table_entry(table, y[i]), name="lut")]


def lut(shape: tuple, x_dtype: str, table_shape: tuple, attrs: dict) -> tirx.PrimFunc:
    """`y = T[c, x - qmin]`: a gather from a compile-time table (see `qcompiler.numerics.lut`).

    T has one row per channel of `attrs["axis"]`, or a single row shared by every element.
    """
    x = te.placeholder(shape, x_dtype, name="x")
    table = te.placeholder(table_shape, attrs["out_dtype"], name="table")
    axis = attrs["axis"]

    def body(*i: Any) -> Any:
        return table_entry(table, x[i], i[axis] if table_shape[0] > 1 else 0)

    y = te.compute(shape, body, name="lut")
    return _prim_func("lut", attrs, [x, table, y])


def _broadcast(t: te.Tensor, out_index: tuple) -> Any:
    """`t` read at an output index under numpy broadcasting (right-aligned, size-1 axes)."""
    skip = len(out_index) - len(t.shape)
    return t(*[0 if int(d) == 1 else out_index[skip + k] for k, d in enumerate(t.shape)])


def mul(shape: tuple, a_shape: tuple, a_dtype: str, b_shape: tuple, b_dtype: str,
        m_shape: tuple, attrs: dict, requant: Callable | None = None) -> tirx.PrimFunc:
    """`y = clamp(zp_y + qms((a - zp_a) * (b - zp_b), M0, n))`, `M = s_a s_b / s_y`, broadcasting.

    b is a tensor, or an int8 constant (zp_b = 0) with its multiplier per channel: M0 and n
    have their own shape `m_shape`, broadcast like a and b. The product is exact in int32
    (|a - zp_a|, |b - zp_b| <= 255 for 8-bit operands, so |product| <= 65025). `requant`:
    another form of `clamp(zp_y + qms(product, M0, n))` (a schedule's cheaper one).
    """
    a = te.placeholder(a_shape, a_dtype, name="a")
    b = te.placeholder(b_shape, b_dtype, name="b")
    m0 = te.placeholder(m_shape, "int32", name="m0")
    shift = te.placeholder(m_shape, "int32", name="shift")

    def body(*i: Any) -> Any:
        prod = (_broadcast(a, i).astype("int32") - attrs["zp_a"]) \
            * (_broadcast(b, i).astype("int32") - attrs["zp_b"])
        if requant is not None:
            return requant(prod, _broadcast(m0, i), _broadcast(shift, i))
        return requantized(fixed_point_multiply(prod, _broadcast(m0, i), _broadcast(shift, i)),
                           attrs)

    y = te.compute(shape, body, name="mul")
    return _prim_func("mul", attrs, [a, b, m0, shift, y])


def reduce_mean(x_shape: tuple, x_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """Integer sum of `x - zp_x` over `axes`, then one fixed-point divide by the count:

    `y = clamp(zp_y + qms(sum, M0, n))`, `M = s_x / (s_y * count)` (one multiplier: every
    output sums the same number of elements; ReduceSum's is `s_x / s_y`). attrs: axes,
    keepdims, zp_x, zp_y, m0, shift, lo, hi, out_dtype.
    """
    axes, keep = attrs["axes"], attrs["keepdims"]
    x = te.placeholder(x_shape, x_dtype, name="x")
    red = {a: te.reduce_axis((0, x_shape[a]), name=f"r{a}") for a in axes}
    kept = [i for i in range(len(x_shape)) if i not in red]
    out_shape = [1 if i in red else d for i, d in enumerate(x_shape)] if keep else \
        [x_shape[i] for i in kept]

    def source(o: tuple) -> list:
        by_axis = dict(zip(kept, [o[i] for i in kept] if keep else o))
        return [red[i] if i in red else by_axis[i] for i in range(len(x_shape))]

    acc = te.compute(out_shape, lambda *o: te.sum(
        x[tuple(source(o))].astype("int32") - attrs["zp_x"], axis=list(red.values())),
        name="mean_sum")
    rq = RequantizeAttrs.from_attrs(attrs)
    y = te.compute(out_shape, lambda *o: requantized(
        fixed_point_multiply(acc[o], rq.m0, rq.shift), attrs), name="reduce_mean")
    return _prim_func("reduce_mean", attrs, [x, y])


def resize_nearest(x_shape: tuple, x_dtype: str, out_hw: tuple, attrs: dict) -> tirx.PrimFunc:
    """`y[b, c, i, j] = x[b, c, rows[i], cols[j]]`: a gather by index tables computed at
    compile time (the coordinate mode's rounding is all in the tables); qparams pass through.
    A fifth axis of `x_shape` (a blocked tensor's channel lanes) is carried along."""
    n, c, _, _, *lanes = x_shape
    x = te.placeholder(x_shape, x_dtype, name="x")
    rows = te.placeholder((out_hw[0],), "int32", name="rows")
    cols = te.placeholder((out_hw[1],), "int32", name="cols")
    y = te.compute((n, c, *out_hw, *lanes), lambda b, ch, i, j, *li: x[b, ch, rows[i],
                                                                       cols[j], *li],
                   name="resize_nearest")
    return _prim_func("resize_nearest", attrs, [x, rows, cols, y])


def resize_bilinear(x_shape: tuple, x_dtype: str, out_hw: tuple, attrs: dict
                    ) -> tirx.PrimFunc:
    """Bilinear interpolation in integers with weights of `bits` fractional bits per axis.

    rows[:, i] = (top, bottom, weight of bottom), likewise cols; with `u = x - zp_x` and
    `W = 2^bits`: `acc = (W - wy)((W - wx) u00 + wx u01) + wy((W - wx) u10 + wx u11)`, then
    `y = clamp(zp_y + qms(acc, M0, n))`, `M = s_x / (s_y 2^(2 bits))`: one rounding at the end.
    A fifth axis of `x_shape` (a blocked tensor's channel lanes) is carried along.
    """
    n, c, _, _, *lanes = x_shape
    one = 1 << attrs["bits"]
    rq = RequantizeAttrs.from_attrs(attrs)
    x = te.placeholder(x_shape, x_dtype, name="x")
    rows = te.placeholder((3, out_hw[0]), "int32", name="rows")
    cols = te.placeholder((3, out_hw[1]), "int32", name="cols")

    def u(b: Any, ch: Any, i: Any, j: Any, li: tuple) -> Any:
        return x[b, ch, i, j, *li].astype("int32") - attrs["zp_x"]

    def body(b: Any, ch: Any, i: Any, j: Any, *li: Any) -> Any:
        wy, wx = rows[2, i], cols[2, j]

        def line(r: Any) -> Any:
            return (one - wx) * u(b, ch, r, cols[0, j], li) + wx * u(b, ch, r, cols[1, j], li)

        acc = (one - wy) * line(rows[0, i]) + wy * line(rows[1, i])
        return requantized(fixed_point_multiply(acc, rq.m0, rq.shift), attrs)

    y = te.compute((n, c, *out_hw, *lanes), body, name="resize_bilinear")
    return _prim_func("resize_bilinear", attrs, [x, rows, cols, y])


def interleave_phases(y_shape: tuple, dtype: str, attrs: dict) -> tirx.PrimFunc:
    """A strided transposed conv's output from the conv of its phases
    (`numerics.transpose_phases`): `out[b, o, i, j] = y[b, ph c + o, (i + t) / sh, (j + l) / sw]`
    with `ph = ((i + t) % sh) sw + (j + l) % sw` and `c` the output's channel axis; integers
    moved, not changed. attrs: strides, offset (t, l), out_hw. A fifth axis of `y_shape` (a
    blocked tensor's lanes; the output's channels whole blocks) is carried along."""
    n, c, _, _, *lanes = y_shape
    (sh, sw), (t, left) = attrs["strides"], attrs["offset"]
    cout = c // (sh * sw)
    y = te.placeholder(y_shape, dtype, name="y")

    def moved(b: Any, o: Any, i: Any, j: Any, *li: Any) -> Any:
        r, q = i + t, j + left
        return y[b, ((r % sh) * sw + q % sw) * cout + o, r // sh, q // sw, *li]

    out = te.compute((n, cout, *attrs["out_hw"], *lanes), moved, name="interleave_phases")
    return _prim_func("interleave_phases", attrs, [y, out])


def conv2d_transpose(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict
                     ) -> tirx.PrimFunc:
    """Transposed convolution as a stride-1 convolution of the zero-inserted input with the
    flipped kernel; int32 accumulation and the conv2d requantize epilogue.

    Weights stay in ONNX layout (Cin, Cout/groups, kh, kw); bias/M0/shift are per output
    channel. attrs: strides, padding (t, l, b, r), output_padding, dilation, groups, zp_x, zp_y,
    lo, hi, out_dtype. Input position q = p - (d (k - 1) - pad) is real where q / stride is an
    integer inside the input; everything else (inserted zeros, borders) contributes 0.
    """
    n, cin, h, w_ = x_shape
    _, cout_g, kh, kw = w_shape
    groups = attrs["groups"]
    cin_g, cout = cin // groups, cout_g * groups
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilation"]
    pt, pl, pb, pr = attrs["padding"]
    oh, ow = conv2d_transpose_out_hw(x_shape, w_shape, attrs)
    off_h, off_w = dh * (kh - 1) - pt, dw * (kw - 1) - pl
    x = te.placeholder(x_shape, x_dtype, name="x")
    params, wt = _channel_params(w_shape, attrs, cout)

    def inserted(b: Any, c: Any, p: Any, q: Any) -> Any:
        yy, xx = p - off_h, q - off_w
        real = tirx.all(yy >= 0, yy < h * sh, yy % sh == 0, xx >= 0, xx < w_ * sw, xx % sw == 0)
        return tirx.if_then_else(real, x[b, c, yy // sh, xx // sw].astype("int32")
                                 - attrs["zp_x"], tirx.const(0, "int32"))

    xd = te.compute((n, cin, oh + dh * (kh - 1), ow + dw * (kw - 1)), inserted,
                    name="x_inserted")
    acc = _grouped_sum(xd, (n, cout, oh, ow), (cin_g, cout_g, kh, kw), (1, 1), (dh, dw),
                       lambda o, c, ky, kx: wt[(o // cout_g) * cin_g + c, o % cout_g,
                                               kh - 1 - ky, kw - 1 - kx])
    y = _requantize_channels(acc, 1, params, attrs)
    return _prim_func("conv2d_transpose", attrs, [x, *params, y])


