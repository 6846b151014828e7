"""The oracle: a numpy interpreter of the quantized graph (`main_int` of a quantized module).

It reads the same graph the compiler builds (each kernel's `qcompiler.op` and attributes, and
its constant arguments) and applies the contract formulas from shared/DESIGN.md with nothing
else. Integer dot products use float64 matrix products, exact while |sum| < 2^53 (a uint8 x
int8 sum needs 2^37 terms to get there); results are reduced to int32 exactly as the kernels'
int32 arithmetic wraps. Float-fallback ops (no integer kernel by design) run the same TVM op,
compiled for the same target, on the reference's own dequantized values.
"""
from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import tvm
from numpy.lib.stride_tricks import sliding_window_view
from tvm import relax

from qcompiler.numerics import transpose_phases
from qcompiler.numerics.lut import tables
from qcompiler.numerics.qparams import dtype_range
from qcompiler.numerics.requantize import RequantizeAttrs, q_multiply_shift
from qcompiler.numerics.weight_layout import canonical, unfold_bias
from qcompiler.relax_access import (
    bindings,
    const_array,
    int_list,
    is_const,
    op_name,
    output_exprs,
    shape_of,
)


def _requant(acc: np.ndarray, m0: np.ndarray | int, shift: np.ndarray | int,
             a: dict) -> np.ndarray:
    """`clamp(zp_y + qms(acc, m0, shift), lo, hi)`, `acc` wrapped to int32 as the kernels'
    int32 accumulators wrap."""
    y = q_multiply_shift(acc.astype(np.int64).astype(np.int32), m0, shift)
    return RequantizeAttrs.from_attrs(a).clamp(y)


def _requant_one(acc: np.ndarray, a: dict) -> np.ndarray:
    """`_requant` by the kernel's one multiplier (`m0`, `shift` attributes)."""
    rq = RequantizeAttrs.from_attrs(a)
    return _requant(acc, rq.m0, rq.shift, a)


def _canonical(w: np.ndarray, bias: np.ndarray, a: dict) -> tuple[np.ndarray, np.ndarray]:
    """A kernel's weights (nibbles, packed) and a scheduled kernel's folded bias, read back
    (exactly)."""
    w = canonical(w, a)
    folded = "packed_lanes" in a or "depthwise_lanes" in a
    return w, unfold_bias(w, bias, a["zp_x"]) if folded else bias


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray, m0: np.ndarray, shift: np.ndarray,
           a: dict) -> np.ndarray:
    w, bias = _canonical(w, bias, a)
    sh, sw = a["strides"]
    pt, pl, pb, pr = a["padding"]
    dh, dw = a["dilation"]
    groups = a["groups"]
    cout, cin_g, kh, kw = w.shape
    xc = np.pad(x.astype(np.float64) - a["zp_x"], ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    win = sliding_window_view(xc, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, OH, OW, kh, kw)
    cout_g = cout // groups
    outs = []
    for g in range(groups):
        cols = win[:, g * cin_g:(g + 1) * cin_g]
        wg = w[g * cout_g:(g + 1) * cout_g].astype(np.float64)
        outs.append(np.tensordot(cols, wg, axes=([1, 4, 5], [1, 2, 3])))  # (N, OH, OW, cout_g)
    acc = np.concatenate(outs, axis=3).transpose(0, 3, 1, 2).astype(np.int64)
    acc = acc + bias.astype(np.int64).reshape(1, -1, 1, 1)
    return _requant(acc, m0.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1), a)


def dense(x: np.ndarray, w: np.ndarray, bias: np.ndarray, m0: np.ndarray, shift: np.ndarray,
          a: dict) -> np.ndarray:
    w, bias = _canonical(w, bias, a)
    acc = ((x.astype(np.float64) - a["zp_x"]) @ w.astype(np.float64).T).astype(np.int64)
    return _requant(acc + bias.astype(np.int64), m0, shift, a)


