"""jit and eval_shape (functorch_utils/_jit.py).

Most tests compile with backend="eager" or "aot_eager" (dynamo and AOTAutograd without code
generation) to keep the suite fast; one test compiles with inductor.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import warnings
from typing import NamedTuple

import pytest
import torch

import functorch_utils as fu
from functorch_utils import _jit, lax, tree_util

from .helpers import tree_allclose

EAGER = {"backend": "eager"}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@dataclasses.dataclass
class Params:
    w: torch.Tensor
    b: torch.Tensor


tree_util.register_dataclass(Params, data_fields=["w", "b"], meta_fields=[])


class Pair(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor


# ---------------------------------------------------------------------------------------------
# values


def test_values_and_pytrees_match_eager():
    def f(p, pair, extra=None):
        out = {"y": p.w @ pair.a + p.b, "z": Pair(pair.a * 2, pair.b.sum())}
        if extra is not None:
            out["e"] = extra["k"] * 3
        return out

    p = Params(torch.randn(3, 4), torch.randn(3))
    pair = Pair(torch.randn(4), torch.randn(2))
    jf = fu.jit(f, **EAGER)
    tree_allclose(jf(p, pair), f(p, pair))
    tree_allclose(jf(p, pair, extra={"k": torch.ones(2)}), f(p, pair, extra={"k": torch.ones(2)}))
    assert isinstance(jf(p, pair)["z"], Pair)


def test_python_numbers_become_tensors_as_jax_traces_them():
    def f(x, s):
        assert isinstance(s, torch.Tensor)
        return x * s

    jf = fu.jit(f, **EAGER)
    assert torch.equal(jf(torch.ones(2), 3.0), torch.full((2,), 3.0))
    assert torch.equal(jf(torch.ones(2), 5.0), torch.full((2,), 5.0))
    assert jf._cache_size() == 1  # the number is a 0-d tensor, not a constant: no recompile
    g = fu.jit(lambda n: n, **EAGER)
    assert g(3).dtype == torch.int64 and g(2.0).dtype == torch.float64
    assert g(True).dtype == torch.bool and g(1j).dtype == torch.complex128
    # full precision, and no promotion of the tensors a number meets (as a Python number)
    h = fu.jit(lambda x, s: x * s, **EAGER)
    assert h(torch.ones(2), 0.1).dtype == torch.float32
    assert h(torch.ones(2, dtype=torch.float64), 0.1)[0].item() == 0.1


def test_decorator_forms_and_methods():
    @fu.jit
    def f(x):
        return x + 1

    @fu.jit(static_argnums=1, backend="eager")
    def g(x, n):
        return x * n

    class Model:
        def __init__(self):
            self.scale = 2.0

        @fu.jit(static_argnums=0, backend="eager")  # self is static (hashed by identity), as JAX
        def __call__(self, x):
            return x * self.scale

    x = torch.ones(2)
    assert torch.equal(f(x), x + 1)
    assert torch.equal(g(x, 3), x * 3)
    assert torch.equal(Model()(x), x * 2)
    assert f.__name__ == "f" and f.__wrapped__.__name__ == "f"


def test_inductor_compiles_once_and_matches():
    def loss(w, x):
        return (x @ w).tanh().pow(2).sum()

    w, x = torch.randn(4, 3), torch.randn(5, 4)
    jg = fu.jit(fu.grad(loss))
    torch.testing.assert_close(jg(w, x), fu.grad(loss)(w, x))
    torch.testing.assert_close(jg(w + 1, x), fu.grad(loss)(w + 1, x))
    assert jg._cache_size() == 1


# ---------------------------------------------------------------------------------------------
# static arguments


def test_static_argnums_and_argnames_infer_each_other_as_jax():
    def f(x, n, *, mode="add"):
        return x + n if mode == "add" else x * n

    x = torch.ones(2)
    by_num = fu.jit(f, static_argnums=1, **EAGER)
    assert torch.equal(by_num(x, 3), x + 3)
    assert torch.equal(by_num(x, n=4), x + 4)  # the same parameter by keyword is static too
    by_name = fu.jit(f, static_argnames=("n", "mode"), **EAGER)
    assert torch.equal(by_name(x, 3, mode="mul"), x * 3)
    assert torch.equal(by_name(x, 2), x + 2)  # positional use of a static name
    assert by_name._cache_size() == 2
    neg = fu.jit(f, static_argnums=-1, **EAGER)
    assert torch.equal(neg(x, 5), x + 5)


def test_each_static_value_compiles_once_and_many_values_never_fail():
    def f(x, shape):
        return x.reshape(shape).sum(0)

    jf = fu.jit(f, static_argnums=1, **EAGER)
    x = torch.arange(24.0)
    shapes = [(a, 24 // a) for a in (1, 2, 3, 4, 6, 8, 12, 24)] * 2 + [(2, 3, 4), (4, 3, 2)]
    for s in shapes:  # 10 distinct values: past dynamo's per-code recompile limit of 8
        torch.testing.assert_close(jf(x, s), f(x, s))
    assert jf._cache_size() == 10  # once per value


def test_new_batch_sizes_compile_at_most_twice():
    def loss(w, x, y):
        return ((x @ w).tanh() - y).pow(2).sum()

    per_example = fu.jit(fu.vmap(fu.grad(loss), in_axes=(None, 0, 0)), backend="aot_eager")
    w = torch.randn(4, 3)
    for b in (3, 5, 7, 11, 16):
        x, y = torch.randn(b, 4), torch.randn(b, 3)
        torch.testing.assert_close(
            per_example(w, x, y), fu.vmap(fu.grad(loss), in_axes=(None, 0, 0))(w, x, y)
        )
    assert per_example._cache_size() <= 2


def test_full_cache_evicts_with_a_warning():
    jf = fu.jit(lambda x, k: x + k, static_argnums=1, cache_size=2, **EAGER)
    x = torch.ones(1)
    jf(x, 1)
    jf(x, 2)
    with pytest.warns(fu.JitRecompileWarning, match=r"holds 2 entries.*evicted"):
        jf(x, 3)
    assert jf._cache_size() == 2
    jf.clear_cache()
    assert jf._cache_size() == 0


def test_dtype_or_rank_change_is_a_new_entry():
    jf = fu.jit(lambda x: x * 2, **EAGER)
    jf(torch.ones(2))
    jf(torch.ones(2, dtype=torch.float64))
    jf(torch.ones(2, 3))
    assert len(jf._entries) == 3


# ---------------------------------------------------------------------------------------------
# errors


def test_unhashable_static_argument():
    jf = fu.jit(lambda x, n: x, static_argnums=1)
    msg = (
        "jit(<lambda>): static argument args[1] is not hashable (static arguments are part of "
        "the compile cache key; the error was: unhashable type: 'list'); expected a hashable "
        "value (a number, string, tuple, frozen dataclass...), got list [1, 2]. Pass it as a "
        "tuple instead of a list"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        jf(1.0, [1, 2])


def test_non_array_dynamic_argument_names_its_path():
    def f(x, opts):
        return x

    msg = (
        "jit(f): argument args[1]['name'] is not a tensor, a Python number or a pytree of them, "
        "so it cannot be a dynamic argument; expected a tensor (or a Python number, which "
        "becomes a 0-d tensor), got str 'relu'. Mark the argument static"
    )
    with pytest.raises(TypeError, match=re.escape(msg)):
        fu.jit(f)(torch.ones(1), {"name": "relu"})
    with pytest.raises(TypeError, match=re.escape("argument x is not a tensor")):
        fu.jit(lambda x: x)(x="a")


def test_build_time_errors():
    with pytest.raises(ValueError, match=re.escape("static_argnums=3 is out of range")):
        fu.jit(lambda x: x, static_argnums=3)
    with pytest.raises(ValueError, match=re.escape("static_argnames names ['y']")):
        fu.jit(lambda x: x, static_argnames="y")
    with pytest.raises(TypeError, match=re.escape("static_argnums must be an int")):
        fu.jit(lambda x: x, static_argnums="0")
    with pytest.raises(TypeError, match=re.escape("jit(fun): fun is not callable")):
        fu.jit(3)
    with pytest.raises(ValueError, match="cache_size must be a positive int"):
        fu.jit(lambda x: x, cache_size=0)
    with pytest.raises(ValueError, match="mode and options apply to a backend given by name"):
        fu.jit(lambda x: x, backend=lambda gm, ex: gm, mode="reduce-overhead")


def _data_dependent(x):
    if x.sum() > 0:
        return x
    return -x


def test_graph_break_is_a_clear_error_naming_the_function():
    jf = fu.jit(_data_dependent, **EAGER)
    with pytest.raises(fu.JitCompileError) as info:
        jf(torch.ones(2))
    text = str(info.value)
    assert text.startswith(
        "jit(_data_dependent): torch.compile could not compile the function (fullgraph=True); "
        "torch says: Data-dependent branching"
    )
    assert "fallback=True" in text and "fullgraph=False" in text


def test_fallback_runs_eagerly_with_a_warning():
    jf = fu.jit(_data_dependent, fallback=True, **EAGER)
    with pytest.warns(fu.JitFallbackWarning, match=r"jit\(_data_dependent\).*runs eagerly"):
        assert torch.equal(jf(torch.ones(2)), torch.ones(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the entry stays eager: no second warning
        assert torch.equal(jf(-torch.ones(2)), torch.ones(2))


def test_fullgraph_false_allows_graph_breaks():
    jf = fu.jit(_data_dependent, fullgraph=False, **EAGER)
    assert torch.equal(jf(-torch.ones(2)), torch.ones(2))


def test_users_own_errors_come_out_unchanged():
    def f(x):
        if x.shape[0] > 2:
            raise ValueError("f: too long")
        return x

    with pytest.raises(ValueError, match=r"^f: too long$"):
        fu.jit(f, **EAGER)(torch.ones(3))
    with pytest.raises(RuntimeError, match="size"):
        fu.jit(lambda a, b: a @ b, **EAGER)(torch.ones(3), torch.ones(5))


def test_progress_note_for_slow_compiles(monkeypatch, caplog):
    monkeypatch.setattr(_jit, "PROGRESS_AFTER_S", 0.05)

    def slow_backend(gm, example_inputs):
        time.sleep(0.3)
        return gm.forward

    with caplog.at_level(logging.WARNING, logger="functorch_utils.jit"):
        fu.jit(lambda x: x * 2, backend=slow_backend)(torch.ones(2))
    text = caplog.text
    assert "jit(<lambda>): compiling (torch.compile)" in text
    assert re.search(r"jit\(<lambda>\): compiled in \d+\.\d s", text)


def test_cache_dir_is_a_project_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(_jit, "_cache_chosen", False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("FUNCTORCH_UTILS_CACHE_DIR", str(tmp_path / "cc"))
    assert fu.cache_dir() == str(tmp_path / "cc")
    monkeypatch.setattr(_jit, "_cache_chosen", False)
    from functorch_utils import _torch_hooks

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", _torch_hooks.inductor_default_cache_dir())
    assert fu.cache_dir() == str(tmp_path / "cc")  # torch's own default is not a choice
    monkeypatch.setattr(_jit, "_cache_chosen", False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "user"))
    assert fu.cache_dir() == str(tmp_path / "user")  # the user's own choice wins


# ---------------------------------------------------------------------------------------------
# composition with the transforms and lax


def _f(x):
    return (x.sin() * x).sum()


X = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)

COMPOSITIONS = {
    "jit(grad)": (lambda: fu.jit(fu.grad(_f), **EAGER), lambda: fu.grad(_f)),
    "grad(jit)": (lambda: fu.grad(fu.jit(_f, **EAGER)), lambda: fu.grad(_f)),
    "value_and_grad(jit)": (
        lambda: fu.value_and_grad(fu.jit(_f, **EAGER)),
        lambda: fu.value_and_grad(_f),
    ),
    "jit(hessian)": (lambda: fu.jit(fu.hessian(_f), **EAGER), lambda: fu.hessian(_f)),
    "hessian(jit)": (lambda: fu.hessian(fu.jit(_f, **EAGER)), lambda: fu.hessian(_f)),
    "jit(jacfwd)": (
        lambda: fu.jit(fu.jacfwd(torch.sin), **EAGER),
        lambda: fu.jacfwd(torch.sin),
    ),
    "jit(jacrev)": (
        lambda: fu.jit(fu.jacrev(torch.sin), **EAGER),
        lambda: fu.jacrev(torch.sin),
    ),
    "vmap(jit)": (lambda: fu.vmap(fu.jit(torch.sin, **EAGER)), lambda: fu.vmap(torch.sin)),
    "jit(vmap(grad))": (
        lambda: fu.jit(fu.vmap(fu.grad(lambda v: v.sin().sum())), **EAGER),
        lambda: fu.vmap(fu.grad(lambda v: v.sin().sum())),
    ),
    "jvp(jit)": (
        lambda: lambda x: fu.jvp(fu.jit(torch.sin, **EAGER), (x,), (torch.ones_like(x),)),
        lambda: lambda x: fu.jvp(torch.sin, (x,), (torch.ones_like(x),)),
    ),
    "jit(jit)": (lambda: fu.jit(fu.jit(_f, **EAGER), **EAGER), lambda: _f),
}


@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_compositions_match_eager(name):
    jitted, plain = COMPOSITIONS[name]
    x = X if name not in ("vmap(jit)", "jit(vmap(grad))") else X.reshape(3, 1).repeat(1, 2)
    tree_allclose(jitted()(x), plain()(x))


@pytest.mark.parametrize("name", [n for n in COMPOSITIONS if n.startswith("jit(")])
def test_repeated_identical_calls_compile_once(name):
    # a module-level cache read while tracing would become a guard that the next call fails
    jitted, _ = COMPOSITIONS[name]
    fn = jitted()
    x = X if name != "jit(vmap(grad))" else X.reshape(3, 1).repeat(1, 2)
    for _ in range(3):
        fn(x)
    assert fn._cache_size() == 1


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "enable_grad"])
def test_grad_of_jit_in_every_grad_mode(mode):
    ctx = {
        "no_grad": torch.no_grad,
        "inference_mode": torch.inference_mode,
        "enable_grad": torch.enable_grad,
    }[mode]
    g = fu.grad(fu.jit(_f, **EAGER))
    expected = fu.grad(_f)(X)
    with ctx():
        got = g(X)
    torch.testing.assert_close(got, expected)
    x_rg = X.clone().requires_grad_()
    torch.testing.assert_close(g(x_rg), expected)
    assert x_rg.grad is None


def test_jit_of_lax_programs():
    def rnn(h0, xs, w):
        return lax.scan(lambda h, x: ((h @ w + x).tanh(),) * 2, h0, xs)

    def piecewise(x):
        return lax.cond(x.sum() > 0, torch.sqrt, lambda v: 0 * v, x).sum()

    h0, xs, w = torch.zeros(3), torch.randn(6, 3), torch.randn(3, 3) * 0.5
    tree_allclose(fu.jit(rnn, **EAGER)(h0, xs, w), rnn(h0, xs, w))
    grad_rnn = fu.grad(lambda w: rnn(h0, xs, w)[0].sum())
    tree_allclose(fu.jit(grad_rnn, **EAGER)(w), grad_rnn(w))
    jp = fu.jit(fu.grad(piecewise), **EAGER)
    for v in ([4.0], [-1.0]):  # a traced predicate selects; the derivative stays finite
        x = torch.tensor(v)
        torch.testing.assert_close(jp(x), fu.grad(piecewise)(x))
    loop = fu.jit(lambda x: lax.fori_loop(0, 3, lambda i, c: c * 2 + i, x), **EAGER)
    torch.testing.assert_close(loop(torch.ones(2)), torch.full((2,), 12.0))


def test_data_dependent_while_loop_under_jit_is_refused_clearly():
    f = fu.jit(lambda x: lax.while_loop(lambda c: c.sum() < 10, lambda c: c * 2, x), **EAGER)
    with pytest.raises(fu.JitCompileError, match=r"the loop's predicate is a traced tensor"):
        f(torch.ones(2))
    g = fu.jit(lambda x, n: lax.fori_loop(0, n, lambda i, c: c * 2, x), **EAGER)
    with pytest.raises(fu.JitCompileError, match=r"the bound upper is a traced tensor"):
        g(torch.ones(2), torch.tensor(3))
    h = fu.jit(lambda x, n: lax.fori_loop(0, n, lambda i, c: c * 2, x), static_argnums=1, **EAGER)
    torch.testing.assert_close(h(torch.ones(2), 3), torch.full((2,), 8.0))


# ---------------------------------------------------------------------------------------------
# eval_shape


def test_eval_shape_structures_without_computing():
    big = fu.ShapeDtypeStruct((50_000, 50_000), torch.float32)
    out = fu.eval_shape(lambda w, x: {"y": x @ w, "n": 3}, big, torch.ones(8, 50_000))
    assert out == {"y": fu.ShapeDtypeStruct((8, 50_000), torch.float32), "n": 3}
    assert repr(out["y"]) == "ShapeDtypeStruct(shape=(8, 50000), dtype=float32)"
    assert out["y"].ndim == 2 and out["y"].size == 400_000


def test_eval_shape_through_transforms_and_modules():
    def loss(w, x):
        return (x @ w).tanh().sum()

    w, xs = torch.randn(4, 3), torch.randn(7, 4)
    out = fu.eval_shape(fu.vmap(fu.grad(loss), in_axes=(None, 0)), w, xs)
    assert out == fu.ShapeDtypeStruct((7, 4, 3), torch.float32)
    jac = fu.eval_shape(fu.jacrev(lambda p: {"a": p["w"].sin()}), {"w": torch.ones(2, 3)})
    assert jac == {"a": {"w": fu.ShapeDtypeStruct((2, 3, 2, 3), torch.float32)}}
    lin = torch.nn.Linear(4, 5)
    params = dict(lin.named_parameters())
    out = fu.eval_shape(lambda p, x: torch.func.functional_call(lin, p, (x,)), params, xs)
    assert out == fu.ShapeDtypeStruct((7, 5), torch.float32)
    made = fu.eval_shape(lambda n: torch.zeros(3, 2, dtype=torch.float64) + n, 1.0)
    assert made == fu.ShapeDtypeStruct((3, 2), torch.float64)
    captured = torch.randn(5)
    assert fu.eval_shape(lambda x: x * captured, torch.ones(5)).shape == (5,)


def test_eval_shape_data_dependent_shape_is_a_clear_error():
    msg = (
        "eval_shape(<lambda>): a result's shape depends on tensor values (aten.nonzero.default), "
        "which eval_shape cannot know without computing them"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        fu.eval_shape(lambda x: x[x > 0], torch.randn(4))


def test_shape_dtype_struct_checks_its_dtype():
    with pytest.raises(TypeError, match=re.escape("dtype must be a torch.dtype")):
        fu.ShapeDtypeStruct((2,), "float32")


# ---------------------------------------------------------------------------------------------
# against JAX (optional extra)


def test_jit_and_eval_shape_match_jax():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    import numpy as np

    with jax.enable_x64(True):

        def program(xp, x, n):
            y = xp.sin(x) * n
            return {"a": y.sum(), "b": (y[:2], x * 2)}

        x = np.array([0.5, -1.0, 2.0])
        ours = fu.jit(lambda x, n: program(torch, x, n), static_argnums=1, **EAGER)(
            torch.tensor(x), 3
        )
        theirs = jax.jit(lambda x, n: program(jnp, x, n), static_argnums=1)(jnp.asarray(x), 3)
        tree_allclose(ours, jax.tree_util.tree_map(lambda a: torch.tensor(np.asarray(a)), theirs))
        s_ours = fu.eval_shape(lambda x: program(torch, x, 2.0), torch.tensor(x))
        s_jax = jax.eval_shape(lambda x: program(jnp, x, 2.0), jnp.asarray(x))
        flat_ours = tree_util.tree_leaves(s_ours)
        flat_jax = jax.tree_util.tree_leaves(s_jax)
        assert [tuple(s.shape) for s in flat_ours] == [tuple(s.shape) for s in flat_jax]


# ---------------------------------------------------------------------------------------------
# properties: jitted equals eager over random pytrees and shapes, through the transforms

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


def _tree_loss(tree, scale):
    return sum((torch.sin(leaf) * scale).pow(2).sum() for leaf in tree_util.tree_leaves(tree))


_PROPERTY_TRANSFORMS = {
    "plain": lambda: lambda t, s: tree_util.tree_map(lambda x: torch.tanh(x) * s, t),
    "grad": lambda: fu.grad(_tree_loss),
    "value_and_grad": lambda: fu.value_and_grad(_tree_loss),
    "jvp": lambda: lambda t, s: fu.jvp(lambda u: _tree_loss(u, s), (t,), (t,)),
    "vjp": lambda: (
        lambda t, s: fu.vjp(lambda u: _tree_loss(u, s), t)[1](torch.ones((), dtype=torch.float64))
    ),
}


@hypothesis.settings(max_examples=12)
@hypothesis.given(
    data=st.data(), name=st.sampled_from(sorted(_PROPERTY_TRANSFORMS)), scale=st.floats(-2, 2)
)
def test_jit_equals_eager_over_random_pytrees(data, name, scale):
    from functorch_utils.testing import strategies as fst

    containers = ("dict", "list", "tuple", "namedtuple", "dataclass")  # None: see the xfail below
    leaves = fst.tensors(torch.float64, fst.shapes(max_numel=6))
    tree = data.draw(fst.pytrees(leaves, containers=containers))
    fn = _PROPERTY_TRANSFORMS[name]()
    tree_allclose(fu.jit(fn, **EAGER)(tree, scale), fn(tree, scale))


@pytest.mark.xfail(
    strict=True,
    raises=fu.JitCompileError,
    reason="torch 2.13's dynamo cannot flatten a dict whose values are all empty subtrees "
    "(optree DictMetaData in its sourceless builder); docs/jit.md",
)
def test_dict_of_only_none_under_jit_grad_is_a_known_torch_limitation():
    tree = [torch.zeros(1, dtype=torch.float64), {"a": None}]
    fu.jit(fu.grad(_tree_loss), **EAGER)(tree, 1.0)


def test_jit_of_keyed_random_numbers():
    from functorch_utils import random

    key = random.key(0)
    draw = fu.jit(lambda k: random.normal(k, (3,)), **EAGER)
    assert torch.equal(draw(key), random.normal(key, (3,)))
    split = fu.jit(lambda k, n: random.split(k, n), static_argnums=1, **EAGER)
    assert torch.equal(split(key, 4), random.split(key, 4))
    keys = random.split(key, 5)
    per_key = fu.jit(fu.vmap(lambda k: random.uniform(k, (2,))), **EAGER)
    assert torch.equal(per_key(keys), torch.stack([random.uniform(k, (2,)) for k in keys]))
    assert fu.eval_shape(lambda k: random.normal(k, (4, 5)), key) == fu.ShapeDtypeStruct(
        (4, 5), torch.float32
    )


def test_jax_platform_and_unknown_backends_are_clear_errors_and_inline_is_accepted():
    x = torch.ones(2)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "jit(<lambda>): backend='gpu' names a JAX/XLA platform, but here backend is "
            "torch.compile's backend and the arguments' device decides where the code runs"
        ),
    ):
        fu.jit(lambda x: x + 1, backend="gpu")
    with pytest.raises(
        ValueError, match=re.escape("jit(<lambda>): torch.compile does not know this backend")
    ):
        fu.jit(lambda x: x + 1, backend="no_such_backend")(x)
    assert torch.equal(fu.jit(lambda x: x + 1, inline=True, backend="eager")(x), x + 1)
    with pytest.raises(TypeError, match=r"inline must be a bool"):
        fu.jit(lambda x: x, inline="yes")


def test_disable_jit_runs_the_python_function_and_compiles_nothing():
    seen = []

    @fu.jit
    def f(x):
        seen.append(type(x))  # runs as Python each call under disable_jit
        return x.sin() if x.sum() > 0 else x.cos()  # a value-dependent branch

    x = torch.tensor([0.5])
    with fu.disable_jit():
        assert torch.equal(f(x), x.sin())
        with fu.disable_jit(False):
            assert fu.disable_jit is not None  # nesting restores the outer setting below
        assert torch.equal(f(-x), (-x).cos())
    assert f._cache_size() == 0 and len(seen) == 2
    with (
        pytest.raises(TypeError, match=r"disable_jit\(disable\): disable must be a bool"),
        fu.disable_jit("yes"),
    ):
        pass


def test_block_until_ready_and_device_put():
    import numpy as np

    tree = {"y": torch.ones(2), "n": 3}
    assert fu.block_until_ready(tree) is tree
    out = fu.device_put({"a": np.arange(3), "b": 2.5, "t": torch.ones(1), "s": "name"}, "cpu")
    assert torch.equal(out["a"], torch.arange(3)) and out["b"].dtype == torch.float32
    assert out["s"] == "name" and out["t"].device.type == "cpu"
    same = torch.ones(2)
    assert fu.device_put(same) is same
    with pytest.raises(TypeError, match=r"device_put\(x, device\): device must be a torch device"):
        fu.device_put(same, 3.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_put_and_block_until_ready_on_cuda():
    x = fu.device_put(torch.ones(3), "cuda")
    assert x.device.type == "cuda"
    assert fu.block_until_ready(x * 2).sum().item() == 6.0


def test_named_scope_and_named_call_are_profiler_ranges_and_trace_under_jit():
    def f(x):
        with fu.named_scope("block"):
            return x.sin() * 2

    double = fu.named_call(lambda x: x * 2, name="double")
    x = torch.ones(2)
    with torch.profiler.profile() as prof:
        f(x)
        double(x)
        fu.named_call(f)(x)  # the function's own name by default
    names = {e.name for e in prof.events()}
    assert {"block", "double", "f"} <= names
    assert torch.equal(fu.jit(f, backend="eager")(x), f(x))  # fullgraph: no break
    assert torch.equal(fu.jit(double, backend="eager")(x), x * 2)
    with pytest.raises(TypeError, match=r"named_scope\(name\): name must be a string"):
        fu.named_scope(3)
    with pytest.raises(TypeError, match=r"named_call\(fun, name\): name must be a string"):
        fu.named_call(f, name=3)
