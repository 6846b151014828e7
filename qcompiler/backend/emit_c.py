"""The runtime-free C library: `libmodel.a`, `libmodel.so`, `model.h` for any target.

The integer kernels come from TVM's codegen (one object file, one function per kernel, TVM's
packed calling convention); the driver that calls them in order is generated C with a static
memory plan: every intermediate tensor has a fixed offset in one caller-provided workspace,
chosen by liveness, and the weights are constant arrays. The library provides what TVM's
objects expect from a host (the error setter and a stack allocator for kernel scratch), so it
needs nothing but libc and libm: no TVM runtime, no Python, no malloc.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from qcompiler.errors import TargetError
from qcompiler.graph_meta import graph_meta
from qcompiler.relax_access import const_array, is_const, op_name, output_exprs, shape_of

ALIGN = 128  # bytes: HVX vectors; also a cache line multiple on x86 and ARM
C_TYPES = {"uint8": "uint8_t", "int8": "int8_t", "int16": "int16_t", "int32": "int32_t",
           "float32": "float", "int64": "int64_t"}
DL_CODES = {"int": 0, "uint": 1, "float": 2}


def _dl_dtype(dtype: str) -> tuple[int, int]:
    m = re.fullmatch(r"(u?int|float)(\d+)", dtype)
    if not m:
        raise TargetError(f"dtype {dtype} cannot cross the C ABI")
    return DL_CODES[m.group(1)], int(m.group(2))


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "input", "output", "const", "act"
    offset: int = 0
    const: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


COPY = "<copy>"  # a plain memcpy step in the driver, not a kernel


@dataclass
class _Call:
    kernel: str
    args: list[_Tensor]


@dataclass
class Plan:
    """Kernels in call order and where every tensor lives."""

    calls: list[_Call] = field(default_factory=list)
    inputs: list[_Tensor] = field(default_factory=list)
    outputs: list[_Tensor] = field(default_factory=list)
    consts: list[_Tensor] = field(default_factory=list)
    act_bytes: int = 0
    scratch_bytes: int = 0


SCRATCH_RESERVE = 4096  # small temporaries lowering adds (seen: 16-byte vector spills on ARM)


def _scratch_bytes(func: tvm.tirx.PrimFunc) -> int:
    """What one kernel may ask the workspace allocator for: all its intermediate buffers at
    once, each aligned, twice over, plus a reserve for the temporaries TVM's lowering adds.
    Generous on purpose: running out is reported as a kernel error, never a wild write."""
    total = 0
    stack = [func.body]
    while stack:
        node = stack.pop()
        for buf in getattr(node, "alloc_buffers", []) or []:
            n = int(np.prod([int(d) for d in buf.shape], dtype=np.int64))
            total += _align(n * tvm.runtime.DataType(str(buf.dtype)).bits // 8 + 64)
        for name in ("block", "body"):
            child = getattr(node, name, None)
            if child is not None:
                stack.append(child)
        if isinstance(node, tvm.tirx.SeqStmt):
            stack.extend(node.seq)
    return 2 * total + SCRATCH_RESERVE


def plan(lowered: tvm.IRModule, func_name: str = "main_int") -> Plan:
    """Walk the legalized integer graph; place activations by liveness (first fit)."""
    func = lowered[func_name]
    p = Plan()
    env: dict = {}
    for i, param in enumerate(func.params):
        t = _Tensor(f"in{i}", shape_of(param), str(param.ty.dtype), "input")
        env[param] = t
        p.inputs.append(t)
    bindings = [b for blk in func.body.blocks for b in blk.bindings]
    out_vars = output_exprs(func)
    # Resolve output aliases (gv = lv) so the producing kernel writes the caller's buffer;
    # a tuple item (split) is the item of its tuple's tensors.
    alias = {b.var: b.value for b in bindings if isinstance(b.value, relax.Var)}
    item = {b.var: b.value for b in bindings if isinstance(b.value, relax.TupleGetItem)}

    def resolve(v):  # noqa: ANN001, ANN202
        while v in alias:
            v = alias[v]
        return v

    def root(v):  # noqa: ANN001, ANN202 - the binding whose kernel wrote v
        v = resolve(v)
        return root(item[v].tuple_value) if v in item else v

    def lookup(v):  # noqa: ANN001, ANN202
        v = resolve(v)
        return lookup(item[v].tuple_value)[item[v].index] if v in item else env[v]

    out_of = {resolve(v): i for i, v in enumerate(out_vars)}
    for i, v in enumerate(out_vars):
        p.outputs.append(_Tensor(f"out{i}", shape_of(v), str(v.ty.dtype), "output"))
    last_use: dict = {}
    for idx, b in enumerate(bindings):
        if op_name(b.value) == "relax.call_tir":
            for a in b.value.args[1].fields:
                if isinstance(a, relax.Var):
                    last_use[root(a)] = idx
    for v in out_vars:  # an output copied at the end stays live until then
        last_use[root(v)] = len(bindings)
    live: list[tuple[int, int, object]] = []  # (offset, size, var)
    n_const = 0

    def place(t: _Tensor, var: object) -> None:
        """First fit among the live tensors."""
        need, offset = _align(t.nbytes), 0
        for off, size, _ in sorted(live, key=lambda x: x[0]):
            if offset + need <= off:
                break
            offset = max(offset, off + size)
        t.offset = offset
        live.append((offset, need, var))
        p.act_bytes = max(p.act_bytes, offset + need)

    for idx, b in enumerate(bindings):
        if isinstance(b.value, (relax.Var, relax.TupleGetItem, relax.Tuple)):
            continue
        if op_name(b.value) != "relax.call_tir":
            raise TargetError(f"binding {b.var.name}: {op_name(b.value)} has no kernel in the "
                              "standalone library")
        prim = lowered[b.value.args[0]]
        p.scratch_bytes = max(p.scratch_bytes, _scratch_bytes(prim))
        args = []
        for a in b.value.args[1].fields:
            if is_const(a):
                arr = const_array(a)
                t = _Tensor(f"c{n_const}", arr.shape, str(arr.dtype), "const", const=arr)
                n_const += 1
                p.consts.append(t)
                args.append(t)
            else:
                args.append(lookup(a))
        var = b.var
        if var in out_of:
            outs = [p.outputs[out_of[var]]]
        else:
            fields = var.ty.fields if isinstance(var.ty, relax.TupleType) else [var.ty]
            outs = [_Tensor(f"t{idx}_{k}", tuple(int(d) for d in f.shape), str(f.dtype), "act")
                    for k, f in enumerate(fields)]
            live = [x for x in live if last_use.get(x[2], -1) >= idx]  # free what died
            for t in outs:
                place(t, var)
        env[var] = outs if isinstance(var.ty, relax.TupleType) else outs[0]
        p.calls.append(_Call(str(b.value.args[0].name_hint), [*args, *outs]))
    # An output no kernel writes (the graph returns an input, or one tensor twice) is copied.
    for i, v in enumerate(out_vars):
        src = lookup(v)
        if src is not p.outputs[i]:
            p.calls.append(_Call(COPY, [src, p.outputs[i]]))
    return p


_PRELUDE = """\
/* Generated by qcompiler: the network's driver. Kernels are TVM-generated (kernels.o). */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "model.h"

