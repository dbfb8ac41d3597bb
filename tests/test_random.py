"""functorch_utils.random: JAX's streams (differential tests), transforms, errors, statistics.

Tests that compare with JAX have "jax" in their name and skip without it. Float64 draws are
compared with JAX under ``jax.enable_x64(True)`` (JAX's float64 path draws 64 bits per value).
"""

from __future__ import annotations

import io
import math
import os
import re

import numpy as np
import pytest
import torch

from functorch_utils import grad, jvp, random, testing, tree_util, vmap

from .helpers import jax_32bit_mode  # noqa: F401 (the fixture, used by pytestmark)

pytestmark = pytest.mark.usefixtures("jax_32bit_mode")

# JAX compiles every sampler, shape and dtype anew (the gamma family ~5 s each): the default run
# compares one representative call per sampler; FUNCTORCH_UTILS_PROFILE=thorough adds more seeds,
# shapes and float64 variants.
THOROUGH = os.environ.get("FUNCTORCH_UTILS_PROFILE") == "thorough"
SEEDS = [0, 1, 42, 2**31 + 5] if THOROUGH else [0, 2**31 + 5]
thorough = pytest.mark.skipif(not THOROUGH, reason="FUNCTORCH_UTILS_PROFILE=thorough")


def _np(x: torch.Tensor) -> np.ndarray:
    if x.dtype == torch.bfloat16:
        return x.float().numpy()
    return x.detach().cpu().numpy()


def _jax():
    jax = pytest.importorskip("jax")
    return jax, pytest.importorskip("jax.numpy"), pytest.importorskip("jax.random")


def _assert_exact(ours: torch.Tensor, theirs) -> None:
    a, b = _np(ours), np.asarray(theirs)
    if ours.dtype == torch.bfloat16:
        b = b.astype(np.float32)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_array_equal(a, b)


def _assert_ulps(ours: torch.Tensor, theirs, max_ulps: float, scale: float | None = None) -> None:
    """Within ``max_ulps`` units in the last place of the reference (or of ``scale``)."""
    a, b = _np(ours).astype(np.float64), np.asarray(theirs).astype(np.float64)
    assert a.shape == b.shape
    dt = np.float64 if ours.dtype == torch.float64 else np.float32
    ref = np.abs(b) if scale is None else np.full_like(b, scale)
    ulp = np.spacing(ref.astype(dt)).astype(np.float64)
    err = np.abs(a - b) / ulp
    assert np.isfinite(a).all() == np.isfinite(b).all()
    worst = float(np.nanmax(err[np.isfinite(b)])) if np.isfinite(b).any() else 0.0
    assert worst <= max_ulps, f"{worst} ulps"


# ---------------------------------------------------------------------------------------------
# Keys and bits: bit for bit


@pytest.mark.parametrize(
    "seed", [0, 1, 7, -1, -5, 2**31, 2**32 - 1, 2**32 + 5, 2**40 + 7, 2**63 - 1]
)
def test_key_matches_jax(seed):
    _, _, jr = _jax()
    _assert_exact(random.key(seed), jr.PRNGKey(seed))
    _assert_exact(random.PRNGKey(seed), jr.key_data(jr.key(seed)))


def test_key_from_tensor_seed_and_vmap_of_seeds_jax():
    _, _jnp, jr = _jax()
    _assert_exact(random.key(torch.tensor(-3)), jr.PRNGKey(-3))
    seeds = torch.tensor([0, 5, 2**33 + 1])
    expect = np.stack([np.asarray(jr.PRNGKey(int(s))) for s in seeds])
    _assert_exact(vmap(random.key)(seeds), expect)


@pytest.mark.parametrize("seed", SEEDS)
def test_split_fold_in_bits_match_jax(seed):
    _, jnp, jr = _jax()
    k, jk = random.key(seed), jr.PRNGKey(seed)
    _assert_exact(random.split(k), jr.split(jk))
    _assert_exact(random.split(k, 5), jr.split(jk, 5))
    _assert_exact(random.split(k, (2, 3)), jr.split(jk, (2, 3)))
    for d in [0, 1, 12345, 2**31, 2**32 - 1]:
        _assert_exact(random.fold_in(k, d), jr.fold_in(jk, d))
    _assert_exact(random.fold_in(k, torch.tensor(-3)), jr.fold_in(jk, np.int64(-3)))
    for shape in [(), (1,), (7,), (3, 4), (2, 0, 3)]:
        _assert_exact(random.bits(k, shape), jr.bits(jk, shape))
    for ours, theirs in [(torch.uint8, jnp.uint8), (torch.uint16, jnp.uint16)]:
        _assert_exact(random.bits(k, (9,), ours), jr.bits(jk, (9,), theirs))


def test_bits_uint64_and_key_chain_jax():
    jax, jnp, jr = _jax()
    with jax.enable_x64(True):
        _assert_exact(
            random.bits(random.key(3), (6,), torch.uint64), jr.bits(jr.PRNGKey(3), (6,), jnp.uint64)
        )
    k, jk = random.key(0), jr.PRNGKey(0)
    for i in range(4):  # a chain of splits and folds stays in step
        k, sub = random.split(k)
        jk, jsub = jr.split(jk)
        k = random.fold_in(k, i)
        jk = jr.fold_in(jk, i)
        _assert_exact(random.uniform(sub, (3,)), jr.uniform(jsub, (3,)))


