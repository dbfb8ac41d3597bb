"""Testing utilities: derivative checks, consistency checks, pytree assertions, strategies.

``functorch_utils.testing.strategies`` holds hypothesis strategies; it is the only part that
imports hypothesis, and only when it is imported itself.

Importing this module never imports hypothesis; strategies that need it import it lazily.

The rooms: ``_report`` (exceptions, warning, the failure report), ``_numerics`` (steps,
references, tolerances, kinks, the matmul-precision pin), ``_problem`` (a function of pytrees as
a function of flat tensor tuples), ``_check`` (the finite-difference checks), ``_consistency``
(step-free identities between transforms), ``_taylor`` (the Taylor-remainder test), ``_assert``
(pytree assertions) and ``strategies``. The numbers behind the checks are in ``docs/testing.md``.
"""

from ._assert import assert_trees_allclose as assert_trees_allclose
from ._assert import default_tolerance as default_tolerance
from ._check import check_grads as check_grads
from ._check import check_jvp as check_jvp
from ._check import check_vjp as check_vjp
from ._consistency import PROPERTIES as PROPERTIES
from ._consistency import check_consistency as check_consistency
from ._consistency import check_vmap as check_vmap
from ._numerics import finite_difference_step as finite_difference_step
from ._report import CheckReport as CheckReport
from ._report import ComplexStepWarning as ComplexStepWarning
from ._report import DerivativeCheckError as DerivativeCheckError
from ._report import NonDifferentiablePointError as NonDifferentiablePointError
from ._taylor import TaylorResult as TaylorResult
from ._taylor import taylor_test as taylor_test

__all__ = [
    # finite-difference checks
    "check_grads",
    "check_jvp",
    "check_vjp",
    "finite_difference_step",
    "NonDifferentiablePointError",
    "ComplexStepWarning",
    # step-free checks
    "taylor_test",
    "TaylorResult",
    "check_vmap",
    "check_consistency",
    "PROPERTIES",
    # failure reports
    "DerivativeCheckError",
    "CheckReport",
    # pytree assertions
    "assert_trees_allclose",
    "default_tolerance",
]