def add(x: np.ndarray, y: np.ndarray, a: dict) -> np.ndarray:
    ta = q_multiply_shift(x.astype(np.int32) - a["zp_a"], a["m0_a"], a["shift_a"])
    tb = q_multiply_shift(y.astype(np.int32) - a["zp_b"], a["m0_b"], a["shift_b"])
    k = a["k"]
    s = (ta + tb + ((1 << k) >> 1)) >> k
    return RequantizeAttrs.from_attrs(a).clamp(s)


def conv2d_add(x: np.ndarray, w: np.ndarray, bias: np.ndarray, m0: np.ndarray,
               shift: np.ndarray, skip: np.ndarray, a: dict) -> np.ndarray:
    """A conv whose output goes only to an add, fused by `plan_layout`: the conv (its bytes,
    as the graph had them), then the add with `skip` (attribute `conv_side`: which operand
    of the add the conv is)."""
    y = conv2d(x, w, bias, m0, shift, a)
    return add(y, skip, a["add"]) if a["conv_side"] == "a" else add(skip, y, a["add"])


def conv2d_lut(x: np.ndarray, w: np.ndarray, bias: np.ndarray, m0: np.ndarray,
               shift: np.ndarray, table: np.ndarray, a: dict) -> np.ndarray:
    """A conv whose output goes only to a table of one row, fused by `plan_layout`: the conv
    (its bytes, as the graph had them), then the table (attribute `lut`)."""
    return lut(conv2d(x, w, bias, m0, shift, a), table, a["lut"])


def requantize(x: np.ndarray, a: dict) -> np.ndarray:
    return _requant_one(x.astype(np.int64) - a["zp_x"], a)


def _pool_windows(x: np.ndarray, a: dict, fill: float) -> np.ndarray:
    kh, kw = a["kernel"]
    sh, sw = a["strides"]
    pt, pl, pb, pr = a["padding"]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def max_pool2d(x: np.ndarray, a: dict) -> np.ndarray:
    return _pool_windows(x, a, a["dtype_min"]).max(axis=(4, 5)).astype(x.dtype)


def avg_pool2d(x: np.ndarray, m0: np.ndarray, shift: np.ndarray, a: dict) -> np.ndarray:
    sums = _pool_windows(x.astype(np.int64) - a["zp_x"], a, 0).sum(axis=(4, 5))
    return _requant(sums, m0, shift, a)


def lut(x: np.ndarray, table: np.ndarray, a: dict) -> np.ndarray:
    """The gather, from a table rebuilt from the attributes (not the graph's constant)."""
    t = tables(a)
    idx = x.astype(np.int64) - dtype_range(str(x.dtype))[0]
    if t.shape[0] == 1:
        return t[0][idx]
    rows = np.arange(x.shape[a["axis"]]).reshape([-1 if k == a["axis"] % x.ndim else 1
                                                  for k in range(x.ndim)])
    return t[rows, idx]


def mul(x: np.ndarray, y: np.ndarray, m0: np.ndarray, shift: np.ndarray, a: dict) -> np.ndarray:
    prod = (x.astype(np.int64) - a["zp_a"]) * (y.astype(np.int64) - a["zp_b"])
    return _requant(prod, m0, shift, a)


def reduce_mean(x: np.ndarray, a: dict) -> np.ndarray:
    sums = (x.astype(np.int64) - a["zp_x"]).sum(axis=tuple(a["axes"]), keepdims=a["keepdims"])
    return _requant_one(sums, a)


def resize_nearest(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, a: dict) -> np.ndarray:
    return x[:, :, rows][:, :, :, cols]


def resize_bilinear(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, a: dict) -> np.ndarray:
    u = x.astype(np.int64) - a["zp_x"]
    one = 1 << a["bits"]
    wy = rows[2].reshape(-1, 1).astype(np.int64)
    wx = cols[2].astype(np.int64)
    top, bottom = u[:, :, rows[0]], u[:, :, rows[1]]
    line = [(one - wx) * r[:, :, :, cols[0]] + wx * r[:, :, :, cols[1]] for r in (top, bottom)]
    return _requant_one((one - wy) * line[0] + wy * line[1], a)