def test_key_data_wrap_clone_and_impl():
    k = random.key(42)
    assert random.key_data(k) is k
    assert torch.equal(
        random.wrap_key_data(torch.tensor([0, 42], dtype=torch.uint32)).view(torch.int32),
        k.view(torch.int32),
    )
    c = random.clone(k)
    assert c is not k and torch.equal(c.view(torch.int32), k.view(torch.int32))
    assert random.key_impl(k) == "threefry2x32"
    assert random.key_impl(random.key(0, impl="rbg")) == "rbg"
    assert random.key(0, impl="rbg").shape == (4,)


# ---------------------------------------------------------------------------------------------
# uniform / normal / randint against JAX


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(), (5,), (3, 4)] if THOROUGH else [(3, 4)])
def test_uniform_matches_jax_bit_for_bit(seed, shape):
    _, jnp, jr = _jax()
    k, jk = random.key(seed), jr.PRNGKey(seed)
    for dt, jdt in [
        (torch.float32, jnp.float32),
        (torch.float16, jnp.float16),
        (torch.bfloat16, jnp.bfloat16),
    ]:
        _assert_exact(random.uniform(k, shape, dt), jr.uniform(jk, shape, jdt))
        _assert_exact(
            random.uniform(k, shape, dt, -2.5, 3.0), jr.uniform(jk, shape, jdt, -2.5, 3.0)
        )
    lo, hi = torch.linspace(-3, 1, 4), torch.tensor(7.3)
    _assert_exact(
        random.uniform(k, (3, 4), minval=lo, maxval=hi),
        jr.uniform(jk, (3, 4), minval=np.asarray(lo), maxval=np.float32(7.3)),
    )


def test_uniform_float64_matches_jax_x64():
    jax, jnp, jr = _jax()
    with jax.enable_x64(True):
        for seed in [0, 7]:
            k, jk = random.key(seed), jr.PRNGKey(seed)
            _assert_exact(
                random.uniform(k, (1000,), torch.float64), jr.uniform(jk, (1000,), jnp.float64)
            )
            _assert_exact(
                random.uniform(k, (1000,), torch.float64, -1.3, 2.9),
                jr.uniform(jk, (1000,), jnp.float64, -1.3, 2.9),
            )


@pytest.mark.parametrize("seed", SEEDS)
def test_normal_matches_jax_within_ulps(seed):
    _, jnp, jr = _jax()
    k, jk = random.key(seed), jr.PRNGKey(seed)
    _assert_ulps(random.normal(k, (20000,)), jr.normal(jk, (20000,)), 4)
    _assert_ulps(random.normal(k, (3, 4), torch.float16), jr.normal(jk, (3, 4), jnp.float16), 2e3)
    _assert_ulps(
        random.normal(k, (5,), torch.complex64).real, jr.normal(jk, (5,), jnp.complex64).real, 4
    )


