"""JAX's ``jax.lax`` control flow, as eager loops that every transform sees through.

``scan``, ``fori_loop``, ``while_loop``, ``cond``, ``switch``, ``map`` and ``associative_scan``
with JAX's signatures, plus the collectives and ``stop_gradient`` as ``jax.lax`` has them.

Example:
    >>> import torch
    >>> from functorch_utils import grad, lax
    >>> def last(w):  # h <- w * h + 1, three times: w**2 + w + 1
    ...     h, _ = lax.scan(lambda h, x: (w * h + x, None), 0.0, torch.ones(3))
    ...     return h
    >>> grad(last)(torch.tensor(0.5))
    tensor(2.)
"""

from ._collectives import all_gather as all_gather
from ._collectives import axis_index as axis_index
from ._collectives import pmax as pmax
from ._collectives import pmean as pmean
from ._collectives import pmin as pmin
from ._collectives import psum as psum
from ._lax import associative_scan as associative_scan
from ._lax import cond as cond
from ._lax import fori_loop as fori_loop
from ._lax import map as map
from ._lax import scan as scan
from ._lax import switch as switch
from ._lax import while_loop as while_loop
from ._remat import stop_gradient as stop_gradient

__all__ = [
    # loops
    "scan",
    "map",
    "fori_loop",
    "while_loop",
    "associative_scan",
    # branches
    "cond",
    "switch",
    # collectives over named vmap axes
    "psum",
    "pmean",
    "pmax",
    "pmin",
    "all_gather",
    "axis_index",
    # gradient control
    "stop_gradient",
]
