"""Parameter shapes and logical axes without allocating anything (any family).

`abstract_params_with_axes(init_boxed)` runs a family's boxed initialiser under
`jax.eval_shape` and returns (a tree of `jax.ShapeDtypeStruct`, the matching tree of logical
`PartitionSpec`s such as `PartitionSpec('vocab', 'embed')`). The random key is made inside
the traced function, so this works under any active mesh, including an ahead-of-time mesh of
TPU devices this machine does not have.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from flax import linen as nn


def unbox_shapes(boxed: Any) -> Any:
    """Unboxed ShapeDtypeStructs; no sharding constraint (they are not arrays), whatever
    mesh is active."""
    return jax.tree.map(
        lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
        boxed,
        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
    )


def abstract_params_with_axes(init_boxed: Callable[[jax.Array], Any]):
    """(params as ShapeDtypeStruct tree, logical PartitionSpec tree) of `init_boxed(rng)`."""
    boxed = jax.eval_shape(lambda: init_boxed(jax.random.key(0)))
    return unbox_shapes(boxed), nn.get_partition_spec(boxed)