def test_normal_float64_matches_jax_x64_within_ulps():
    jax, jnp, jr = _jax()
    with jax.enable_x64(True):
        _assert_ulps(
            random.normal(random.key(7), (20000,), torch.float64),
            jr.normal(jr.PRNGKey(7), (20000,), jnp.float64),
            64,
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_randint_matches_jax_bit_for_bit(seed):
    _, jnp, jr = _jax()
    k, jk = random.key(seed), jr.PRNGKey(seed)
    cases = [((100,), -5, 17), ((100,), -(2**31), 2**31 - 1), ((100,), 5, 2), ((100,), 0, 1 << 20)]
    for shape, lo, hi in cases:
        _assert_exact(random.randint(k, shape, lo, hi), jr.randint(jk, shape, lo, hi))
    _assert_exact(
        random.randint(k, (50,), -100, 200, torch.int8), jr.randint(jk, (50,), -100, 200, jnp.int8)
    )
    _assert_exact(
        random.randint(k, (50,), 0, 256, torch.uint8), jr.randint(jk, (50,), 0, 256, jnp.uint8)
    )
    lo, hi = torch.tensor([0, 5, 10, -3]), torch.tensor([3, 6, 100, 3])
    _assert_exact(
        random.randint(k, (3, 4), lo, hi), jr.randint(jk, (3, 4), np.asarray(lo), np.asarray(hi))
    )


def test_randint_int64_matches_jax_x64():
    jax, jnp, jr = _jax()
    with jax.enable_x64(True):
        k, jk = random.key(5), jr.PRNGKey(5)
        for lo, hi in [
            (-5, 17),
            (-(2**63), 2**63 - 1),
            (-(2**62), 2**62 + 12345),
            (0, 3 * 2**40 + 7),
        ]:
            _assert_exact(
                random.randint(k, (200,), lo, hi, torch.int64),
                jr.randint(jk, (200,), lo, hi, jnp.int64),
            )


# ---------------------------------------------------------------------------------------------
# The other samplers against JAX


@pytest.mark.parametrize("seed", [0, 9] if THOROUGH else [0])
def test_discrete_samplers_match_jax_exactly(seed):
    _, jnp, jr = _jax()
    k, jk = random.key(seed), jr.PRNGKey(seed)
    logits = np.random.RandomState(seed).randn(4, 5).astype(np.float32)
    L = torch.tensor(logits)
    _assert_exact(random.bernoulli(k, 0.3, (200,)), jr.bernoulli(jk, 0.3, (200,)))
    _assert_exact(
        random.bernoulli(k, torch.linspace(0, 1, 50)), jr.bernoulli(jk, jnp.linspace(0, 1, 50))
    )
    _assert_exact(random.categorical(k, L), jr.categorical(jk, logits))
    _assert_exact(
        random.categorical(k, L, shape=(3, 4), replace=False),
        jr.categorical(jk, logits, shape=(3, 4), replace=False),
    )
    _assert_exact(random.permutation(k, 10), jr.permutation(jk, 10))
    _assert_exact(
        random.permutation(k, L, axis=1, independent=True),
        jr.permutation(jk, logits, axis=1, independent=True),
    )
    p = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    _assert_exact(
        random.choice(k, 4, (3,), replace=False, p=torch.tensor(p)),
        jr.choice(jk, 4, (3,), replace=False, p=p),
    )
    lam = np.array([0.0, 0.5, 3.0, 9.9, 10.0, 25.0, 100.0, 1000.0] * 5, np.float32)
    _assert_exact(random.poisson(k, torch.tensor(lam)), jr.poisson(jk, lam))


@thorough
@pytest.mark.parametrize("seed", [0, 9])
def test_more_discrete_variants_match_jax_exactly(seed):
    _, _jnp, jr = _jax()
    k, jk = random.key(seed), jr.PRNGKey(seed)
    logits = np.random.RandomState(seed).randn(4, 5).astype(np.float32)
    L = torch.tensor(logits)
    _assert_exact(random.categorical(k, L, axis=0), jr.categorical(jk, logits, axis=0))
    _assert_exact(random.bernoulli(k, 0.3, (200,), "high"), jr.bernoulli(jk, 0.3, (200,), "high"))
    _assert_exact(random.categorical(k, L, shape=(7, 4)), jr.categorical(jk, logits, shape=(7, 4)))
    _assert_exact(random.permutation(k, L), jr.permutation(jk, logits))
    _assert_exact(random.choice(k, L, (2, 3), axis=1), jr.choice(jk, logits, (2, 3), axis=1))
    _assert_exact(
        random.categorical(k, L, axis=0, shape=(2, 5), replace=False),
        jr.categorical(jk, logits, axis=0, shape=(2, 5), replace=False),
    )
    _assert_exact(random.permutation(k, 5000), jr.permutation(jk, 5000))
    _assert_exact(random.permutation(k, L, axis=1), jr.permutation(jk, logits, axis=1))
    _assert_exact(random.choice(k, 10, (6,)), jr.choice(jk, 10, (6,)))
    _assert_exact(random.choice(k, 10, (6,), replace=False), jr.choice(jk, 10, (6,), replace=False))
    _assert_exact(
        random.choice(k, L, (3,), replace=False), jr.choice(jk, logits, (3,), replace=False)
    )
    p = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    _assert_exact(random.choice(k, 4, (20,), p=torch.tensor(p)), jr.choice(jk, 4, (20,), p=p))


@pytest.mark.parametrize("seed", [0, 9] if THOROUGH else [0])
def test_continuous_samplers_match_jax_closely(seed):
    _, _jnp, jr = _jax()
    k, jk = random.key(seed), jr.PRNGKey(seed)
    # log/log1p differ from XLA's by an ulp: scale-relative bounds where results cross zero
    _assert_ulps(random.exponential(k, (2000,)), jr.exponential(jk, (2000,)), 2)
    _assert_ulps(random.logistic(k, (2000,)), jr.logistic(jk, (2000,)), 4, scale=1.0)
    _assert_ulps(random.gumbel(k, (2000,)), jr.gumbel(jk, (2000,)), 4, scale=1.0)
    _assert_ulps(
        random.gumbel(k, (2000,), mode="highest"),
        jr.gumbel(jk, (2000,), mode="highest"),
        4,
        scale=1.0,
    )
    # erf/erfinv near the truncation bounds: XLA's erf is an approximation of its own
    np.testing.assert_allclose(
        _np(random.truncated_normal(k, -1.5, 0.7, (2000,))),
        jr.truncated_normal(jk, -1.5, 0.7, (2000,)),
        rtol=1e-4,
        atol=1e-6,
    )


@thorough
def test_more_continuous_variants_match_jax_closely():
    _, _jnp, jr = _jax()
    k, jk = random.key(5), jr.PRNGKey(5)
    _assert_ulps(random.laplace(k, (2000,)), jr.laplace(jk, (2000,)), 2)
    _assert_ulps(
        random.gumbel(k, (2000,), mode="high"), jr.gumbel(jk, (2000,), mode="high"), 4, scale=1.0
    )
    C = np.array([[2.0, 0.5], [0.5, 1.0]], np.float32)
    m = np.array([1.0, -1.0], np.float32)
    np.testing.assert_allclose(
        _np(random.multivariate_normal(k, torch.tensor(m), torch.tensor(C), (5,))),
        jr.multivariate_normal(jk, m, C, (5,)),
        rtol=1e-5,
        atol=1e-6,
    )


_ALPHAS = np.array([0.1, 0.5, 0.9, 1.0, 1.5, 3.0, 10.0, 100.0] * 10, np.float32)


def test_gamma_and_its_gradient_match_jax():
    jax, _jnp, jr = _jax()
    k, jk = random.key(1), jr.PRNGKey(1)
    a = torch.tensor(_ALPHAS)
    (_, jvalue), jg = jax.value_and_grad(
        lambda a: (jr.gamma(jk, a).sum(), jr.gamma(jk, a)), has_aux=True
    )(_ALPHAS)
    np.testing.assert_allclose(_np(random.gamma(k, a)), jvalue, rtol=1e-5)
    np.testing.assert_allclose(_np(grad(lambda a: random.gamma(k, a).sum())(a)), jg, rtol=1e-4)


@thorough
def test_beta_matches_jax():  # loggamma underneath, for both parameters
    _, _, jr = _jax()
    k, jk = random.key(2), jr.PRNGKey(2)
    np.testing.assert_allclose(
        _np(random.beta(k, 2.0, torch.tensor(_ALPHAS))),
        jr.beta(jk, 2.0, _ALPHAS),
        rtol=1e-5,
        atol=1e-7,
    )


@thorough
def test_loggamma_dirichlet_and_beta_gradient_match_jax():
    jax, _, jr = _jax()
    k, jk = random.key(3), jr.PRNGKey(3)
    a = _ALPHAS
    np.testing.assert_allclose(
        _np(random.loggamma(k, torch.tensor(a))), jr.loggamma(jk, a), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        _np(random.dirichlet(k, torch.tensor(a[:24]).reshape(3, 8))),
        jr.dirichlet(jk, a[:24].reshape(3, 8)),
        rtol=1e-5,
        atol=1e-7,
    )
    g = grad(lambda a: random.beta(k, a, 2.0).sum())(torch.tensor(a[:8]))
    np.testing.assert_allclose(
        _np(g), jax.grad(lambda a: jr.beta(jk, a, 2.0).sum())(a[:8]), rtol=1e-4, atol=1e-7
    )


@thorough
def test_gamma_float64_and_gradient_match_jax_x64():
    jax, _jnp, jr = _jax()
    a = np.array([0.2, 0.7, 1.0, 2.5, 30.0], np.float32)
    k, jk = random.key(1), jr.PRNGKey(1)
    with jax.enable_x64(True):
        a64 = a.astype(np.float64)
        value, g = (
            random.gamma(k, torch.tensor(a64)),
            grad(lambda a: random.gamma(k, a).sum())(torch.tensor(a64)),
        )
        jvalue, jg = jax.value_and_grad(lambda a: jr.gamma(jk, a).sum())(a64)
        np.testing.assert_allclose(_np(value).sum(), jvalue, rtol=1e-12)
        np.testing.assert_allclose(_np(g), jg, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Transforms: vmap over keys, grad, jit, pytrees, save, devices

_SAMPLERS = {
    "normal": lambda k: random.normal(k, (3,)),
    "uniform": lambda k: random.uniform(k, (3,), minval=-1.0, maxval=2.0),
    "randint": lambda k: random.randint(k, (3,), 0, 10),
    "split": lambda k: random.split(k, 3),
    "fold_in": lambda k: random.fold_in(k, 5),
    "bits": lambda k: random.bits(k, (3,)),
    "gamma": lambda k: random.gamma(k, torch.tensor([0.5, 2.0])),
    "poisson": lambda k: random.poisson(k, torch.tensor([3.0, 30.0])),
    "permutation": lambda k: random.permutation(k, 5),
    "categorical": lambda k: random.categorical(k, torch.zeros(3, 4)),
    "beta": lambda k: random.beta(k, 2.0, 3.0, (2,)),
    "bernoulli": lambda k: random.bernoulli(k, 0.3, (4,)),
    "truncated_normal": lambda k: random.truncated_normal(k, -1.0, 1.0, (3,)),
    "choice": lambda k: random.choice(k, 10, (3,), replace=False),
    "dirichlet": lambda k: random.dirichlet(k, torch.ones(3)),
}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype == torch.uint32:
        a, b = a.view(torch.int32), b.view(torch.int32)
    return a.shape == b.shape and bool(torch.equal(a, b))


@pytest.mark.parametrize("name", sorted(_SAMPLERS))
@pytest.mark.parametrize(
    "vm", [vmap, torch.func.vmap], ids=["functorch_utils.vmap", "torch.func.vmap"]
)
def test_vmap_over_keys_equals_the_loop(name, vm):
    f = _SAMPLERS[name]
    keys = random.split(random.key(0), 4)
    loop = torch.stack([f(k) for k in keys])
    assert _same(vm(f)(keys), loop)


def test_vmap_over_fold_in_data_and_nested_vmap():
    k = random.key(3)
    out = vmap(lambda d: random.fold_in(k, d))(torch.arange(4))
    assert _same(out, torch.stack([random.fold_in(k, i) for i in range(4)]))
    keys = random.split(random.key(0), (2, 3))
    nested = vmap(vmap(lambda k: random.normal(k, (2,))))(keys)
    assert _same(
        nested, torch.stack([torch.stack([random.normal(k, (2,)) for k in row]) for row in keys])
    )


def test_grad_through_reparameterised_samplers():
    k = random.key(0)
    z = random.normal(k, (3,))
    g_mu, g_sigma = grad(lambda mu, s: (mu + s * random.normal(k, (3,))).sum(), argnums=(0, 1))(
        torch.tensor(0.5), torch.tensor(2.0)
    )
    torch.testing.assert_close(g_mu, torch.tensor(3.0))
    torch.testing.assert_close(g_sigma, z.sum())
    testing.check_grads(
        lambda lo, hi: random.uniform(k, (4,), torch.float64, lo, hi),
        (torch.tensor(-1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)),
    )
    # gamma's derivative is the implicit one (as JAX's), not the finite difference of the sampler
    # at a fixed key: see test_gamma_gradient_is_the_implicit_one.


def test_gamma_gradient_is_the_implicit_one():
    # With u fixed, P(a, x(a)) = u: the regularised incomplete gamma must not move along (1, dx/da).
    a = torch.tensor([0.05, 0.4, 1.0, 3.0, 25.0, 400.0], dtype=torch.float64)
    k = random.key(11)
    x = random.gamma(k, a)
    g = grad(lambda a: random.gamma(k, a).sum())(a)
    h = 1e-6 * a
    drift = torch.special.gammainc(a + h, x + h * g) - torch.special.gammainc(a - h, x - h * g)
    slope = torch.special.gammainc(a + h, x) - torch.special.gammainc(a - h, x)
    assert (drift.abs() <= 1e-5 * slope.abs() + 1e-14).all(), (drift, slope)


def test_forward_mode_and_vmap_of_grad_through_gamma():
    k = random.key(0)
    a = torch.tensor([0.5, 2.0])
    _, t = jvp(lambda a: random.gamma(k, a), (a,), (torch.ones(2),))
    torch.testing.assert_close(t, grad(lambda a: random.gamma(k, a).sum())(a))
    keys = random.split(k, 3)

    def total(a, kk):
        return random.gamma(kk, a).sum()

    batched = vmap(grad(total), in_axes=(None, 0))(a, keys)
    torch.testing.assert_close(batched, torch.stack([grad(total)(a, kk) for kk in keys]))


_COMPILED = {
    "normal": lambda k: random.normal(k, (3,)),
    "uniform": lambda k: random.uniform(k, (3,), minval=-1.0, maxval=2.0),
    "randint": lambda k: random.randint(k, (3,), 0, 10),
    "split_fold_in": lambda k: random.fold_in(random.split(k, 3)[1], 5),
    "permutation": lambda k: random.permutation(k, 5),
    "categorical": lambda k: random.categorical(k, torch.zeros(3, 4)),
    "bernoulli": lambda k: random.bernoulli(k, 0.3, (4,)),
    "truncated_normal": lambda k: random.truncated_normal(k, -1.0, 1.0, (3,)),
    "gumbel": lambda k: random.gumbel(k, (3,)),
    "choice": lambda k: random.choice(k, 10, (3,), replace=False),
}


@pytest.mark.parametrize("name", sorted(_COMPILED))
def test_samplers_trace_without_graph_breaks(name):
    torch._dynamo.reset()
    f = _COMPILED[name]
    k = random.key(1)
    assert _same(torch.compile(f, fullgraph=True, backend="eager")(k), f(k))


def test_uniform_under_inductor_is_bit_for_bit():
    torch._dynamo.reset()
    f = torch.compile(lambda k: random.uniform(k, (64,)), fullgraph=True)
    k = random.key(4)
    assert torch.equal(f(k), random.uniform(k, (64,)))


def test_keys_are_pytree_leaves_and_survive_torch_save():
    keys = {"init": random.key(0), "dropout": random.split(random.key(1), 3)}
    leaves = tree_util.tree_leaves(keys)
    assert len(leaves) == 2
    buf = io.BytesIO()
    torch.save(keys, buf)
    buf.seek(0)
    back = torch.load(buf)
    assert _same(back["dropout"], keys["dropout"]) and back["init"].dtype == torch.uint32
    assert _same(random.normal(back["init"], (3,)), random.normal(keys["init"], (3,)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_numbers_equal_cpu_numbers():
    k = random.key(7)
    kc = random.key(7, device="cuda")
    for f in [
        lambda k: random.uniform(k, (1000,)),
        lambda k: random.normal(k, (1000,)),
        lambda k: random.randint(k, (1000,), 0, 100),
        lambda k: random.split(k, 4),
        lambda k: random.permutation(k, 100),
    ]:
        a, b = f(k), f(kc).cpu()
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=4e-7, atol=0)
        else:
            assert _same(a, b)
    torch.testing.assert_close(
        random.uniform(kc, (1000,)).cpu(), random.uniform(k, (1000,)), rtol=0, atol=0
    )


# ---------------------------------------------------------------------------------------------
# rbg: torch's generator behind a key


def test_rbg_keys_are_deterministic_and_fast_path():
    k = random.key(3, impl="rbg")
    a = random.uniform(k, (5,))
    assert torch.equal(a, random.uniform(k, (5,)))
    k1, k2 = random.split(k)
    assert not torch.equal(random.normal(k1, (5,)), random.normal(k2, (5,)))
    assert random.randint(k, (10,), 0, 3).dtype == torch.int32
    assert random.bits(k, (2,)).dtype == torch.uint32
    with pytest.raises(ValueError, match="rbg keys draw from torch's generator"):
        vmap(lambda kk: random.uniform(kk, (2,)))(random.split(k, 2))


# ---------------------------------------------------------------------------------------------
# Errors


def test_error_for_an_ordinary_tensor_used_as_a_key():
    msg = (
        "random.uniform(key, shape, dtype, minval, maxval): key is not a PRNG key; expected a "
        "torch.uint32 tensor of shape (2,) made by random.key, random.PRNGKey, random.split or "
        "random.fold_in, got a tensor of dtype torch.int64 and shape (2,)."
    )
    with pytest.raises(TypeError, match=re.escape(msg)):
        random.uniform(torch.tensor([0, 1]), (3,))
    with pytest.raises(TypeError, match="key does not have the shape of a threefry2x32 key"):
        random.normal(torch.zeros(3, dtype=torch.uint32))
    with pytest.raises(TypeError, match="key is not a PRNG key"):
        random.split(0)


def test_error_for_a_batch_of_keys_outside_vmap():
    msg = (
        "random.normal(key, shape, dtype): key must be a single key, not a batch of keys; "
        "expected a key of shape (2,), got a tensor of dtype torch.uint32 and shape (3, 2). "
        "Use vmap to draw with a batch of keys"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        random.normal(random.split(random.key(0), 3), (2,))


def test_errors_for_seeds_dtypes_shapes_and_data():
    with pytest.raises(TypeError, match=re.escape("random.key(seed): the seed must be an integer")):
        random.key(1.5)
    with pytest.raises(TypeError, match="the seed must be a scalar"):
        random.key(torch.arange(3))
    with pytest.raises(ValueError, match="data is out of the range of uint32"):
        random.fold_in(random.key(0), -1)
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        random.uniform(random.key(0), (2,), torch.int32)
    with pytest.raises(TypeError, match="dtype must be a signed integer dtype"):
        random.randint(random.key(0), (2,), 0, 3, torch.float32)
    with pytest.raises(ValueError, match="dtype must be an unsigned integer dtype"):
        random.bits(random.key(0), (2,), torch.int32)
    with pytest.raises(ValueError, match="do not broadcast to the shape argument"):
        random.uniform(random.key(0), (3,), minval=torch.zeros(4))
    with pytest.raises(TypeError, match="p must have a floating dtype"):
        random.bernoulli(random.key(0), torch.tensor(1))
    with pytest.raises(ValueError, match="cannot take a larger sample than the population"):
        random.choice(random.key(0), 3, (5,), replace=False)
    with pytest.raises(TypeError, match="key data for threefry2x32 must be a uint32 tensor"):
        random.wrap_key_data(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="mode is not a gumbel mode"):
        random.gumbel(random.key(0), (2,), mode="max")
    with pytest.raises(ValueError, match="impl is not a known PRNG implementation"):
        random.key(0, impl="philox")


# ---------------------------------------------------------------------------------------------
# Statistics (fixed keys: deterministic, not flaky)

N = 20000


def _ks(x: torch.Tensor, cdf) -> float:
    xs = torch.sort(x.double().reshape(-1)).values
    n = xs.numel()
    f = cdf(xs)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def _ks_bound(n: int) -> float:
    return 1.63 / math.sqrt(n)  # the 1% critical value; the keys are fixed, so this never flakes


_NORMAL_CDF = lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2)))  # noqa: E731


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distributions_pass_ks_tests(dtype):
    k = random.key(2024)
    cases = [
        (random.uniform(k, (N,), dtype), lambda x: x.clamp(0, 1)),
        (random.normal(k, (N,), dtype), _NORMAL_CDF),
        (random.exponential(k, (N,), dtype), lambda x: 1 - torch.exp(-x)),
        (
            random.laplace(k, (N,), dtype),
            lambda x: torch.where(x < 0, 0.5 * torch.exp(x), 1 - 0.5 * torch.exp(-x)),
        ),
        (random.logistic(k, (N,), dtype), torch.sigmoid),
        (random.gumbel(k, (N,), dtype), lambda x: torch.exp(-torch.exp(-x))),
        (
            random.gamma(k, 2.5, (N,), dtype),
            lambda x: torch.special.gammainc(
                torch.tensor(2.5, dtype=torch.float64), x.clamp_min(0)
            ),
        ),
        (
            random.gamma(k, 0.3, (N,), dtype),
            lambda x: torch.special.gammainc(
                torch.tensor(0.3, dtype=torch.float64), x.clamp_min(0)
            ),
        ),
    ]
    lo, hi = -0.5, 1.5
    z = _NORMAL_CDF(torch.tensor([lo, hi], dtype=torch.float64))
    cases.append(
        (
            random.truncated_normal(k, lo, hi, (N,), dtype),
            lambda x: (_NORMAL_CDF(x) - z[0]) / (z[1] - z[0]),
        )
    )
    for i, (x, cdf) in enumerate(cases):
        assert x.dtype == dtype
        assert _ks(x, cdf) < _ks_bound(N), i


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distribution_moments(dtype):
    k = random.key(7)
    tol = 4 / math.sqrt(N)
    b = random.beta(k, 2.0, 5.0, (N,), dtype)
    assert abs(float(b.mean()) - 2 / 7) < tol
    assert abs(float(b.var()) - 10 / (49 * 8)) < tol / 4
    d = random.dirichlet(k, torch.tensor([1.0, 2.0, 3.0], dtype=dtype), (N,))
    torch.testing.assert_close(d.sum(-1), torch.ones(N, dtype=dtype))
    torch.testing.assert_close(
        d.mean(0), torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=dtype), atol=tol, rtol=0
    )
    cov = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=dtype)
    m = random.multivariate_normal(k, torch.tensor([1.0, -1.0], dtype=dtype), cov, (N,))
    torch.testing.assert_close(
        m.mean(0), torch.tensor([1.0, -1.0], dtype=dtype), atol=3 * tol, rtol=0
    )
    torch.testing.assert_close(torch.cov(m.T), cov, atol=6 * tol, rtol=0)
    bern = random.bernoulli(k, torch.tensor(0.3, dtype=dtype), (N,))
    assert abs(float(bern.double().mean()) - 0.3) < tol


