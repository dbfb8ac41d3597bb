"""Testing utilities: finite-difference derivative checks and pytree assertions.

Importing this module never imports hypothesis; strategies that need it import it lazily.
"""

from ._assert import assert_trees_allclose as assert_trees_allclose
from ._assert import default_tolerance as default_tolerance
from ._check import CheckReport as CheckReport
from ._check import ComplexStepWarning as ComplexStepWarning
from ._check import DerivativeCheckError as DerivativeCheckError
from ._check import NonDifferentiablePointError as NonDifferentiablePointError
from ._check import check_grads as check_grads
from ._check import check_jvp as check_jvp
from ._check import check_vjp as check_vjp
from ._check import finite_difference_step as finite_difference_step

__all__ = [
    # finite-difference checks
    "check_grads",
    "check_jvp",
    "check_vjp",
    "finite_difference_step",
    "NonDifferentiablePointError",
    "ComplexStepWarning",
    # failure reports
    "DerivativeCheckError",
    "CheckReport",
    # pytree assertions
    "assert_trees_allclose",
    "default_tolerance",
]
