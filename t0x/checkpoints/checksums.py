"""Content checksums of array trees: written with a checkpoint, verified when it is read.

Vocabulary:
  path       an array's place in the tree as `a/b/c` (dict keys, attribute names and
             sequence indices joined by "/"), e.g. `params/encoder/layers_0/mlp/wo/kernel`.
  checksum   of one array: two 32-bit words over its raw bits (each element's bits as an
             unsigned integer of its width, widened to uint32): their sum and their sum
             weighted by a hash of the element's position, both modulo 2**32, written as 16
             hex digits. Any single changed element changes it; so do most swaps.
  digest     {path: checksum} of a whole tree.

Invariants:
  - The checksum depends on the values only, not on how an array is sharded or on which
    host computes it: on device it is one jitted reduction over the global array (integer
    additions modulo 2**32, exact and order-independent), on host the same arithmetic in
    numpy; both give the same digits.
  - Computing it reads each array once (no host copy of a sharded array); cost is small next
    to writing the checkpoint.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

_MULT = np.uint32(2654435761)  # Knuth's multiplicative hash constant


def path_str(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _words(x, xp):
    """The element bits of `x` as uint32 (numpy or jax.numpy), same shape (64-bit: a trailing
    axis of 2). No reshape, so a sharded array stays sharded."""
    dtype = np.dtype(x.dtype)
    if dtype == np.bool_:
        return x.astype(xp.uint32)
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[dtype.itemsize]
    if xp is jnp:
        return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    bits = np.ascontiguousarray(x).view(unsigned)
    if dtype.itemsize == 8:
        bits = bits.reshape(x.shape + (2,))
    return bits.astype(np.uint32)


def _positions(shape, xp):
    """Row-major position of every element, as uint32 (modulo 2**32)."""
    if xp is np:
        return np.arange(int(np.prod(shape)), dtype=np.uint64).astype(np.uint32).reshape(shape)
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for dim in reversed(range(len(shape))):
        iota = jax.lax.broadcasted_iota(jnp.uint32, shape, dim)
        index = index + iota * jnp.uint32(stride % 2**32)
        stride *= shape[dim]
    return index


def _checksum(x, xp):
    words = _words(x, xp)
    weights = _positions(words.shape, xp) * xp.uint32(_MULT) + xp.uint32(1)
    return xp.stack([xp.sum(words, dtype=xp.uint32), xp.sum(words * weights, dtype=xp.uint32)])


def _format(pair) -> str:
    a, b = (int(v) for v in np.asarray(pair))
    return f"{a:08x}{b:08x}"


def tree_digest(tree: Any) -> dict[str, str]:
    """{path: checksum} of every array leaf; device arrays are reduced where they live."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    device = [(path, leaf) for path, leaf in flat if isinstance(leaf, jax.Array)]
    host = [(path, leaf) for path, leaf in flat if not isinstance(leaf, jax.Array)]
    out = {path_str(p): _format(_checksum(np.asarray(leaf), np)) for p, leaf in host}
    # one call per array: leaves may live on different device sets (e.g. a step counter on
    # one device, weights on a mesh); dispatches are asynchronous, fetched once at the end
    sums = [_device_checksum(leaf) for _, leaf in device]
    for (path, _), pair in zip(device, jax.device_get(sums)):
        out[path_str(path)] = _format(pair)
    return out


@jax.jit
def _device_checksum(x):
    return _checksum(x, jnp)


def mismatches(digest: Mapping[str, str], expected: Mapping[str, str]) -> list[str]:
    """Paths in `digest` whose checksum differs from `expected` (paths absent there: skipped)."""
    return sorted(p for p, c in digest.items() if p in expected and expected[p] != c)
