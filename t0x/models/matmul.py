"""Projections in the activation dtype with float32 accumulation (every model family).

Vocabulary:
  project(x, kernel, dtype)  x [..., d] times kernel [d, *features] -> [..., *features]: the
                             last axis of x contracted with the first of the kernel (a
                             `jnp.tensordot(x, kernel, axes=1)`), both operands cast to `dtype`.

Invariants:
  - float32 is the plain dot (`jnp.tensordot`), forward and backward, differentiated by JAX.
  - Any lower dtype (bfloat16) multiplies in that dtype and accumulates in float32
    (`preferred_element_type`), forward and backward: all three dots of a projection (the
    output, the input gradient, the kernel gradient) take low-precision operands and
    round their float32 sums once, to `dtype`. Without the custom gradient JAX would
    differentiate the float32-accumulating dot into dots with one float32 operand (the
    cotangent), which XLA runs as float32 dots; with it a CPU with bf16 dot instructions
    (AVX512-BF16, AMX) runs all three in bf16 (2x the float32 rate measured in
    BENCHMARKS.md), and a TPU's MXU does what it does anyway (bf16 products, float32 sums).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def project(x: Array, kernel: Array, dtype) -> Array:
    """x [..., d] @ kernel [d, *features] in `dtype`; low dtypes accumulate in float32."""
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if jnp.dtype(dtype) == jnp.float32:
        return jnp.tensordot(x, kernel, axes=1)
    return _low_precision_project(x, kernel)


def _dot(a: Array, b: Array, contract: tuple, out_dtype) -> Array:
    dims = (contract, ((), ()))
    return lax.dot_general(a, b, dims, preferred_element_type=jnp.float32).astype(out_dtype)


@jax.custom_vjp
def _low_precision_project(x: Array, kernel: Array) -> Array:
    return _dot(x, kernel, ((x.ndim - 1,), (0,)), x.dtype)


def _forward(x, kernel):
    return _low_precision_project(x, kernel), (x, kernel)


def _backward(residuals, g):
    x, kernel = residuals
    lead = x.ndim - 1  # the batch-like axes of x (and of g)
    g = g.astype(x.dtype)
    features = tuple(range(lead, g.ndim))
    dx = _dot(g, kernel, (features, tuple(range(1, kernel.ndim))), x.dtype)
    dkernel = _dot(x, g, (tuple(range(lead)), tuple(range(lead))), kernel.dtype)
    return dx, dkernel


_low_precision_project.defvjp(_forward, _backward)