def test_integer_distributions():
    k = random.key(5)
    tol = 4 / math.sqrt(N)
    r = random.randint(k, (N,), 0, 10)
    counts = torch.bincount(r.long(), minlength=10).double() / N
    assert (counts - 0.1).abs().max() < tol
    for lam in [0.7, 4.0, 30.0]:
        p = random.poisson(k, lam, (N,)).double()
        assert abs(float(p.mean()) - lam) < 4 * math.sqrt(lam / N)
        assert abs(float(p.var()) / lam - 1) < 0.06
    c = random.categorical(k, torch.log(torch.tensor([0.1, 0.2, 0.7])), shape=(N,))
    freq = torch.bincount(c.long(), minlength=3).double() / N
    torch.testing.assert_close(
        freq, torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64), atol=tol, rtol=0
    )
    perm = random.permutation(k, 100)
    assert torch.equal(torch.sort(perm).values, torch.arange(100, dtype=torch.int32))
    ch = random.choice(k, 50, (20,), replace=False)
    assert ch.unique().numel() == 20


_REJECTION = {
    "gamma": lambda k, a: random.gamma(k, a, (5,)),
    "loggamma": lambda k, a: random.loggamma(k, a, (5,)),
    "beta": lambda k, a: random.beta(k, a, a + 1.0, (5,)),
    "dirichlet": lambda k, a: random.dirichlet(k, torch.stack([a, a + 1.0, a * 2.0]), (5,)),
    "poisson": lambda k, a: random.poisson(k, a * 9.0, (5,)),  # both Knuth and rejection
}