__TVM_ABI__
/* Host hooks TVM's objects call: an error setter, and the workspace allocator for kernel
   scratch (a stack in the caller's workspace: TVM frees in reverse order of allocation). */
static uint8_t *qc_scratch_base;
static size_t qc_scratch_top;
static void *qc_alloc(int device_type, int device_id, uint64_t nbytes, int code, int bits) {
  (void)device_type; (void)device_id; (void)code; (void)bits;
  size_t start = (qc_scratch_top + QC_ALIGN - 1) / QC_ALIGN * QC_ALIGN;
  if (start + nbytes > QC_SCRATCH_BYTES) {
    static char msg[96];
    unsigned long long a = nbytes, b = start, c = QC_SCRATCH_BYTES;
    int k = 0;
    const char *head = "kernel scratch exceeds the plan: bytes/at/cap ";
    while (*head) msg[k++] = *head++;
    unsigned long long v[3] = {a, b, c};
    for (int i = 0; i < 3; ++i) {  /* no snprintf: the library needs nothing from stdio */
      char d[24]; int n = 0;
      do { d[n++] = (char)('0' + v[i] % 10); v[i] /= 10; } while (v[i]);
      while (n) msg[k++] = d[--n];
      msg[k++] = i < 2 ? '/' : 0;
    }
    const char *m = msg;
    TVMFFIErrorSetRaisedFromCStrParts("WorkspaceError", &m, 1);
    return NULL;
  }
  qc_scratch_top = start + nbytes;
  return qc_scratch_base + start;
}
static int qc_free(int device_type, int device_id, void *ptr) {
  (void)device_type; (void)device_id;
  qc_scratch_top = (size_t)((uint8_t *)ptr - qc_scratch_base);
  return 0;
}
void *(*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int) = qc_alloc;
int (*__TVMBackendFreeWorkspace)(int, int, void *) = qc_free;

