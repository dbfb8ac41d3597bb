"""functorch_utils: JAX-style functional transforms for PyTorch, over pytrees of tensors.

Example:
    >>> import torch
    >>> import functorch_utils as fu
    >>> fu.grad(lambda p: (p["w"] ** 2).sum())({"w": torch.tensor([1.0, 2.0])})
    {'w': tensor([2., 4.])}
"""

from . import flatten_util as flatten_util
from . import tree_util as tree_util
from ._grad import grad as grad
from ._grad import value_and_grad as value_and_grad
from ._jac import hessian as hessian
from ._jac import jacfwd as jacfwd
from ._jac import jacobian as jacobian
from ._jac import jacrev as jacrev
from ._jvp_vjp import jvp as jvp
from ._jvp_vjp import linearize as linearize
from ._jvp_vjp import vjp as vjp

__version__ = "0.1.0.dev0"

__all__ = [
    # reverse mode
    "grad",
    "value_and_grad",
    "vjp",
    # forward mode
    "jvp",
    "linearize",
    # Jacobians and curvature
    "jacrev",
    "jacfwd",
    "jacobian",
    "hessian",
    # sub-modules
    "flatten_util",
    "tree_util",
]
