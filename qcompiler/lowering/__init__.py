"""How each float op of the graph becomes integer kernels (the quantize pass's lowerings).

`passes/quantize.py` walks the float graph and picks a lowering per op from its tables:
  context.py        the shared state (builder, values, weights) and kernel emission, requantize
  values.py         `Value`, a quantized tensor (or a float one not yet quantized)
  weights.py        weight quantization, bias and multipliers, bias correction, accumulator check
  conv.py           conv2d, conv2d_transpose, dense, residual add (the matched composites)
  spatial.py        max/average pooling, mean, resize, pad
  tables.py         activations as table gathers (sigmoid, tanh, (P/Leaky)ReLU, HardSwish, ...),
                    elementwise product
  moves.py          reshape, flatten, permute_dims, strided_slice, split, concat, ReLU/Clip
  float_islands.py  the float fallback of an op with no integer kernel
"""
