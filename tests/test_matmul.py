"""Projections: float32 is the plain dot; bf16 multiplies in bf16 and sums in float32 both ways."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t0x.models.matmul import project


def _operands(kernel_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(3, 5, kernel_shape[0])), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
    return x, kernel


def _dots(fn, *args):
    """(operand dtypes, preferred dtype) of every dot_general in fn's jaxpr."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                dtypes = tuple(str(v.aval.dtype) for v in eqn.invars)
                found.append((dtypes, str(eqn.params["preferred_element_type"])))
            for sub in jax.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr)
    return found


def test_float32_is_the_plain_dot():
    x, kernel = _operands((16, 4, 6))
    np.testing.assert_array_equal(project(x, kernel, jnp.float32), jnp.tensordot(x, kernel, 1))
    g = jax.grad(lambda x, k: jnp.sum(project(x, k, jnp.float32) ** 2), (0, 1))(x, kernel)
    ref = jax.grad(lambda x, k: jnp.sum(jnp.tensordot(x, k, 1) ** 2), (0, 1))(x, kernel)
    for a, b in zip(g, ref):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernel_shape", [(64, 24), (64, 4, 6)])
def test_bfloat16_matches_float32_to_bf16_rounding(kernel_shape):
    x, kernel = _operands(kernel_shape)
    loss = lambda dtype: (
        lambda x, k: jnp.sum(  # noqa: E731
            project(x, k, dtype).astype(jnp.float32) * jnp.cos(jnp.tensordot(x, k, 1))
        )
    )
    y16, y32 = project(x, kernel, jnp.bfloat16), project(x, kernel, jnp.float32)
    assert y16.dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(y32)))
    np.testing.assert_allclose(y16.astype(jnp.float32), y32, atol=2e-2 * scale)
    g16 = jax.grad(loss(jnp.bfloat16), (0, 1))(x, kernel)
    g32 = jax.grad(loss(jnp.float32), (0, 1))(x, kernel)
    for a, b in zip(g16, g32):
        assert a.dtype == jnp.float32  # the cotangents of the float32 inputs
        np.testing.assert_allclose(a, b, atol=2e-2 * float(jnp.max(jnp.abs(b))))


def test_bfloat16_backward_keeps_bf16_operands():
    """All three dots take bf16 operands and accumulate in float32; a plain
    `preferred_element_type` dot would be differentiated into float32-operand dots."""
    x, kernel = _operands((64, 24))

    def loss(x, k):
        return jnp.sum(project(x, k, jnp.bfloat16).astype(jnp.float32) ** 2)

    dots = _dots(jax.grad(loss, (0, 1)), x, kernel)
    assert len(dots) == 3
    assert all(d == (("bfloat16", "bfloat16"), "float32") for d in dots), dots

    def naive(x, k):
        y = jnp.dot(
            x.astype(jnp.bfloat16), k.astype(jnp.bfloat16), preferred_element_type=jnp.float32
        )
        return jnp.sum(y.astype(jnp.bfloat16).astype(jnp.float32) ** 2)

    assert any("float32" in operands for operands, _ in _dots(jax.grad(naive, (0, 1)), x, kernel))
