"""Keep XLA from fusing an array's producer into one of its consumers.

XLA:CPU fuses elementwise producers into their consumers and recomputes them there. When
the consumer walks memory in another order than the producer (a transpose, an overlap-add
from a banded layout), the fused loop can be several times slower than computing the
producer once and reading its result. ``lax.optimization_barrier`` does not prevent this
(XLA expands it before fusion); a conditional does: XLA fuses nothing across one.
"""

from __future__ import annotations

from typing import Callable

import jax
from jax import lax


def unfused(fn: Callable[[jax.Array], jax.Array], x: jax.Array, *, predicate_from: jax.Array | None = None
            ) -> jax.Array:
    """``fn(x)``, computed apart from both the code that made ``x`` and the code that reads the result.

    ``fn`` runs inside a ``lax.cond`` whose two branches are both ``fn``, so the value is always
    ``fn(x)``; the predicate only has to be unknown to the compiler. It is read from
    ``predicate_from`` (default: ``x``); pass a primal value there when ``x`` is a tangent inside
    a JVP rule, so that reverse mode can transpose the conditional (a predicate may not depend on
    a linear value). Under ``vmap`` a batched predicate makes JAX run both branches and select
    (the same value, twice the work).
    """
    source = x if predicate_from is None else predicate_from
    if x.size == 0 or source.size == 0:
        return fn(x)
    return lax.cond(source.ravel()[0] > 0, fn, fn, x)