const char *MODEL_PREFIX_last_error(void) { return qc_error; }

"""


def weights_blob(p: Plan) -> bytes:
    """All constants in one aligned blob; each constant's offset is recorded on it."""
    blob = bytearray()
    for t in p.consts:
        t.offset = len(blob)
        blob += np.ascontiguousarray(t.const).tobytes()
        blob += bytes(_align(len(blob)) - len(blob))
    return bytes(blob)


WEIGHTS_ASM = f"""\
  .section .rodata
  .balign {ALIGN}
  .globl qc_weights
qc_weights:
  .incbin "weights.bin"
  .section .note.GNU-stack,"",%progbits
"""


def _tensor_expr(t: _Tensor, data: str) -> str:
    code, bits = _dl_dtype(t.dtype)
    return (f"{{(void *)({data}), {{1, 0}}, {len(t.shape)}, {{{code}, {bits}, 1}}, "
            f"qc_shape_{t.name}, NULL, 0}}")


def generate_c(p: Plan, boundary: list[tuple[str, _Tensor, _Tensor]], prefix: str
               ) -> tuple[str, int]:
    """model.c: constants, shapes, the int entry and the float entry.

    `boundary` lists (kernel, from, to) for the float entry: quantize each input, dequantize
    each output (from/to are the float and integer tensors)."""
    prelude = _PRELUDE.replace("__TVM_ABI__", TVM_ABI.read_text())
    out = [f"#define QC_ALIGN {ALIGN}\n#define QC_SCRATCH_BYTES {_align(p.scratch_bytes)}\n"
           + prelude.replace("MODEL_PREFIX", prefix)]
    kernels = sorted({c.kernel for c in p.calls if c.kernel != COPY}
                     | {k for k, _, _ in boundary})
    out += [f"extern int32_t __tvm_ffi_{k}(void *, const qc_Any *, int32_t, qc_Any *);"
            for k in kernels]
    seen: set[str] = set()
    tensors = [*p.inputs, *p.outputs, *p.consts,
               *[a for c in p.calls for a in c.args],
               *[t for _, a, b in boundary for t in (a, b)]]
    for t in tensors:
        if t.name in seen:
            continue
        seen.add(t.name)
        dims = ", ".join(str(d) for d in t.shape) or "1"
        out.append(f"static int64_t qc_shape_{t.name}[] = {{{dims}}};")

    out.append("extern const uint8_t qc_weights[];  /* weights.bin, placed by weights.S */")

    def data_of(t: _Tensor) -> str:
        if t.kind == "const":
            return f"qc_weights + {t.offset}"
        if t.kind in ("input", "output"):
            return f"{t.name}_a"
        return f"ws + {t.offset}"

    def stage(ts: list[_Tensor], at: int, body: list[str]) -> int:
        """TVM's kernels assume 64-byte aligned data: a caller's unaligned buffer goes
        through an aligned copy in the workspace."""
        for t in ts:
            ctype = C_TYPES[t.dtype]
            q = "const " if t.kind == "input" else ""
            body.append(f"  {q}{ctype} *{t.name}_a = ((uintptr_t){t.name} % 64) ? "
                        f"({ctype} *)(ws + {at}) : {t.name};")
            if t.kind == "input":
                body.append(f"  if ({t.name}_a != {t.name}) memcpy((void *){t.name}_a, "
                            f"{t.name}, {t.nbytes});")
            at += _align(t.nbytes)
        return at

    def unstage(ts: list[_Tensor], body: list[str]) -> None:
        for t in ts:
            body.append(f"  if ({t.name}_a != {t.name}) memcpy({t.name}, {t.name}_a, "
                        f"{t.nbytes});")

    def params(kind: str, ts: list[_Tensor], const: bool) -> str:
        q = "const " if const else ""
        return ", ".join(f"{q}{kind or C_TYPES[t.dtype]} *{t.name}" for t in ts)

    sig_in = params("", p.inputs, True)
    sig_out = params("", p.outputs, False)
    body = ["  uint8_t *ws = (uint8_t *)workspace;",
            f"  qc_scratch_base = ws + {p.act_bytes}; qc_scratch_top = 0;"]
    staging = p.act_bytes + _align(p.scratch_bytes)
    float_base = stage([*p.inputs, *p.outputs], staging, body)
    for i, c in enumerate(p.calls):
        if c.kernel == COPY:
            src, dst = c.args
            body.append(f"  memcpy((void *)({data_of(dst)}), {data_of(src)}, {dst.nbytes});")
            continue
        ts = ", ".join(_tensor_expr(a, data_of(a)) for a in c.args)
        body.append(f"  {{ qc_DLTensor t[] = {{{ts}}};  /* {c.kernel} */\n"
                    f"    if (qc_call(__tvm_ffi_{c.kernel}, t, {len(c.args)})) return {i + 1}; }}")
    unstage(p.outputs, body)
    out.append(f"int {prefix}_run({sig_in}, {sig_out}, void *workspace) {{\n"
               + "\n".join(body) + "\n  return 0;\n}")
    # Float entry: quantize into the top of the workspace, run, dequantize.
    f_in = [a for _, a, _ in boundary if a.kind == "input"]
    f_out = [b for _, _, b in boundary if b.kind == "output"]
    fbody = ["  uint8_t *ws = (uint8_t *)workspace;"]
    offset = stage([*f_in, *f_out], float_base, fbody)
    qnames = {}
    for k, a, b in boundary:
        for t in (a, b):
            if t.kind == "act" and t.name not in qnames:
                qnames[t.name] = offset
                t.offset = offset
                offset += _align(t.nbytes)
    for k, a, b in boundary:
        if a.kind == "input":
            fbody.append(f"  {{ qc_DLTensor t[] = {{{_tensor_expr(a, data_of(a))}, "
                         f"{_tensor_expr(b, data_of(b))}}};\n"
                         f"    if (qc_call(__tvm_ffi_{k}, t, 2)) return -1; }}")
    ins = ", ".join(f"({C_TYPES[t.dtype]} *)(ws + {t.offset})" for _, a, t in boundary
                    if a.kind == "input")
    outs = ", ".join(f"({C_TYPES[a.dtype]} *)(ws + {a.offset})" for _, a, b in boundary
                     if b.kind == "output")
    fbody.append(f"  if ({prefix}_run({ins}, {outs}, workspace)) return -1;")
    for k, a, b in boundary:
        if b.kind == "output":
            fbody.append(f"  {{ qc_DLTensor t[] = {{{_tensor_expr(a, data_of(a))}, "
                         f"{_tensor_expr(b, data_of(b))}}};\n"
                         f"    if (qc_call(__tvm_ffi_{k}, t, 2)) return -1; }}")
    unstage(f_out, fbody)
    out.append(f"int {prefix}_run_float({params('float', f_in, True)}, "
               f"{params('float', f_out, False)}, void *workspace) {{\n"
               + "\n".join(fbody) + "\n  return 0;\n}")
    out.append(_array_entries(p, prefix))
    return "\n\n".join(out) + "\n", offset