@pytest.mark.parametrize("name", sorted(_REJECTION))
def test_rejection_samplers_compile_without_graph_breaks(name):
    # NOTE [rejection loops]: under jit the loops are custom operators, so fullgraph=True holds
    import functorch_utils as fu

    f = _REJECTION[name]
    keys = random.split(random.key(3), 4)
    a = torch.tensor(1.7)
    jf = fu.jit(f, backend="eager")
    assert _same(jf(keys[0], a), f(keys[0], a))
    assert _same(jf(keys[1], a), f(keys[1], a))
    assert jf._cache_size() == 1
    # vmap over keys under jit: each member equals its own call
    jv = fu.jit(fu.vmap(f, in_axes=(0, None)), backend="eager")
    assert _same(jv(keys, a), torch.stack([f(k, a) for k in keys]))


def test_gamma_gradient_under_jit_is_the_implicit_one():
    import functorch_utils as fu

    k = random.key(5)
    a = torch.tensor([0.5, 2.0, 7.0])

    def total(a):
        return random.gamma(k, a).sum()

    eager = fu.grad(total)(a)
    compiled = fu.jit(fu.grad(total), backend="eager")(a)
    torch.testing.assert_close(compiled, eager)
    per_key = fu.jit(
        fu.vmap(fu.grad(lambda k, a: random.gamma(k, a).sum(), 1), (0, None)), backend="eager"
    )
    keys = random.split(k, 3)
    want = torch.stack([fu.grad(lambda a, k=k: random.gamma(k, a).sum())(a) for k in keys])
    torch.testing.assert_close(per_key(keys, a), want)
    # grad outside vmap, and forward mode (inside and outside vmap)
    over = lambda a: fu.vmap(lambda k: random.gamma(k, a).sum())(keys).sum()  # noqa: E731
    torch.testing.assert_close(fu.jit(fu.grad(over), backend="eager")(a), fu.grad(over)(a))
    ones = torch.ones(3)
    fwd = lambda a: fu.jvp(total, (a,), (ones,))  # noqa: E731
    torch.testing.assert_close(fu.jit(fwd, backend="eager")(a), fwd(a))
    assert fwd(a)[1] != 0
    vfwd = fu.vmap(lambda k: fu.jvp(lambda a: random.gamma(k, a).sum(), (a,), (ones,)))
    torch.testing.assert_close(fu.jit(vfwd, backend="eager")(keys), vfwd(keys))


