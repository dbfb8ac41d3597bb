"""functorch_utils: JAX-style functional transforms for PyTorch, over pytrees of tensors.

Example:
    >>> import torch
    >>> import functorch_utils as fu
    >>> fu.grad(lambda p: (p["w"] ** 2).sum())({"w": torch.tensor([1.0, 2.0])})
    {'w': tensor([2., 4.])}
"""

from . import distributed as distributed
from . import flatten_util as flatten_util
from . import lax as lax
from . import nn as nn
from . import random as random
from . import tree as tree
from . import tree_util as tree_util
from ._collectives import all_gather as all_gather
from ._collectives import axis_index as axis_index
from ._collectives import pmax as pmax
from ._collectives import pmean as pmean
from ._collectives import pmin as pmin
from ._collectives import psum as psum
from ._custom import custom_gradient as custom_gradient
from ._custom import custom_jvp as custom_jvp
from ._custom import custom_vjp as custom_vjp
from ._grad import grad as grad
from ._grad import value_and_grad as value_and_grad
from ._jac import hessian as hessian
from ._jac import hvp as hvp
from ._jac import jacfwd as jacfwd
from ._jac import jacobian as jacobian
from ._jac import jacrev as jacrev
from ._jit import JitCompileError as JitCompileError
from ._jit import JitFallbackWarning as JitFallbackWarning
from ._jit import JitRecompileWarning as JitRecompileWarning
from ._jit import ShapeDtypeStruct as ShapeDtypeStruct
from ._jit import block_until_ready as block_until_ready
from ._jit import cache_dir as cache_dir
from ._jit import device_put as device_put
from ._jit import disable_jit as disable_jit
from ._jit import eval_shape as eval_shape
from ._jit import jit as jit
from ._jit import named_call as named_call
from ._jit import named_scope as named_scope
from ._jvp_vjp import jvp as jvp
from ._jvp_vjp import linear_transpose as linear_transpose
from ._jvp_vjp import linearize as linearize
from ._jvp_vjp import vjp as vjp
from ._remat import checkpoint as checkpoint
from ._remat import checkpoint_name as checkpoint_name
from ._remat import checkpoint_policies as checkpoint_policies
from ._remat import remat as remat
from ._remat import stop_gradient as stop_gradient
from ._vmap import vmap as vmap

__version__ = "0.1.0.dev0"

__all__ = [
    # reverse mode
    "grad",
    "value_and_grad",
    "vjp",
    # forward mode
    "jvp",
    "linearize",
    "linear_transpose",
    # Jacobians and curvature
    "jacrev",
    "jacfwd",
    "jacobian",
    "hessian",
    "hvp",
    # custom rules, gradient control, memory
    "custom_vjp",
    "custom_jvp",
    "custom_gradient",
    "stop_gradient",
    "checkpoint",
    "checkpoint_name",
    "checkpoint_policies",
    "remat",
    # compilation and shapes
    "jit",
    "disable_jit",
    "block_until_ready",
    "device_put",
    "named_scope",
    "named_call",
    "eval_shape",
    "ShapeDtypeStruct",
    "JitCompileError",
    "JitRecompileWarning",
    "JitFallbackWarning",
    "cache_dir",
    # batching
    "vmap",
    "psum",
    "pmean",
    "pmax",
    "pmin",
    "all_gather",
    "axis_index",
    # sub-modules
    "distributed",
    "flatten_util",
    "lax",
    "nn",
    "random",
    "tree",
    "tree_util",
]
