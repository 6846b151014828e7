"""Plan the activation layout once per graph: on x86 with AVX-512 VNNI, the integer kernels
that have a blocked form (`schedules.blocked`: conv2d, depthwise conv2d, add, mul, lookup
tables, requantize, max pool, the mean over h and w kept 1x1, resize, a transposed conv's
phase interleave, and concat along channels of whole blocks) run on NCHW16c tensors, and the
layout changes only where the graph leaves them (the graph's inputs and outputs, and ops
without a blocked form, e.g. reshapes, a channel shuffle's transpose, a concat of channels
that do not fill whole blocks).

A kernel takes the blocked form when one of its activations is already blocked, or, for a
conv or max pool, when it has at least 16 input channels. A conv with fewer channels on an
NCHW tensor (an RGB stem) reads it blocked by 4 (`blocked.STEM_BLOCK`: 3 channels padded to
4, not 16), the conv's spatial padding added by that conversion, and writes NCHW16c like the
others. Each tensor is converted at most once in each direction.

Runs on the quantized graph before `apply_schedules`, which then schedules the kernels left
in NCHW as before. The blocked kernels' constants are the layer's, channel-padded (see
`schedules.blocked`), so the reference reads the new graph like any other. A blocked form that
raises while it is built leaves its layer in NCHW, recorded in the graph metadata
(`graph_meta.schedule_fallbacks`) for the summary and the tests.
"""
from __future__ import annotations

import json

import numpy as np
import tvm
from qcompiler.passes import module_pass
from qcompiler.schedules import shift_kind
from qcompiler.schedules.x86 import blocked
from qcompiler.schedules.x86.lookup import fits as lookup_fits
from qcompiler.targets.target import Target
from tvm import relax

from qcompiler.graph_meta import record_schedule_fallbacks, schedule_fallback
from qcompiler.numerics import nibbles
from qcompiler.numerics.lut import requantize_table
from qcompiler.numerics.weight_layout import block_groups, canonical, folded_bias, pack_depthwise
from qcompiler.relax_access import bindings, const_array, is_const, op_name, reemit, substitute

MIN_STEM_CHANNELS = 16  # fewer channels on an NCHW tensor: a stem (blocked by 4)
# main_int's attribute naming its blocked tensors (they keep their names) with their channel
# counts, so that `Reference.run_all` gives every tensor in NCHW (per-layer reports).
LAYOUT_ATTR = "qcompiler.blocked"


def uses_blocked_layout(target: Target) -> bool:
    """The targets whose kernels have a blocked form: x86 with AVX-512 VNNI."""
    return target.name == "x86" and target.has("avx512vnni")


