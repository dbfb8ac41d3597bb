"""JAX's ``jax.random``: keyed, splittable random numbers with the same streams as JAX.

Keys are ``torch.uint32`` tensors of shape ``(2,)`` (JAX's raw threefry2x32 key data); every
sampler is a pure function of its key, so results are reproducible under ``vmap``, ``jit``, on
any device, and equal to JAX's for the same key, shape and dtype: bit for bit for keys, ``bits``,
integer draws and ``uniform``, within a few ulps for samplers that apply ``log``/``erfinv``/...
(see the "Random numbers" guide).

Example:
    >>> import torch
    >>> from functorch_utils import random, vmap
    >>> key = random.key(0)
    >>> k1, k2 = random.split(key)
    >>> random.uniform(k1, (3,))
    tensor([0.8423, 0.1824, 0.2272])
    >>> per_example = vmap(lambda k: random.normal(k, (2,)))(random.split(k2, 4))
    >>> per_example.shape
    torch.Size([4, 2])
"""

from ._random import PRNGKey as PRNGKey
from ._random import bernoulli as bernoulli
from ._random import beta as beta
from ._random import bits as bits
from ._random import categorical as categorical
from ._random import choice as choice
from ._random import clone as clone
from ._random import dirichlet as dirichlet
from ._random import exponential as exponential
from ._random import fold_in as fold_in
from ._random import gamma as gamma
from ._random import gumbel as gumbel
from ._random import key as key
from ._random import key_data as key_data
from ._random import key_impl as key_impl
from ._random import laplace as laplace
from ._random import loggamma as loggamma
from ._random import logistic as logistic
from ._random import multivariate_normal as multivariate_normal
from ._random import normal as normal
from ._random import permutation as permutation
from ._random import poisson as poisson
from ._random import randint as randint
from ._random import split as split
from ._random import truncated_normal as truncated_normal
from ._random import uniform as uniform
from ._random import wrap_key_data as wrap_key_data
from ._random_extra import ball as ball
from ._random_extra import binomial as binomial
from ._random_extra import cauchy as cauchy
from ._random_extra import chisquare as chisquare
from ._random_extra import double_sided_maxwell as double_sided_maxwell
from ._random_extra import f as f
from ._random_extra import generalized_normal as generalized_normal
from ._random_extra import geometric as geometric
from ._random_extra import lognormal as lognormal
from ._random_extra import maxwell as maxwell
from ._random_extra import multinomial as multinomial
from ._random_extra import orthogonal as orthogonal
from ._random_extra import pareto as pareto
from ._random_extra import rademacher as rademacher
from ._random_extra import rayleigh as rayleigh
from ._random_extra import t as t
from ._random_extra import triangular as triangular
from ._random_extra import wald as wald
from ._random_extra import weibull_min as weibull_min

__all__ = [
    # keys
    "key",
    "PRNGKey",
    "key_data",
    "wrap_key_data",
    "key_impl",
    "split",
    "fold_in",
    "clone",
    # bits and uniform draws
    "bits",
    "uniform",
    "randint",
    # continuous distributions
    "normal",
    "truncated_normal",
    "multivariate_normal",
    "exponential",
    "laplace",
    "logistic",
    "gumbel",
    "gamma",
    "loggamma",
    "beta",
    "dirichlet",
    "cauchy",
    "lognormal",
    "chisquare",
    "t",
    "f",
    "pareto",
    "weibull_min",
    "rayleigh",
    "maxwell",
    "double_sided_maxwell",
    "wald",
    "triangular",
    "generalized_normal",
    "ball",
    "orthogonal",
    # discrete distributions
    "bernoulli",
    "categorical",
    "poisson",
    "permutation",
    "choice",
    "rademacher",
    "geometric",
    "binomial",
    "multinomial",
]
