"""How each float op of the graph becomes integer kernels (the quantize pass's lowerings)."""