def plan_layout(target: Target) -> tvm.transform.Pass:
    """The pass (a no-op for targets without blocked kernels)."""

    @module_pass("qcompiler.plan_layout")
    def run(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not uses_blocked_layout(target):
            return mod
        return _Planner(mod, target.has("avx512vbmi")).rebuild()

    return run


def _pad(a: np.ndarray, size: int, fill: int = 0) -> np.ndarray:
    out = np.full((size, *a.shape[1:]), fill, a.dtype)
    out[:a.shape[0]] = a
    return out


def _padded_weights(w: np.ndarray, cout: int, cin: int) -> np.ndarray:
    out = np.zeros((cout, cin, *w.shape[2:]), np.int8)
    out[:w.shape[0], :w.shape[1]] = w
    return out


def _channel_constants(args: list, cout: int) -> list[relax.Expr]:
    """m0 and shift padded to `cout`: a padded channel multiplies by 0 (its output is the
    clamp of zp_y), with a right shift (so the shift kind of the layer is unchanged)."""
    m0, shift = (const_array(a) for a in args[3:5])
    return [relax.const(_pad(m0, cout)), relax.const(_pad(shift, cout, int(shift.min())))]


class _Planner:
    """Rebuilds `main_int` (and `main`, which calls it) with blocked kernels."""

    def __init__(self, mod: tvm.IRModule, vbmi: bool) -> None:
        self.mod = mod
        self.vbmi = vbmi  # the target has AVX-512 VBMI (`blocked.depthwise`)
        self.bb = relax.BlockBuilder()
        self.gmap: dict = {}  # old GlobalVar -> new (added on first use)
        self.nchw: dict = {}  # old Var -> new expr, NCHW
        self.blocked: dict = {}  # old Var -> new expr, NCHW16c
        self.stem_inputs: dict = {}  # old Var -> new expr, NCHW4c (`blocked.STEM_BLOCK`)
        self.converters: dict = {}  # (op, shape, dtype, pad) -> GlobalVar
        self.channels: dict = {}  # name of a blocked tensor -> its channels (LAYOUT_ATTR)
        self.users: dict = {}  # old Var -> the values (bindings, the output) that read it
        self.deferred: dict = {}  # old Var of a conv -> its call, held for a fused add
        self.fallbacks: list = []  # blocked forms that raised (`graph_meta.ScheduleFallback`)

    # ---- the conversions, emitted at most once per tensor and direction ----

    def _converter(self, key: tuple, make) -> relax.GlobalVar:
        if key not in self.converters:
            name = f"{key[0]}_{len(self.converters)}"
            self.converters[key] = self.bb.add_func(make().with_attr("global_symbol", name),
                                                    name)
        return self.converters[key]

    def as_nchw(self, var: relax.Var) -> relax.Expr:
        if var not in self.nchw:
            x = self.blocked[var]
            shape = tuple(int(d) for d in var.ty.shape)
            dtype = str(var.ty.dtype)
            gv = self._converter(("from_blocked", shape, dtype),
                                 lambda: blocked.from_blocked(shape, dtype))
            self.nchw[var] = self.bb.emit(relax.call_tir(gv, [x], var.ty), f"{var.name}_nchw")
        return self.nchw[var]

    def as_blocked(self, var: relax.Var, pad: int, block: int = blocked.BLOCK,
                   spatial: tuple = (0, 0, 0, 0)) -> relax.Expr:
        """`var` in NCHW16c (or, for a stem, NCHW4c with its conv's `spatial` padding)."""
        cache, key = (self.blocked, var) if block == blocked.BLOCK \
            else (self.stem_inputs, (var, spatial))
        if key not in cache:
            x = self.as_nchw(var)
            shape = tuple(int(d) for d in var.ty.shape)
            dtype = str(var.ty.dtype)
            gv = self._converter(("to_blocked", shape, dtype, pad, block, spatial),
                                 lambda: blocked.to_blocked(shape, dtype, pad, block, spatial))
            n, cb, h, w, lanes = blocked.blocked_shape(shape, block)
            pt, pl, pb, pr = spatial
            cache[key] = self.bb.emit(relax.call_tir(
                gv, [x], relax.TensorType((n, cb, h + pt + pb, w + pl + pr, lanes), dtype)),
                f"{var.name}_nchw{block}c")
        return cache[key]

    def _global(self, gv: relax.GlobalVar) -> relax.GlobalVar:
        if gv not in self.gmap:
            self.gmap[gv] = self.bb.add_func(self.mod[gv], gv.name_hint)
        return self.gmap[gv]

    # ---- one binding ----

    def _kernel(self, call: relax.Expr) -> tuple | None:
        """(op, attrs, PrimFunc, args) of a kernel call, else None."""
        if not (isinstance(call, relax.Call) and op_name(call) == "relax.call_tir"):
            return None
        func = self.mod[call.args[0]]
        if not isinstance(func, tvm.tirx.PrimFunc) or "qcompiler.op" not in func.attrs:
            return None
        return (str(func.attrs["qcompiler.op"]), json.loads(str(func.attrs["qcompiler.attrs"])),
                func, list(call.args[1].fields))

    def _blocked_form(self, op: str, attrs: dict, func: tvm.tirx.PrimFunc, args: list,
                      add: dict | None = None, lut: tuple | None = None) -> tuple | None:
        """(PrimFunc, activation operands as (var, pad value, block), constant operands) of
        the kernel's blocked form, or None to keep it in NCHW. `add`: a conv's attributes
        for a fused add (`blocked.conv2d_compute`); only convs of one group take them.
        `lut`: (attributes, table operand) of a one-row table that takes the conv's output
        (`blocked.table_stage`), for any conv here.

        Accepts 4-D activations of any batch and spatial size, int8 weights (4-bit layers
        stay NCHW), and:
        - add of two tensors of one shape, one of them blocked already; any 8-bit dtypes;
        - mul of two tensors, one of them blocked already, of one shape or one of them 1x1
          per channel (an SE gate), with one multiplier; any 8-bit dtypes;
        - a lookup table of one row (`lut`), or a requantize (8-bit to 8-bit with AVX-512
          VBMI: a table of its 256 results, `numerics.lut.requantize_table`), on a blocked
          input;
        - max pool on a blocked input or one of >= 16 channels: any kernel, strides, padding;
        - reduce_mean over (h, w) with keepdims (a global average pool), on a blocked input;
        - resize, nearest or bilinear (their index tables as they are), on a blocked input;
        - the interleave of a transposed conv's phases, on a blocked input, its output
          channels whole blocks;
        - conv2d on one uint8 activation with constant weights, bias and multipliers: groups
          1 (`blocked.BLOCKED_VNNI`; a stem of < 16 channels on an NCHW input read by 4), or
          depthwise with groups == channels == outputs (`blocked.depthwise`; not a stem), or
          grouped with as many channels in as out per group, a divisor or multiple of 16
          (`weight_layout.block_groups`: RegNet's 8, ResNeXt's 4-32; not a stem), any
          kernel, strides, dilations and padding (height and width apart), fused with the add
          that takes its output (groups 1 only) or the table. Others stay NCHW."""
        acts = [a for a in args if isinstance(a, relax.Var)]
        if not acts or any(len(a.ty.shape) != 4 for a in acts) or nibbles.is_nibbles(attrs):
            return None
        shapes = [tuple(int(d) for d in a.ty.shape) for a in acts]
        dtypes = [str(a.ty.dtype) for a in acts]
        is_blocked = any(a in self.blocked for a in acts)  # produced or converted already
        battrs = {**attrs, "layout": blocked.LAYOUT}
        if op == "add" and len(acts) == 2 and shapes[0] == shapes[1] and is_blocked:
            shape5 = blocked.blocked_shape(shapes[0])
            return (blocked.add(shape5, dtypes[0], dtypes[1], battrs),
                    [(acts[0], attrs["zp_a"], blocked.BLOCK),
                     (acts[1], attrs["zp_b"], blocked.BLOCK)], [])
        if op == "max_pool2d" and len(acts) == 1 and (is_blocked
                                                      or shapes[0][1] >= MIN_STEM_CHANNELS):
            return (blocked.max_pool2d(blocked.blocked_shape(shapes[0]), dtypes[0], battrs),
                    [(acts[0], 0, blocked.BLOCK)], [])
        if op == "lut" and len(acts) == 1 and is_blocked and int(func.params[1].shape[0]) == 1:
            table_shape = tuple(int(d) for d in func.params[1].shape)
            return (blocked.table(blocked.blocked_shape(shapes[0]), dtypes[0], table_shape,
                                  battrs, self.vbmi), [(acts[0], 0, blocked.BLOCK)], [args[1]])
        if op == "mul" and all(isinstance(a, relax.Var) for a in args[:2]) and is_blocked \
                and _gate_shapes(*shapes) and all(is_const(a) for a in args[2:4]) \
                and all(int(d) == 1 for d in func.params[2].shape):
            m_shape = tuple(int(d) for d in func.params[2].shape)
            return (blocked.mul(blocked.blocked_shape(max(shapes)),
                                blocked.blocked_shape(shapes[0]), dtypes[0],
                                blocked.blocked_shape(shapes[1]), dtypes[1], m_shape, battrs,
                                shift_kind(const_array(args[3]))),
                    [(acts[0], attrs["zp_a"], blocked.BLOCK),
                     (acts[1], attrs["zp_b"], blocked.BLOCK)], list(args[2:4]))
        if op == "requantize" and len(acts) == 1 and is_blocked:
            shape5 = blocked.blocked_shape(shapes[0])
            if self.vbmi and lookup_fits(dtypes[0], attrs["out_dtype"], (1, 256)):
                # 256 inputs: a table, looked up 64 bytes at a time (`x86.lookup`)
                tattrs = {**battrs, "fn": "requantize", "x_dtype": dtypes[0], "axis": 1}
                return (blocked.table(shape5, dtypes[0], (1, 256), tattrs, True),
                        [(acts[0], attrs["zp_x"], blocked.BLOCK)],
                        [relax.const(requantize_table(tattrs))])
            return (blocked.requantize(shape5, dtypes[0], battrs),
                    [(acts[0], attrs["zp_x"], blocked.BLOCK)], [])
        if op in ("resize_nearest", "resize_bilinear") and len(acts) == 1 and is_blocked:
            out_hw = tuple(int(d) for d in func.params[-1].shape[2:4])
            return (blocked.resize(op, blocked.blocked_shape(shapes[0]), dtypes[0], out_hw,
                                   battrs), [(acts[0], attrs.get("zp_x", 0), blocked.BLOCK)],
                    list(args[1:3]))
        if op == "interleave_phases" and is_blocked and shapes[0][1] % (
                attrs["strides"][0] * attrs["strides"][1] * blocked.BLOCK) == 0:
            return (blocked.interleave_phases(blocked.blocked_shape(shapes[0]), dtypes[0],
                                              battrs), [(acts[0], 0, blocked.BLOCK)], [])
        if op == "reduce_mean" and len(acts) == 1 and is_blocked \
                and attrs["axes"] == [2, 3] and attrs["keepdims"]:
            return (blocked.global_mean(blocked.blocked_shape(shapes[0]), dtypes[0], battrs),
                    [(acts[0], attrs["zp_x"], blocked.BLOCK)], [])
        if op != "conv2d" or dtypes[0] != "uint8" or len(acts) != 1 or args[0] is not acts[0] \
                or not all(is_const(a) for a in args[1:5]):
            return None
        cin = shapes[0][1]
        stem = not is_blocked and cin < MIN_STEM_CHANNELS
        if stem and attrs["groups"] != 1:
            return None
        w = canonical(const_array(args[1]), attrs)
        cout = w.shape[0]
        bias = const_array(args[2])
        shifts = shift_kind(const_array(args[4]))
        block = blocked.STEM_BLOCK if stem else blocked.BLOCK
        x5 = blocked.blocked_shape(shapes[0], block)
        # A stem's conversion adds its padding (no padded copy of the input in the conv: the
        # largest scratch of a graph whose first conv runs at full resolution).
        spatial = tuple(attrs["padding"]) if stem else (0, 0, 0, 0)
        if stem:
            pt, pl, pb, pr = spatial
            x5 = (x5[0], x5[1], x5[2] + pt + pb, x5[3] + pl + pr, x5[4])
            battrs["padding"] = [0, 0, 0, 0]
        c_in, c_out = x5[1] * block, blocked.padded_channels(cout)
        battrs.update(channels=[cin, cout])  # the layer's own (for reports: padding is not work)
        if add is not None:
            if attrs["groups"] != 1:
                return None
            battrs.update(add)
        if lut is not None:
            battrs.update(lut[0])
        conv_op = "conv2d_add" if add else "conv2d_lut" if lut else "conv2d"
        try:
            if attrs["groups"] == 1:
                wp = _padded_weights(w, c_out, c_in)
                wk, fb = blocked.BLOCKED_VNNI.pack_operands(wp, _pad(bias, c_out), attrs)
                kernel = blocked.BLOCKED_VNNI.build(conv_op, x5, "uint8", wp.shape, battrs,
                                                    shifts=shifts)
            elif attrs["groups"] == cin == cout and w.shape[1] == 1:
                wp = _padded_weights(w, c_out, 1)
                fb = folded_bias(wp, _pad(bias, c_out), attrs["zp_x"])
                wk = pack_depthwise(wp, blocked.BLOCK)
                kernel = blocked.depthwise(x5, "uint8", wp.shape, {**battrs, "groups": c_out},
                                           shifts, self.vbmi)
            elif (grouped := block_groups(w, attrs["groups"], c_out, blocked.BLOCK)) \
                    is not None and c_in == c_out:
                wg, battrs["groups"] = grouped
                wk, fb = blocked.BLOCKED_VNNI.pack_operands(wg, _pad(bias, c_out), attrs)
                kernel = blocked.BLOCKED_VNNI.build(conv_op, x5, "uint8", wg.shape, battrs,
                                                    shifts=shifts)
            else:
                return None
        except OverflowError:  # the folded bias does not fit: the portable int64 epilogue
            return None
        consts = [relax.const(wk), relax.const(fb), *_channel_constants(args, c_out)]
        return kernel, [(acts[0], attrs["zp_x"], block, spatial)], \
            consts + ([lut[1]] if lut else [])

    def _binding(self, var: relax.Var, value: relax.Expr) -> None:
        kernel = self._kernel(value)
        if kernel is not None and self._defers(var, kernel):
            self.deferred[var] = value
            return
        if kernel is not None and kernel[0] == "add" and self._fuse_add(var, value, kernel):
            return
        if kernel is not None and kernel[0] == "lut" and self._fuse_lut(var, kernel):
            return
        for v in _vars(value) & self.deferred.keys():  # not fused after all: emitted here
            self._emit(v, self.deferred.pop(v))
        self._emit(var, value)

    def _emit(self, var: relax.Var, value: relax.Expr) -> None:
        """The binding in its blocked form if it has one, else as it was (in NCHW)."""
        if self._kernel(value) is not None and self._emit_blocked(var, value, None):
            return
        if self._emit_concat(var, value):
            return
        env = {v: self.as_nchw(v) for v in _vars(value) if v in self.nchw or v in self.blocked}
        env.update({gv: self._global(gv) for gv in _globals(value)})
        self.nchw[var] = self.bb.emit(substitute(value, env), var.name)  # names kept: reports

    def _emit_blocked(self, var: relax.Var, value: relax.Call, add: tuple | None,
                      lut: tuple | None = None) -> bool:
        """Emit the blocked form of a kernel (with `add`: (its attributes, skip operand, pad),
        the conv `value` fused with the add that binds `var`; with `lut`: (attributes, table),
        fused with the table that binds `var`); False if it has none."""
        kernel = self._kernel(value)
        fused = "_add" if add else "_lut" if lut else ""
        try:
            form = self._blocked_form(*kernel, add[0] if add else None, lut)
        except Exception as exc:  # noqa: BLE001 - a blocked form that raises: the layer in NCHW
            # (then `apply_schedules`'s rules)
            tensor = (add or lut)[0]["conv_tensor"] if add or lut else var.name
            self.fallbacks.append(schedule_fallback(
                tensor, kernel[0], str(kernel[2].attrs["global_symbol"]),
                f"blocked_{kernel[0]}{fused}", exc))
            return False
        if form is None:
            return False
        func, acts, consts = form
        name = f"{value.args[0].name_hint}{fused}_nchw16c"
        gv = self.bb.add_func(func.with_attr("global_symbol", name), name)
        operands = [self.as_blocked(*act) for act in acts] + consts
        if add:
            operands.append(self.as_blocked(add[1], add[2]))
        shape = tuple(int(d) for d in var.ty.shape)
        out = relax.TensorType(blocked.blocked_shape(shape), str(var.ty.dtype))
        self.blocked[var] = self.bb.emit(relax.call_tir(gv, operands, out), var.name)
        self.channels[var.name] = shape[1]
        return True

    def _emit_concat(self, var: relax.Var, value: relax.Expr) -> bool:
        """A concat along the channels of 4-D tensors, one of them blocked, whose channels
        (but the last's) fill whole blocks: the blocked tensors concatenated (SqueezeNet's
        fire modules, Inception's branches); its padding is the last tensor's. Else False."""
        if not (isinstance(value, relax.Call) and op_name(value) == "relax.concat"
                and isinstance(value.args[0], relax.Tuple)):
            return False
        parts = list(value.args[0].fields)
        if int(value.attrs.axis) not in (1, -3) or len(var.ty.shape) != 4 \
                or not all(isinstance(p, relax.Var) and len(p.ty.shape) == 4 for p in parts) \
                or not any(p in self.blocked for p in parts) \
                or any(_shape(p)[1] % blocked.BLOCK for p in parts[:-1]):
            return False
        self.blocked[var] = self.bb.emit(relax.op.concat(
            [self.as_blocked(p, 0) for p in parts], axis=1), var.name)
        self.channels[var.name] = _shape(var)[1]
        return True

    # ---- a conv fused with the add or the table that takes its output ----

    def _defers(self, var: relax.Var, kernel: tuple) -> bool:
        """A conv whose output only an add (of two tensors of one shape; groups 1) or a
        table of one row reads: held back, to be emitted with it (`_fuse_add`, `_fuse_lut`)."""
        op, attrs, _, args = kernel
        users = self.users.get(var, [])
        if op != "conv2d" or not isinstance(var, relax.DataflowVar) or len(users) != 1:
            return False
        user = self._kernel(users[0])
        if user is not None and user[0] == "lut":
            return int(user[2].params[1].shape[0]) == 1
        return user is not None and user[0] == "add" and attrs["groups"] == 1 \
            and len(user[3]) == 2 \
            and all(isinstance(a, relax.Var) and len(a.ty.shape) == 4 for a in user[3]) \
            and _shape(user[3][0]) == _shape(user[3][1]) and user[3][0] is not user[3][1]

    def _fuse_lut(self, var: relax.Var, kernel: tuple) -> bool:
        _, attrs, _, (conv, table) = kernel
        if conv not in self.deferred:
            return False
        fused = {"lut": attrs, "conv_tensor": conv.name}
        if self.vbmi:
            fused["table_lookup"] = "vbmi"  # `blocked.table_stage`'s lookups by `x86.lookup`
        if self._emit_blocked(var, self.deferred[conv], None, (fused, table)):
            del self.deferred[conv]
            self.channels[conv.name] = _shape(conv)[1]  # `Reference.run_all` gives it too
            return True
        return False

    def _fuse_add(self, var: relax.Var, value: relax.Call, kernel: tuple) -> bool:
        _, attrs, _, (a, b) = kernel
        for side, conv, skip in (("a", a, b), ("b", b, a)):
            if conv not in self.deferred:
                continue
            other = "b" if side == "a" else "a"
            if skip in self.deferred:  # both operands are convs (a projection shortcut)
                self._emit(skip, self.deferred.pop(skip))
            fused = {"add": attrs, "conv_side": side, "skip_dtype": str(skip.ty.dtype),
                     "conv_tensor": conv.name}
            if self._emit_blocked(var, self.deferred[conv], (fused, skip, attrs[f"zp_{other}"])):
                del self.deferred[conv]
                self.channels[conv.name] = _shape(conv)[1]  # `Reference.run_all` gives it too
                return True
        return False

    # ---- the module ----

    def rebuild(self) -> tvm.IRModule:
        func = self.mod["main_int"]
        self.nchw.update({p: p for p in func.params})
        for b in bindings(func):
            for v in _vars(b.value):
                self.users.setdefault(v, []).append(b.value)
        for v in _vars(func.body.body):
            self.users.setdefault(v, []).append(func.body.body)
        outputs = []
        with self.bb.function("main_int", list(func.params),
                              dict(func.attrs) if func.attrs else None):
            with self.bb.dataflow():
                for b in bindings(func):
                    self._binding(b.var, b.value)
                    if not isinstance(b.var, relax.DataflowVar):
                        outputs.append(b.var)
                final = {v: self.bb.emit_output(self.as_nchw(v)) for v in outputs}
            self.bb.emit_func_output(substitute(func.body.body, final))
        new_int = self.bb.get().get_global_var("main_int")
        self.bb.update_func(new_int, self.bb.get()[new_int].with_attr(
            LAYOUT_ATTR, json.dumps(self.channels)))
        main = self.mod["main"]
        env = {self.mod.get_global_var("main_int"): new_int}

        def with_globals(value: relax.Expr) -> relax.Expr:  # the quantize/dequantize kernels
            env.update({gv: self._global(gv) for gv in _globals(value)
                        if gv.name_hint != "main_int"})
            return value

        reemit(self.bb, main, "main", env, with_globals)
        return record_schedule_fallbacks(self.bb.get(), self.fallbacks)


def _walk(expr: relax.Expr):
    yield expr
    if isinstance(expr, relax.Tuple):
        for f in expr.fields:
            yield from _walk(f)
    elif isinstance(expr, relax.TupleGetItem):
        yield from _walk(expr.tuple_value)
    elif isinstance(expr, relax.Call):
        for a in expr.args:
            yield from _walk(a)


def _gate_shapes(a: tuple, b: tuple) -> bool:
    """Two 4-D operands of one shape, or of one batch and channel count with one of them 1x1
    (an SE block's gate over a map)."""
    return a == b or (a[:2] == b[:2] and (a[2:] == (1, 1) or b[2:] == (1, 1)))


def _shape(var: relax.Var) -> tuple[int, ...]:
    return tuple(int(d) for d in var.ty.shape)


def _vars(expr: relax.Expr) -> set:
    return {e for e in _walk(expr) if isinstance(e, relax.Var)}


def _globals(expr: relax.Expr) -> set:
    found = {e for e in _walk(expr) if isinstance(e, relax.GlobalVar)}
    if isinstance(expr, relax.Call) and isinstance(expr.op, relax.GlobalVar):
        found.add(expr.op)
    return found