def conv2d_transpose(x: np.ndarray, w: np.ndarray, bias: np.ndarray, m0: np.ndarray,
                     shift: np.ndarray, a: dict) -> np.ndarray:
    """Scatter-add: every input element adds its kernel-weighted copy to the output window it
    projects onto (float64 sums of integers, exact), then the padding is cropped."""
    w = canonical(w, a)  # nibbles unpacked
    n, cin, h, wd = x.shape
    _, cout_g, kh, kw = w.shape
    groups = a["groups"]
    cin_g = cin // groups
    (sh, sw), (dh, dw) = a["strides"], a["dilation"]
    pt, pl, pb, pr = a["padding"]
    oh = (h - 1) * sh - pt - pb + dh * (kh - 1) + 1 + a["output_padding"][0]
    ow = (wd - 1) * sw - pl - pr + dw * (kw - 1) + 1 + a["output_padding"][1]
    full = np.zeros((n, cout_g * groups, max((h - 1) * sh + dh * (kh - 1) + 1, pt + oh),
                     max((wd - 1) * sw + dw * (kw - 1) + 1, pl + ow)))
    u = x.astype(np.float64) - a["zp_x"]
    for g in range(groups):
        xg = u[:, g * cin_g:(g + 1) * cin_g]
        wg = w[g * cin_g:(g + 1) * cin_g].astype(np.float64)
        for ky in range(kh):
            for kx in range(kw):
                contrib = np.einsum("nchw,co->nohw", xg, wg[:, :, ky, kx])
                full[:, g * cout_g:(g + 1) * cout_g, ky * dh:ky * dh + (h - 1) * sh + 1:sh,
                     kx * dw:kx * dw + (wd - 1) * sw + 1:sw] += contrib
    acc = full[:, :, pt:pt + oh, pl:pl + ow].astype(np.int64)
    acc = acc + bias.astype(np.int64).reshape(1, -1, 1, 1)
    return _requant(acc, m0.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1), a)


def interleave_phases(y: np.ndarray, a: dict) -> np.ndarray:
    return transpose_phases.interleave(y, a["strides"], a["offset"], a["out_hw"])


def to_blocked(x: np.ndarray, a: dict) -> np.ndarray:
    """NCHW -> NCHW16c (`schedules.blocked`), the padded channels (and with `spatial`, the
    border (top, left, bottom, right)) filled with `pad`."""
    n, c, h, w = x.shape
    lanes = a["block"]
    cb = -(-c // lanes)
    pt, pl, pb, pr = a.get("spatial", (0, 0, 0, 0))
    full = np.full((n, cb * lanes, h + pt + pb, w + pl + pr), a["pad"], x.dtype)
    full[:, :c, pt:pt + h, pl:pl + w] = x
    h, w = full.shape[2:]
    return np.ascontiguousarray(full.reshape(n, cb, lanes, h, w).transpose(0, 1, 3, 4, 2))


def unblocked(x: np.ndarray) -> np.ndarray:
    """NCHW16c -> NCHW with every channel, the padded ones too."""
    n, cb, h, w, lanes = x.shape
    return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3).reshape(n, cb * lanes, h, w))


def from_blocked(x: np.ndarray, a: dict) -> np.ndarray:
    return unblocked(x)[:, :a["channels"]]


def _blocked(kernel: Callable, activations: tuple[int, ...]) -> Callable:
    """A kernel on NCHW16c tensors (attribute `layout`; the operands at `activations`): the
    same formulas on the unblocked, channel-padded tensors (its constant operands are padded
    alike), blocked again."""
    def run(*args: object) -> np.ndarray:
        *operands, a = args
        lanes = int(a["layout"][len("NCHW"):-1])  # the output's ("NCHW16c"; a stem's input
        moved = [unblocked(x) if i in activations else x for i, x in enumerate(operands)]
        return to_blocked(kernel(*moved, a), {"block": lanes, "pad": 0})  # is by 4)
    return run