def _array_entries(p: Plan, prefix: str) -> str:
    """`<prefix>_run_v` and `<prefix>_run_float_v`: the same entries with arrays of pointers,
    for drivers that handle any number of inputs and outputs (the example runner)."""
    out = []
    for suffix, float_io in (("", False), ("_float", True)):
        args = [f"({'float' if float_io else C_TYPES[t.dtype]} *)"
                f"{'in' if t.kind == 'input' else 'out'}[{i}]"
                for ts in (p.inputs, p.outputs) for i, t in enumerate(ts)]
        out.append(f"int {prefix}_run{suffix}_v(const void *const *in, void *const *out, "
                   f"void *workspace) {{\n  return {prefix}_run{suffix}({', '.join(args)}, "
                   "workspace);\n}")
    return "\n\n".join(out)


def generate_header(p: Plan, meta: dict, prefix: str, workspace: int) -> str:
    P = prefix.upper()
    lines = [f"/* {prefix}.h: generated by qcompiler. Plain C ABI, no runtime. */",
             f"#ifndef {P}_H_", f"#define {P}_H_", "#include <stdint.h>", "",
             f"/* Bytes of the workspace every call needs (aligned to {ALIGN} bytes). */",
             f"#define {P}_WORKSPACE_BYTES {workspace}",
             f"#define {P}_NUM_INPUTS {len(p.inputs)}", f"#define {P}_NUM_OUTPUTS {len(p.outputs)}"]
    for kind, ts, specs in (("INPUT", p.inputs, meta["inputs"]),
                            ("OUTPUT", p.outputs, meta["outputs"])):
        for i, (t, spec) in enumerate(zip(ts, specs)):
            n = f"{P}_{kind}_{i}"
            lines += [f"/* {kind.lower()} {i}: {spec['name']} */",
                      f"#define {n}_TYPE {C_TYPES[t.dtype]}",
                      f"#define {n}_NDIM {len(t.shape)}",
                      f"#define {n}_SHAPE {{{', '.join(map(str, t.shape))}}}",
                      f"#define {n}_SIZE {int(np.prod(t.shape))}",
                      f"#define {n}_SCALE {float(np.float32(spec['scale']))!r}f",
                      f"#define {n}_ZERO_POINT {spec['zero_point']}"]
    sizes = [int(np.prod(t.shape)) for t in p.outputs]
    lines += [f"#define {P}_OUTPUT_BYTES {{{', '.join(str(t.nbytes) for t in p.outputs)}}}",
              f"#define {P}_OUTPUT_FLOAT_BYTES {{{', '.join(str(4 * n) for n in sizes)}}}"]
    ins = ", ".join(f"const {C_TYPES[t.dtype]} *{t.name}" for t in p.inputs)
    outs = ", ".join(f"{C_TYPES[t.dtype]} *{t.name}" for t in p.outputs)
    fins = ", ".join(f"const float *{t.name}" for t in p.inputs)
    fouts = ", ".join(f"float *{t.name}" for t in p.outputs)
    lines += ["", "#ifdef __cplusplus", 'extern "C" {', "#endif",
              "/* Quantized in, quantized out (the scales and zero points above). 0 on success,",
              f"   else the 1-based index of the kernel that failed ({prefix}_last_error() says why).",
              f"   workspace: {P}_WORKSPACE_BYTES bytes, aligned to {ALIGN}; not thread-safe:",
              "   one call at a time per process. */",
              f"int {prefix}_run({ins}, {outs}, void *workspace);",
              "/* Float in, float out: quantizes the inputs and dequantizes the outputs. */",
              f"int {prefix}_run_float({fins}, {fouts}, void *workspace);",
              "/* The same two with arrays of pointers (in: one per input, out: per output). */",
              f"int {prefix}_run_v(const void *const *in, void *const *out, void *workspace);",
              f"int {prefix}_run_float_v(const void *const *in, void *const *out, "
              "void *workspace);",
              "/* The message of the last kernel error. */",
              f"const char *{prefix}_last_error(void);",
              "#ifdef __cplusplus", "}", "#endif", f"#endif  /* {P}_H_ */", ""]
    return "\n".join(lines)