def test_rejection_samplers_under_inductor():
    import functorch_utils as fu

    k = random.key(8)
    a = torch.tensor([0.3, 1.0, 4.0, 20.0])
    f = lambda k, a: (random.gamma(k, a), random.poisson(k, a * 3.0))  # noqa: E731
    got, want = fu.jit(f)(k, a), f(k, a)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_rejection_samplers_under_jit_in_every_grad_mode():
    import functorch_utils as fu

    k = random.key(2)
    a = torch.tensor([0.5, 2.0, 7.0])
    f = lambda k, a: random.gamma(k, a)  # noqa: E731
    jf = fu.jit(f, backend="eager")
    want = f(k, a)
    with torch.no_grad():
        assert torch.equal(jf(k, a), want)
    with torch.inference_mode():
        assert torch.equal(jf(k, a), want)
        assert torch.equal(
            fu.jit(random.poisson, backend="eager")(k, a * 9.0), random.poisson(k, a * 9.0)
        )
    # an input that requires grad: outer autograd gets the implicit gradient through jit
    ar = a.clone().requires_grad_()
    jf(k, ar).sum().backward()
    through_jit = ar.grad
    ar.grad = None
    f(k, ar).sum().backward()
    torch.testing.assert_close(through_jit, ar.grad)
    assert bool((through_jit != 0).all())