def quantize(x: np.ndarray, a: dict) -> np.ndarray:
    r = np.clip(np.rint(x.astype(np.float32) / np.float32(a["scale"])), -2.0**30, 2.0**30)
    return np.clip(r.astype(np.int64) + a["zero_point"], a["lo"], a["hi"]).astype(a["dtype"])


def dequantize(q: np.ndarray, a: dict) -> np.ndarray:
    return (q.astype(np.int32) - a["zero_point"]).astype(np.float32) * np.float32(a["scale"])


KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "conv2d": conv2d, "dense": dense, "add": add, "requantize": requantize,
    "max_pool2d": max_pool2d, "avg_pool2d": avg_pool2d, "quantize": quantize,
    "dequantize": dequantize, "lut": lut, "mul": mul, "reduce_mean": reduce_mean,
    "resize_nearest": resize_nearest, "resize_bilinear": resize_bilinear,
    "conv2d_transpose": conv2d_transpose, "interleave_phases": interleave_phases,
    "to_blocked": to_blocked,
    "from_blocked": from_blocked, "conv2d_add": conv2d_add, "conv2d_lut": conv2d_lut,
}
# The activation operands of a blocked kernel (the rest are constants): `_blocked`.
BLOCKED_ACTIVATIONS = {"add": (0, 1), "mul": (0, 1), "conv2d_add": (0, 5)}


def kernel_for(kind: str, attrs: dict) -> Callable[..., np.ndarray]:
    """The reference of one kernel (`qcompiler.op`), in the layout its attributes say."""
    if "layout" in attrs:
        return _blocked(KERNELS[kind], BLOCKED_ACTIVATIONS.get(kind, (0,)))
    return KERNELS[kind]


def _strided_slice(x: np.ndarray, call: relax.Call, out_shape: tuple) -> np.ndarray:
    """Relax strided_slice by its begin and stride; the end is the output shape TVM inferred
    (so end clamping, negative steps and out-of-range ends mean what they mean to TVM)."""
    axes, begin = (int_list(call.args[i].fields) for i in (1, 2))
    strides = int_list(call.args[4].fields) if len(call.args) > 4 else [1] * len(axes)
    for axis, b, step in zip(axes, begin, strides):
        dim = x.shape[axis]
        b = b + dim if b < 0 else b
        b = min(max(b, 0), dim - 1 if step < 0 else dim)
        x = np.take(x, b + step * np.arange(out_shape[axis]), axis=axis)
    return x


def _pad(x: np.ndarray, attrs: tvm.ir.Attrs) -> np.ndarray:
    width = int_list(attrs.pad_width)
    pairs = list(zip(width[::2], width[1::2]))
    mode = str(attrs.pad_mode)
    if mode == "constant":
        return np.pad(x, pairs, constant_values=np.array(float(attrs.pad_value)).astype(x.dtype))
    return np.pad(x, pairs, mode={"replicate": "edge"}.get(mode, mode))


def _data_movement(var: relax.Var, call: relax.Expr, value: Callable) -> object:
    """The Relax data-movement ops the quantized graph applies to integer tensors, in numpy
    (None for anything else)."""
    name = op_name(call)
    if name in ("relax.reshape", "relax.flatten", "relax.squeeze", "relax.expand_dims"):
        return value(call.args[0]).reshape(shape_of(var))
    if name == "relax.concat":
        return np.concatenate([value(f) for f in call.args[0].fields], axis=int(call.attrs.axis))
    if name == "relax.permute_dims":
        axes = call.attrs.axes
        return np.transpose(value(call.args[0]), None if axes is None else int_list(axes))
    if name == "relax.strided_slice":
        return _strided_slice(value(call.args[0]), call, shape_of(var))
    if name == "relax.nn.pad":
        return _pad(value(call.args[0]), call.attrs)
    if name == "relax.split":
        sizes = [int(f.shape[int(call.attrs.axis)]) for f in var.ty.fields]
        return tuple(np.split(value(call.args[0]), np.cumsum(sizes)[:-1],
                              axis=int(call.attrs.axis)))
    return None


