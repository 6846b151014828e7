"""Relax passes of qcompiler, one per file; each module exposes one `tvm.transform` pass."""
