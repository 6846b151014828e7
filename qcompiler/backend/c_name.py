"""The C library's name: `NAME.h`, `libNAME.a`, `NAME_run`, `UPPERNAME_WORKSPACE_BYTES`."""
from __future__ import annotations

import re

from qcompiler.errors import QCompileError

_C_KEYWORDS = frozenset((
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while"))  # C11's _Keywords fail the pattern


def check_name(name: str) -> None:
    """A name every symbol of the library can start with: a C identifier, not reserved."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise QCompileError(f"name {name!r}: give a C identifier (a letter, then letters, "
                            "digits or _)")
    if name in _C_KEYWORDS:
        raise QCompileError(f"name {name!r} is a C keyword: choose another")


def name_from_stem(stem: str) -> str:
    """The default name: the model file's stem with every other character made `_`."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem).strip("_") or "model"
    return name if name[0].isalpha() else f"m_{name}"