def _boundary(lowered: tvm.IRModule, p: Plan) -> list[tuple[str, _Tensor, _Tensor]]:
    """(kernel, from, to) of the float entry's quantize and dequantize calls, in order."""
    out = []
    n_in = n_out = 0
    for blk in lowered["main"].body.blocks:
        for b in blk.bindings:
            if op_name(b.value) != "relax.call_tir":
                continue
            gv = b.value.args[0]
            kind = str(lowered[gv].attrs["qcompiler.op"])
            shape = shape_of(b.var)
            if kind == "quantize":
                q = p.inputs[n_in]
                out.append((gv.name_hint, _Tensor(f"in{n_in}", shape, "float32", "input"),
                            _Tensor(f"q{q.name}", shape, q.dtype, "act")))
                n_in += 1
            elif kind == "dequantize":
                q = p.outputs[n_out]
                out.append((gv.name_hint, _Tensor(f"q{q.name}", shape, q.dtype, "act"),
                            _Tensor(f"out{n_out}", shape, "float32", "output")))
                n_out += 1
    return out


def _run(cmd: list[str], what: str, hint: str, cwd: Path) -> None:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError:
        raise TargetError(f"{what}: {cmd[0]} not found; install it: {hint}") from None
    if res.returncode != 0:
        msg = (res.stderr.strip() or res.stdout.strip()).splitlines()
        if "No module named ziglang" in res.stderr:
            raise TargetError(f"{what}: the zig cross compiler is missing; install it: {hint}")
        raise TargetError(f"{what} failed: {msg[-1] if msg else res.returncode}")