def test_eval_shape_of_rejection_samplers_runs_no_loop():
    import functorch_utils as fu

    k = random.key(0)
    cases = {
        "gamma": (lambda k: random.gamma(k, 2.0, (3,)), (3,), torch.float32),
        "beta": (lambda k: random.beta(k, 2.0, 3.0, (2, 7)), (2, 7), torch.float32),
        "dirichlet": (lambda k: random.dirichlet(k, torch.ones(4), (2,)), (2, 4), torch.float32),
        "poisson": (lambda k: random.poisson(k, 3.0, (4,)), (4,), torch.int32),
    }
    for name, (f, shape, dtype) in cases.items():
        got = fu.eval_shape(f, k)
        assert (tuple(got.shape), got.dtype) == (shape, dtype), name
    keys = random.split(k, 5)
    got = fu.eval_shape(fu.vmap(lambda k: random.gamma(k, 2.0, (3,))), keys)
    assert tuple(got.shape) == (5, 3)
    got = fu.eval_shape(fu.grad(lambda a: random.gamma(k, a).sum()), torch.tensor([1.0, 2.0]))
    assert tuple(got.shape) == (2,)


def test_rejection_operators_under_nested_vmap_and_batched_parameters_in_jit():
    import functorch_utils as fu

    k = random.key(1)
    keys = random.split(k, 6).reshape(2, 3, 2)
    lam = torch.tensor([2.0, 15.0, 40.0])  # Knuth and rejection branches

    def f(k):
        return random.poisson(k, lam), random.gamma(k, lam / 10)

    nested = fu.vmap(fu.vmap(f))
    got = fu.jit(nested, backend="eager")(keys)
    for i in range(2):
        for j in range(3):
            want = f(keys[i, j])
            assert torch.equal(got[0][i, j], want[0]) and torch.equal(got[1][i, j], want[1])
    # the parameter batched, the key shared
    g = fu.vmap(lambda lam: random.poisson(k, lam, (4,)))
    lams = torch.tensor([3.0, 30.0])
    got = fu.jit(g, backend="eager")(lams)
    assert torch.equal(got, torch.stack([random.poisson(k, v, (4,)) for v in lams]))


def test_jacobians_through_gamma_under_jit():
    import functorch_utils as fu

    k = random.key(4)
    a = torch.tensor([0.7, 2.0, 5.0])
    for transform in (fu.jacrev, fu.jacfwd):
        f = transform(lambda a: random.gamma(k, a))
        torch.testing.assert_close(fu.jit(f, backend="eager")(a), f(a))
    v = fu.value_and_grad(lambda a: random.dirichlet(k, a)[0])
    got, want = fu.jit(v, backend="eager")(a), v(a)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
