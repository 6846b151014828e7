"""4-bit weights stored two per byte ("int4x2"), and the way back.

A 4-bit layer's weights are in [-7, 7] (`passes/quantize.py`); one per byte would spend half of
the library's weight bytes on copies of the sign bit. They are stored as 4-bit two's
complement nibbles, in the C order of the int8 tensor the kernel reads (the portable layout,
or the dot-product kernels' packed `wp`, `qcompiler.numerics.weight_layout`):

    byte[i] = (w[2i] & 0xF) | (w[2i + 1] & 0xF) << 4        (an odd count pads w[n] = 0)

Element 2i is the low nibble. A kernel unpacks in integers, `w = (nib ^ 8) - 8` (the sign
extension of a 4-bit value), into the int8 tensor its compute reads (`kernels.weight_operand`);
the reference calls `unpack`. -8 is representable and round-trips, although the quantizer never
makes it; values outside [-8, 7] are refused. A kernel stored so says it in its attributes
(`storage_attrs`): `weight_storage: "int4x2"` and `nibble_shape`, the int8 shape.
"""
from __future__ import annotations

import numpy as np

STORAGE = "int4x2"
LOW, HIGH = -8, 7  # what a nibble holds


def packed_size(shape: tuple) -> int:
    """Bytes for an int8 tensor of this shape: two elements per byte, rounded up."""
    return (int(np.prod(shape, dtype=np.int64)) + 1) // 2


def pack(w: np.ndarray) -> np.ndarray:
    """int8 values in [-8, 7], any shape -> uint8 (packed_size,), element 2i in the low nibble."""
    flat = np.asarray(w).reshape(-1)
    if flat.size and (flat.min() < LOW or flat.max() > HIGH):
        raise ValueError(f"4-bit storage holds [{LOW}, {HIGH}], got values in "
                         f"[{flat.min()}, {flat.max()}]")
    nib = np.zeros(2 * packed_size(flat.shape), np.uint8)
    nib[:flat.size] = flat.astype(np.int8).view(np.uint8) & 0xF
    return nib[0::2] | (nib[1::2] << 4)


def unpack(packed: np.ndarray, shape: tuple) -> np.ndarray:
    """The inverse of `pack`: the int8 tensor of `shape` (the padding nibble dropped)."""
    n = int(np.prod(shape, dtype=np.int64))
    if packed.dtype != np.uint8 or packed.size != packed_size(tuple(shape)):
        raise ValueError(f"{packed.size} bytes of {packed.dtype} do not hold {n} nibbles")
    nib = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(-1)[:n].astype(np.int8)
    return ((nib ^ 8) - 8).astype(np.int8).reshape(shape)


def storage_attrs(shape: tuple) -> dict:
    """The kernel attributes of nibble storage for int8 weights of `shape`."""
    return {"weight_storage": STORAGE, "nibble_shape": [int(d) for d in shape]}


def is_nibbles(attrs: dict) -> bool:
    return attrs.get("weight_storage") == STORAGE


def stored_weights(w: np.ndarray, attrs: dict) -> np.ndarray:
    """A kernel's weight operand as the int8 tensor its compute reads."""
    return unpack(w, tuple(attrs["nibble_shape"])) if is_nibbles(attrs) else w