class Reference:
    """Runs `main_int` of a quantized module in numpy."""

    def __init__(self, mod: tvm.IRModule, target: tvm.target.Target | None = None) -> None:
        self.mod = mod
        if target is None:  # this machine's ISA level (see pipeline.compile_model)
            from qcompiler.targets.x86 import x86_target

            target = tvm.target.Target(x86_target().tvm_target)
        self.target = target
        self._float_ops: dict = {}

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        _, value = self._walk(inputs)
        return [value(f) for f in output_exprs(self.mod["main_int"])]

    def run_all(self, *inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Every tensor of `main_int`, by variable name (for per-layer error reports)."""
        env, value = self._walk(inputs)
        out = {v.name: x for v, x in env.items() if isinstance(x, np.ndarray)}
        for b in bindings(self.mod["main_int"]):  # the convs fused with an add or table, too
            prim = self.mod[b.value.args[0]] if op_name(b.value) == "relax.call_tir" \
                else None
            if prim is not None and prim.attrs is not None \
                    and str(prim.attrs.get("qcompiler.op", "")) in ("conv2d_add", "conv2d_lut"):
                attrs = json.loads(str(prim.attrs["qcompiler.attrs"]))
                args = [value(a) for a in b.value.args[1].fields[:5]]
                out[attrs["conv_tensor"]] = kernel_for("conv2d", attrs)(*args, attrs)
        attrs = self.mod["main_int"].attrs
        blocked = json.loads(str(attrs["qcompiler.blocked"])) \
            if attrs is not None and "qcompiler.blocked" in attrs else {}
        for name, channels in blocked.items():  # `passes.plan_layout`: in NCHW again
            if name in out and out[name].ndim == 5:
                out[name] = unblocked(out[name])[:, :channels]
        return out

    def _walk(self, inputs: tuple) -> tuple[dict, Callable]:
        func = self.mod["main_int"]
        env: dict = dict(zip(func.params, inputs))

        def value(e: relax.Expr) -> np.ndarray:
            return const_array(e) if is_const(e) else env[e]

        for b in bindings(func):
            env[b.var] = self._eval(b.var, b.value, value)
        return env, value

    def _eval(self, var: relax.Var, call: relax.Expr, value: Callable) -> np.ndarray:
        if isinstance(call, relax.Var):
            return value(call)
        if isinstance(call, relax.Tuple):
            return tuple(value(f) for f in call.fields)
        if isinstance(call, relax.TupleGetItem):
            return value(call.tuple_value)[call.index]
        moved = _data_movement(var, call, value)
        if moved is not None:
            return moved
        name = op_name(call)
        if name == "relax.call_tir":
            prim = self.mod[call.args[0]]
            kind = str(prim.attrs["qcompiler.op"])
            attrs = json.loads(str(prim.attrs["qcompiler.attrs"]))
            return kernel_for(kind, attrs)(*[value(a) for a in call.args[1].fields], attrs)
        return self._float_op(var, call, value)

    def _float_op(self, var: relax.Var, call: relax.Call, value: Callable) -> np.ndarray:
        """A float-fallback op, run by TVM alone on the reference's own inputs."""
        key = var  # one compiled op per binding of the graph
        if key not in self._float_ops:
            params, args = [], []
            for a in call.args:
                if isinstance(a, relax.Var):
                    p = relax.Var(a.name, a.ty)
                    params.append((a, p))
                    args.append(p)
                else:
                    args.append(a)
            bb = relax.BlockBuilder()
            with bb.function("main", [p for _, p in params]):
                out = bb.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
                bb.emit_func_output(out)
            exe = tvm.compile(bb.get(), self.target)
            self._float_ops[key] = (relax.VirtualMachine(exe, tvm.cpu()), [a for a, _ in params])
        vm, arg_vars = self._float_ops[key]
        res = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(value(a))) for a in arg_vars])
        return res.numpy()


def run_reference(mod: tvm.IRModule, *inputs: np.ndarray) -> list[np.ndarray]:
    return Reference(mod).run(*inputs)