RUNNER = Path(__file__).parent / "c" / "run_model.c"
TVM_ABI = Path(__file__).parent / "c" / "tvm_abi.inc"  # ABI types and host hooks, shared


def build_standalone(compiled, folder: Path, prefix: str = "model") -> dict:  # noqa: ANN001
    """Write libmodel.a, libmodel.so, model.h and the example runner into `folder`."""
    target = compiled.target
    lowered = relax.transform.LegalizeOps()(compiled.quantized)
    p = plan(lowered)
    boundary = _boundary(lowered, p)
    blob = weights_blob(p)  # places the constants: before the code that points at them
    code, workspace = generate_c(p, boundary, prefix)  # places the boundary tensors
    meta = graph_meta(compiled.quantized)
    names = sorted({c.kernel for c in p.calls if c.kernel != COPY}
                   | {k for k, _, _ in boundary})
    kernels = tvm.IRModule({n: lowered[n].with_attr("global_symbol", n) for n in names})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with tvm.transform.PassContext(opt_level=3):
            tvm.tirx.build(kernels, compiled.tvm_target).write_to_file(str(tmp / "kernels.o"))
        (tmp / "weights.bin").write_bytes(blob)
        (tmp / "weights.S").write_text(WEIGHTS_ASM)
        (tmp / f"{prefix}.c").write_text(code)
        (tmp / f"{prefix}.h").write_text(generate_header(p, meta, prefix, workspace))
        cc = list(target.cc)
        flags = ["-O2", "-fPIC", "-std=c11", "-ffp-contract=off"]
        hint = target.install_hint
        _run([*cc, *flags, "-c", f"{prefix}.c", "-o", "driver.o"], "compiling the C driver",
             hint, tmp)
        _run([*cc, "-c", "weights.S", "-o", "weights.o"], "assembling the weights", hint, tmp)
        objs = ["driver.o", "weights.o", "kernels.o"]
        ar = [*cc[:cc.index("cc")], "ar"] if "ziglang" in cc else ["ar"]
        _run([*ar, "rcs", f"lib{prefix}.a", *objs], "archiving", hint, tmp)
        _run([*cc, "-shared", "-o", f"lib{prefix}.so", *objs, "-lm"], "linking", hint, tmp)
        shutil.copy(RUNNER, tmp / "run_model.c")
        static = ["-static"] if not target.runs_natively else []
        _run([*cc, "-O2", "-std=c11", *static, "-I.", "run_model.c", f"lib{prefix}.a", "-lm",
              "-o", "run_model"], "building the example runner", hint, tmp)
        for name in (f"lib{prefix}.a", f"lib{prefix}.so", f"{prefix}.h", "run_model"):
            shutil.copy(tmp / name, folder / name)
    return {"workspace_bytes": workspace, "activation_bytes": p.act_bytes,
            "scratch_bytes": _align(p.scratch_bytes), "kernels": len(names),
            "weights_bytes": sum(t.nbytes for t in p.consts)}
