"""Test helpers that are not part of the installed compiler: random graphs, the ONNX zoo."""
