"""Random small programs and transform stacks, interpreted by several backends.

One program representation (plain data: ``Case``) is interpreted by three backends written against
the same small interface, so the sides cannot drift apart:

- ``FuBackend``: ``functorch_utils`` (the code under test);
- ``JaxBackend``: JAX in float64 (the reference when ``jax`` is installed);
- ``RefBackend``: ``torch.func`` for derivatives, a Python loop for ``vmap``, the plain functions
  for custom rules and ``checkpoint``, ``detach`` for ``stop_gradient`` (the reference without JAX;
  it has no collectives, so cases for it draw none).

A program works on a register file: the input pytree's leaves come first, each op appends one
register (a multi-output op appends one per output). Every register is a float64 vector of length
``N`` or a scalar; the drawing keeps track of which, so each op gets operands it accepts. A
transform stack is applied innermost first; every transform keeps the function's signature (one
pytree argument ``x`` of the same structure): ``grad``-like transforms reduce the output with a
fixed weighting (``scalarize``), ``vmap`` builds its batched argument from ``x`` with fixed offsets
(so ``grad`` of ``vmap`` differentiates through it), ``jvp``/``linearize`` use a fixed tangent and
``vjp`` a fixed cotangent shaped like the output.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis.strategies as st
import numpy as np
import optree
import torch
import torch.func

import functorch_utils as fu

N = 3  # length of every vector register
MATRIX = np.array([[0.9, -0.4, 0.3], [0.2, 0.7, -0.5], [-0.6, 0.1, 0.8]])  # not symmetric
KEYS = ("a", "b", "c")


# ---------------------------------------------------------------------------------------------
# the program representation


@dataclasses.dataclass(frozen=True)
class Op:
    """``regs.append(name(*regs[args]))``; ``param`` is an index, a split point or an axis name."""

    name: str
    args: tuple[int, ...]
    param: Any = None
    block: Block | None = None  # the body of a ``checkpoint``


@dataclasses.dataclass(frozen=True)
class Block:
    """A straight-line program over ``n_in`` registers, returning the registers ``outputs``."""

    n_in: int
    ops: tuple[Op, ...]
    outputs: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Transform:
    """One level of the stack. ``in_axes`` holds one axis (or None) per input leaf."""

    name: str
    in_axes: tuple[int | None, ...] = ()
    in_axes_form: str = "tree"  # "int" (in_axes=0), "tree" (a full tree), "prefix", "none"
    out_axes: int = 0
    axis_name: str | None = None
    size: int = 2
    seed: int = 0
    argnums: Any = None  # tuple-layout inputs only: the leaves become positional arguments
    has_aux: bool = False
    chunk_size: int | None = None  # jacrev, jacfwd, vmap: a torch extra (the references ignore it)


@dataclasses.dataclass(frozen=True)
class Case:
    kinds: tuple[str, ...]  # per input leaf: "v" (vector of length N) or "s" (scalar)
    layout: str  # "leaf", "tuple", "dict", "nested"
    values: tuple[tuple[float, ...], ...]
    body: Block
    out_layout: str  # "single", "tuple", "dict"
    stack: tuple[Transform, ...]  # innermost first

    def ops(self) -> Iterator[Op]:
        """Every op, those inside checkpoint blocks included."""
        yield from _walk(self.body)

    def names(self) -> set[str]:
        return {op.name for op in self.ops()}

    def transforms(self) -> list[str]:
        return [t.name for t in self.stack]


def live_ops(block: Block) -> list[Op]:
    """The ops whose values reach the block's outputs, those in checkpoint blocks included."""
    return _liveness(block, block.outputs)[0]


def _liveness(block: Block, outputs: tuple[int, ...]) -> tuple[list[Op], set[int]]:
    """The ops that ``outputs`` need, and the block inputs they read."""
    live = set(outputs)
    found: list[Op] = []
    first = block.n_in + sum(_n_out(op) for op in block.ops)
    for op in reversed(block.ops):
        first -= _n_out(op)
        if not live.intersection(range(first, first + _n_out(op))):
            continue
        found.append(op)
        if op.name == "pair" and first not in live:  # (a * b, a * 1.0): only a is read
            live.add(op.args[0])
            continue
        if op.block is None:
            live.update(op.args)
            continue
        wanted = tuple(o for k, o in enumerate(op.block.outputs) if first + k in live)
        inner, reads = _liveness(op.block, wanted)
        found += inner
        live.update(op.args[k] for k in reads)
    return found, {i for i in live if i < block.n_in}


def _walk(block: Block) -> Iterator[Op]:
    for op in block.ops:
        yield op
        if op.block is not None:
            yield from _walk(op.block)


def layout_tree(layout: str, leaves: list[Any]) -> Any:
    """The input (or tangent) pytree with these leaves, in the optree/JAX flattening order."""
    if layout == "leaf":
        return leaves[0]
    if layout == "tuple":
        return tuple(leaves)
    if layout == "dict":
        return dict(zip(KEYS, leaves))
    return {"a": leaves[0], "b": tuple(leaves[1:])}  # nested


def in_axes_tree(case: Case, t: Transform) -> Any:
    if t.in_axes_form == "int":
        return 0
    if t.in_axes_form == "none":
        return None
    if t.in_axes_form == "prefix":  # nested layout: one axis for the whole "b" subtree
        return ({"a": t.in_axes[0], "b": t.in_axes[1]},)
    return (layout_tree(case.layout, list(t.in_axes)),)


def pattern(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Fixed, non-symmetric, nonzero float64 values of a shape (weights, tangents, offsets)."""
    n = int(np.prod(shape, dtype=np.int64))
    return (1.0 + 0.5 * np.cos(1.3 * np.arange(n) + 0.7 * seed + 0.4)).reshape(shape)


def leaf_shape(kind: str) -> tuple[int, ...]:
    return (N,) if kind == "v" else ()


# ---------------------------------------------------------------------------------------------
# drawing cases

UNARY = ("sin", "cos", "tanh", "exp", "square", "stop_gradient", "cjvp", "cvjp")
BINARY = ("mul", "add", "sub")
TRANSFORMS = (
    "grad",
    "value_and_grad",
    "jacrev",
    "jacfwd",
    "hessian",
    "jvp",
    "vjp",
    "linearize",
    "hvp",
    "vmap",
    "checkpoint",
)
WITH_ARGNUMS = ("grad", "value_and_grad", "jacrev", "jacfwd", "hessian")


def _broadcast(a: str, b: str) -> str:
    return "v" if "v" in (a, b) else "s"


@st.composite
def _op(draw: Any, types: list[str], names: tuple[str, ...], depth: int) -> tuple[Op, list[str]]:
    """One op over registers of these types; returns it and the types it appends."""
    n = len(types)
    vecs = [i for i, k in enumerate(types) if k == "v"]
    choices = list(UNARY) + list(BINARY) + ["cvjp2", "pair"]
    if "s" in types:
        choices += ["broadcast"]
    if vecs:
        choices += ["sum", "mean", "matmul", "index", "splice"]
    if names:  # weighted up: collectives are the rarer and the more fragile part
        choices += ["psum", "pmean"] * 3
    if depth < 2:
        choices += ["checkpoint"] * 2
    name = draw(st.sampled_from(choices))
    reg = st.integers(0, n - 1)
    if name in UNARY:
        i = draw(reg)
        return Op(name, (i,)), [types[i]]
    if name in ("psum", "pmean"):
        i = draw(reg)
        return Op(name, (i,), draw(st.sampled_from(names))), [types[i]]
    if name in BINARY:
        i, j = draw(reg), draw(reg)
        return Op(name, (i, j)), [_broadcast(types[i], types[j])]
    if name == "pair":  # (a * b, a * 1.0), a custom_jvp with two outputs
        i, j = draw(reg), draw(reg)
        return Op(name, (i, j)), [_broadcast(types[i], types[j]), types[i]]
    if name == "cvjp2":  # a * sin(b), a custom_vjp of two same-shape arguments
        i = draw(reg)
        same = [j for j, k in enumerate(types) if k == types[i]]
        return Op(name, (i, draw(st.sampled_from(same)))), [types[i]]
    if name in ("sum", "mean", "index"):
        i = draw(st.sampled_from(vecs))
        param = draw(st.integers(0, N - 1)) if name == "index" else None
        return Op(name, (i,), param), ["s"]
    if name == "matmul":
        return Op(name, (draw(st.sampled_from(vecs)),)), ["v"]
    if name == "broadcast":  # a scalar expanded to a vector (stride 0 in torch)
        scalars = [i for i, k in enumerate(types) if k == "s"]
        return Op(name, (draw(st.sampled_from(scalars)),)), ["v"]
    if name == "splice":  # cat([a[:k], b[k:]])
        i, j = draw(st.sampled_from(vecs)), draw(st.sampled_from(vecs))
        return Op(name, (i, j), draw(st.integers(1, N - 1))), ["v"]
    # checkpoint: a block over some registers, returning some of its registers
    args = tuple(draw(st.lists(reg, min_size=1, max_size=2)))
    block, out_types = draw(_block([types[i] for i in args], names, depth + 1, max_ops=3))
    return Op("checkpoint", args, None, block), out_types


@st.composite
def _block(
    draw: Any, in_types: list[str], names: tuple[str, ...], depth: int, max_ops: int
) -> tuple[Block, list[str]]:
    types = list(in_types)
    ops = []
    for _ in range(draw(st.integers(1, max_ops))):
        op, new = draw(_op(types, names, depth))
        ops.append(op)
        types += new
    if depth:  # a checkpoint block: one or two of its registers, usually the last
        last = len(types) - 1
        outs = draw(st.lists(st.integers(0, last), min_size=0, max_size=1))
        outputs = (*outs, last)
    else:
        outputs = ()
    return Block(len(in_types), tuple(ops), outputs), [types[i] for i in outputs]


@st.composite
def _transform(draw: Any, kinds: tuple[str, ...], layout: str, used: set[str]) -> Transform:
    name = draw(st.sampled_from(TRANSFORMS + ("vmap",) * 3))  # vmap carries names and axes
    seed = draw(st.integers(0, 5))
    has_aux = name in (*WITH_ARGNUMS, "vjp") and draw(st.integers(0, 3)) == 0
    chunk = draw(st.sampled_from([None, None, 1, 2])) if name in ("jacrev", "jacfwd") else None
    if name in WITH_ARGNUMS and layout == "tuple":
        n = len(kinds)
        one = st.integers(-n, n - 1)
        argnums = draw(
            st.one_of(
                st.none(),
                one,
                # no duplicates: JAX calls the function with the wrong arguments for (0, 0)
                st.lists(one, min_size=1, max_size=2, unique_by=lambda i: i % n).map(tuple),
                st.lists(one, min_size=1, max_size=2, unique_by=lambda i: i % n),
            )
        )
        return Transform(name, seed=seed, argnums=argnums, has_aux=has_aux, chunk_size=chunk)
    if name != "vmap":
        return Transform(name, seed=seed, has_aux=has_aux, chunk_size=chunk)
    size = draw(st.integers(2, 3))
    free = [n for n in ("i", "j") if n not in used]
    axis_name = draw(st.sampled_from([None, *free]))
    out_axes = draw(st.sampled_from([0, 0, -1]))
    form = draw(st.sampled_from(["int", "tree", "tree", "prefix", "none"]))
    if form == "int":
        axes: tuple[int | None, ...] = (0,) * len(kinds)
    elif form == "none":
        axes = (None,) * len(kinds)
    elif form == "prefix" and layout == "nested":
        a = draw(st.sampled_from([0, None] + ([1] if kinds[0] == "v" else [])))
        b_ok = all(k == "v" for k in kinds[1:])
        b = draw(st.sampled_from([0, None] + ([1] if b_ok else [])))
        if a is None and b is None:
            b = 0
        chunk = None if axis_name else draw(st.sampled_from([None, None, 1, 2]))
        return Transform(name, (a, b), "prefix", out_axes, axis_name, size, seed, chunk_size=chunk)
    else:
        form = "tree"
        axes = tuple(draw(st.sampled_from([0, None] + ([1] if k == "v" else []))) for k in kinds)
        if all(a is None for a in axes):
            axes = (0, *axes[1:])
    # chunk_size with an axis name is refused (collectives would see one chunk)
    chunk = None if axis_name else draw(st.sampled_from([None, None, 1, 2]))
    return Transform(name, axes, form, out_axes, axis_name, size, seed, chunk_size=chunk)


@st.composite
def cases(draw: Any, collectives: bool = True, max_ops: int = 8) -> Case:
    """A random program, input and transform stack (up to three transforms)."""
    n_leaves = draw(st.integers(1, 3))
    kinds = tuple(draw(st.sampled_from(["v", "s"])) for _ in range(n_leaves))
    layouts = {
        1: ["leaf", "tuple", "dict"],
        2: ["tuple", "dict", "nested"],
        3: ["tuple", "dict", "nested"],
    }
    layout = draw(st.sampled_from(layouts[n_leaves]))
    stack: list[Transform] = []
    for _ in range(draw(st.integers(1, 3))):
        stack.append(draw(_transform(kinds, layout, {t.axis_name for t in stack})))
    names = tuple(t.axis_name for t in stack if t.axis_name) if collectives else ()
    body, _ = draw(_block(list(kinds), names, 0, max_ops))
    n_regs = n_leaves + sum(_n_out(op) for op in body.ops)
    out_layout = draw(st.sampled_from(["single", "tuple", "dict"]))
    other = draw(st.integers(0, n_regs - 1))
    outputs = (n_regs - 1,) if out_layout == "single" else (other, n_regs - 1)
    body = Block(body.n_in, body.ops, outputs)
    value = st.integers(-8, 8).map(lambda k: k / 8)
    values = tuple(tuple(draw(value) for _ in range(N if k == "v" else 1)) for k in kinds)
    return Case(kinds, layout, values, body, out_layout, tuple(stack))


def _n_out(op: Op) -> int:
    if op.name == "pair":
        return 2
    if op.name == "checkpoint":
        assert op.block is not None
        return len(op.block.outputs)
    return 1


# ---------------------------------------------------------------------------------------------
# rendering a case as code (for reports and hypothesis notes)


def render(case: Case) -> str:
    """The case as Python close to what a user would write (for reports and hypothesis notes)."""
    lines = [f"x = {_render_input(case)}", "def f(x):"]
    leaves = ", ".join(f"r{i}" for i in range(len(case.kinds)))
    lines.append(f"    {leaves}, = tree_leaves(x)")
    lines += _render_block(case.body, "r", "    ")
    outs = [f"r{i}" for i in case.body.outputs]
    ret = {
        "single": outs[0],
        "tuple": f"({', '.join(outs)})",
        "dict": f"{{'u': {outs[0]}, 'v': {outs[-1]}}}",
    }[case.out_layout]
    lines.append(f"    return {ret}")
    expr = "f"
    for t in case.stack:
        expr = _render_transform(case, t, expr)
    lines.append(f"out = {expr}(x)")
    return "\n".join(lines)


def _render_input(case: Case) -> str:
    leaves = [
        f"tensor({list(v)})" if k == "v" else f"tensor({v[0]})"
        for k, v in zip(case.kinds, case.values)
    ]
    if case.layout == "leaf":
        return leaves[0]
    if case.layout == "tuple":
        return f"({', '.join(leaves)},)"
    if case.layout == "dict":
        return "{" + ", ".join(f"'{k}': {v}" for k, v in zip(KEYS, leaves)) + "}"
    return f"{{'a': {leaves[0]}, 'b': ({', '.join(leaves[1:])},)}}"


def _render_block(block: Block, p: str, indent: str) -> list[str]:
    lines, r = [], block.n_in
    for op in block.ops:
        args = [f"{p}{i}" for i in op.args]
        joined = ", ".join(args)
        if op.name == "checkpoint":
            assert op.block is not None
            q = "s" if p == "r" else "t"
            sub = ", ".join(f"{q}{i}" for i in range(op.block.n_in))
            lines.append(f"{indent}def block({sub}):")
            lines += _render_block(op.block, q, indent + "    ")
            outs = [f"{q}{i}" for i in op.block.outputs]
            lines.append(f"{indent}    return {outs[0] if len(outs) == 1 else ', '.join(outs)}")
            targets = ", ".join(f"{p}{r + k}" for k in range(len(outs)))
            lines.append(f"{indent}{targets} = checkpoint(block)({joined})")
            r += len(outs)
            continue
        call = {
            "index": f"{joined}[{op.param}]",
            "splice": f"cat([{args[0]}[:{op.param}], {args[-1]}[{op.param}:]])",
            "matmul": f"M @ {joined}",
            "broadcast": f"{joined}.expand({N})",
            "psum": f"psum({joined}, {op.param!r})",
            "pmean": f"pmean({joined}, {op.param!r})",
        }.get(op.name, f"{op.name}({joined})")
        n = 2 if op.name == "pair" else 1
        lines.append(f"{indent}{', '.join(f'{p}{r + k}' for k in range(n))} = {call}")
        r += n
    return lines


def _render_transform(case: Case, t: Transform, inner: str) -> str:
    aux = ", has_aux=True" if t.has_aux else ""
    aux += f", chunk_size={t.chunk_size}" if t.chunk_size and t.name != "vmap" else ""
    if t.name in WITH_ARGNUMS:
        scalar = t.name in ("grad", "value_and_grad", "hessian")
        fun = f"scalarize({inner})" if scalar else inner
        fun = f"with_aux({fun})" if t.has_aux else fun
        if t.argnums is None:
            return f"{t.name}({fun}{aux})"
        return f"(lambda x: {t.name}(star({fun}), argnums={t.argnums!r}{aux})(*x))"
    if t.name in ("jvp", "linearize"):
        return f"{t.name}_with_fixed_tangent({inner}, seed={t.seed})"
    if t.name == "vjp":
        fun = f"with_aux({inner})" if t.has_aux else inner
        return f"vjp_with_fixed_cotangent({fun}, seed={t.seed}{aux})"
    if t.name == "hvp":
        return f"(lambda x: hvp(scalarize({inner}), (x,), (fixed_tangent(seed={t.seed}),)))"
    if t.name == "vmap":
        extra = f", axis_name={t.axis_name!r}" if t.axis_name else ""
        extra += f", out_axes={t.out_axes}" if t.out_axes else ""
        extra += f", axis_size={t.size}" if t.in_axes_form == "none" else ""
        extra += f", chunk_size={t.chunk_size}" if t.chunk_size else ""
        return f"vmap({inner}, in_axes={in_axes_tree(case, t)!r}{extra})"
    return f"{t.name}({inner})"


# ---------------------------------------------------------------------------------------------
# backends: the same interface over functorch_utils, JAX and torch.func + loops


class TorchOps:
    """Array ops shared by the two torch backends."""

    ns: Any = torch

    def const(self, a: np.ndarray) -> Any:
        return torch.tensor(a, dtype=torch.float64)

    def cat(self, xs: list[Any]) -> Any:
        return torch.cat(xs)

    def broadcast(self, x: Any) -> Any:
        return x.expand(N)

    def expand(self, x: Any, axis: int) -> Any:
        return x.unsqueeze(axis)

    def tree_leaves(self, tree: Any) -> list[Any]:
        return optree.tree_leaves(tree, none_is_leaf=False)

    def tree_map(self, f: Callable[[Any], Any], tree: Any) -> Any:
        return optree.tree_map(f, tree)

    def shape(self, x: Any) -> tuple[int, ...]:
        return tuple(x.shape)

    def call(self, f: Callable[[Any], Any], x: Any) -> Any:
        return f(x)


def make_custom_ops(ns: Any, custom_jvp: Any, custom_vjp: Any) -> dict[str, Callable[..., Any]]:
    """The custom-rule ops, with correct rules, written once for every namespace."""

    @custom_jvp
    def cjvp(x):
        return ns.sin(x) * x

    @cjvp.defjvp
    def cjvp_rule(primals, tangents):
        (x,), (t,) = primals, tangents
        return ns.sin(x) * x, (ns.cos(x) * x + ns.sin(x)) * t

    @custom_jvp
    def pair(a, b):
        return a * b, a * 1.0

    @pair.defjvp
    def pair_rule(primals, tangents):
        (a, b), (ta, tb) = primals, tangents
        return (a * b, a * 1.0), (ta * b + a * tb, ta * 1.0)

    @custom_vjp
    def cvjp(x):
        return x * ns.tanh(x)

    def cvjp_fwd(x):
        return x * ns.tanh(x), (x,)

    def cvjp_bwd(res, g):
        (x,) = res
        th = ns.tanh(x)
        return (g * (th + x * (1.0 - th * th)),)

    cvjp.defvjp(cvjp_fwd, cvjp_bwd)

    @custom_vjp
    def cvjp2(a, b):
        return a * ns.sin(b)

    def cvjp2_fwd(a, b):
        return a * ns.sin(b), (a, b)

    def cvjp2_bwd(res, g):
        a, b = res
        return g * ns.sin(b), g * a * ns.cos(b)

    cvjp2.defvjp(cvjp2_fwd, cvjp2_bwd)
    return {"cjvp": cjvp, "pair": pair, "cvjp": cvjp, "cvjp2": cvjp2}


def _plain_custom_ops(ns: Any) -> dict[str, Callable[..., Any]]:
    return {
        "cjvp": lambda x: ns.sin(x) * x,
        "pair": lambda a, b: (a * b, a * 1.0),
        "cvjp": lambda x: x * ns.tanh(x),
        "cvjp2": lambda a, b: a * ns.sin(b),
    }


class FuBackend(TorchOps):
    name = "functorch_utils"
    chunks = True  # takes chunk_size

    def __init__(self) -> None:
        self.custom = make_custom_ops(torch, fu.custom_jvp, fu.custom_vjp)
        self.grad, self.value_and_grad = fu.grad, fu.value_and_grad
        self.jacrev, self.jacfwd, self.hessian = fu.jacrev, fu.jacfwd, fu.hessian
        self.jvp, self.vjp, self.linearize, self.vmap = fu.jvp, fu.vjp, fu.linearize, fu.vmap
        self.checkpoint, self.stop_gradient = fu.checkpoint, fu.stop_gradient
        self.psum, self.pmean = fu.psum, fu.pmean
        self.hvp = fu.hvp


class RefBackend(TorchOps):
    """torch.func for derivatives, a loop for vmap; custom rules and checkpoint run plainly."""

    name = "torch.func + loops"
    chunks = False

    def __init__(self) -> None:
        self.custom = _plain_custom_ops(torch)
        self.jvp, self.vjp = torch.func.jvp, torch.func.vjp

    def _derivative(self, which: str, f: Callable, argnums: Any, **kw: Any) -> Callable:
        def d(*xs: Any) -> Any:
            an = _nonnegative(argnums, len(xs))
            return getattr(torch.func, which)(f, argnums=an, **kw)(*xs)

        return d

    def grad(self, f: Callable[..., Any], argnums: Any = 0, has_aux: bool = False) -> Callable:
        return self._derivative("grad", f, argnums, has_aux=has_aux)

    def jacrev(self, f: Callable[..., Any], argnums: Any = 0, has_aux: bool = False) -> Callable:
        return self._derivative("jacrev", f, argnums, has_aux=has_aux)

    def jacfwd(self, f: Callable[..., Any], argnums: Any = 0, has_aux: bool = False) -> Callable:
        return self._derivative("jacfwd", f, argnums, has_aux=has_aux)

    def hessian(self, f: Callable[..., Any], argnums: Any = 0, has_aux: bool = False) -> Callable:
        # torch.func.hessian has no has_aux: its definition, jacfwd(jacrev)
        inner = self._derivative("jacrev", f, argnums, has_aux=has_aux)
        return self._derivative("jacfwd", inner, argnums, has_aux=has_aux)

    def value_and_grad(
        self, f: Callable[..., Any], argnums: Any = 0, has_aux: bool = False
    ) -> Callable[..., Any]:
        gv = self._derivative("grad_and_value", f, argnums, has_aux=has_aux)

        def vg(*xs: Any) -> Any:
            g, v = gv(*xs)
            return v, g

        return vg

    def hvp(self, f: Callable[..., Any], primals: tuple, tangents: tuple) -> Any:
        return torch.func.jvp(torch.func.grad(f), primals, tangents)

    def linearize(self, f: Callable[..., Any], x: Any) -> Any:
        # torch.func.linearize traces with make_fx (warnings, no nesting): a jvp per call instead
        return f(x), lambda t: torch.func.jvp(f, (x,), (t,))[1]

    def checkpoint(self, f: Callable[..., Any]) -> Callable[..., Any]:
        return f

    def stop_gradient(self, x: Any) -> Any:
        return x.detach()

    def psum(self, x: Any, name: str) -> Any:
        raise NotImplementedError("the loop reference has no collectives")

    pmean = psum

    def vmap(
        self,
        f: Callable[..., Any],
        in_axes: Any = 0,
        out_axes: int = 0,
        axis_name: str | None = None,
        axis_size: int | None = None,
    ) -> Callable[..., Any]:
        def looped(x: Any) -> Any:
            axes = in_axes[0] if isinstance(in_axes, tuple) else in_axes
            leaves, spec = optree.tree_flatten(x)
            full = _broadcast_prefix(axes, x)
            size = axis_size
            for leaf, a in zip(leaves, full):
                if a is not None:
                    size = leaf.shape[a]
            assert size is not None
            outs = []
            for k in range(size):
                member = [leaf if a is None else leaf.select(a, k) for leaf, a in zip(leaves, full)]
                outs.append(f(optree.tree_unflatten(spec, member)))
            return optree.tree_map(lambda *ys: _stack(ys, out_axes), *outs)

        return looped


def _nonnegative(argnums: Any, n: int) -> Any:
    """argnums as torch.func takes them: an int or a tuple, counted from the front
    (torch.func.jacfwd gives zeros for a negative argnum: torch 2.13)."""
    if isinstance(argnums, int):
        return argnums % n
    return tuple(a % n for a in argnums)


def _stack(ys: tuple[Any, ...], out_axes: int) -> Any:
    if out_axes < 0:
        out_axes += ys[0].dim() + 1
    return torch.stack(ys, out_axes)


def _broadcast_prefix(axes: Any, tree: Any) -> list[Any]:
    """One axis per leaf of ``tree`` from the prefix ``axes``."""
    full = optree.tree_broadcast_prefix(axes, tree, none_is_leaf=True)
    return optree.tree_leaves(full, none_is_leaf=True)


class JaxBackend:
    name = "jax"
    chunks = False

    def __init__(self) -> None:
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        self.jax, self.ns = jax, jnp
        self.custom = make_custom_ops(jnp, jax.custom_jvp, jax.custom_vjp)
        self.grad, self.value_and_grad = jax.grad, jax.value_and_grad
        self.jacrev, self.jacfwd, self.hessian = jax.jacrev, jax.jacfwd, jax.hessian
        self.jvp, self.vjp, self.linearize = jax.jvp, jax.vjp, jax.linearize
        self.checkpoint, self.stop_gradient = jax.checkpoint, jax.lax.stop_gradient
        self.psum, self.pmean = jax.lax.psum, jax.lax.pmean

    def hvp(self, f: Callable[..., Any], primals: tuple, tangents: tuple) -> Any:
        return self.jax.jvp(self.jax.grad(f), primals, tangents)

    def vmap(self, f: Callable[..., Any], **kw: Any) -> Callable[..., Any]:
        return self.jax.vmap(f, **kw)

    def const(self, a: np.ndarray) -> Any:
        return self.ns.asarray(a, dtype=self.ns.float64)

    def cat(self, xs: list[Any]) -> Any:
        return self.ns.concatenate(xs)

    def broadcast(self, x: Any) -> Any:
        return self.ns.broadcast_to(x, (N,))

    def expand(self, x: Any, axis: int) -> Any:
        return self.ns.expand_dims(x, axis)

    def tree_leaves(self, tree: Any) -> list[Any]:
        return self.jax.tree_util.tree_leaves(tree)

    def tree_map(self, f: Callable[[Any], Any], tree: Any) -> Any:
        return self.jax.tree_util.tree_map(f, tree)

    def shape(self, x: Any) -> tuple[int, ...]:
        return tuple(x.shape)

    def call(self, f: Callable[[Any], Any], x: Any) -> Any:
        # compiled: a few times cheaper than JAX's op-by-op dispatch for programs seen once
        return self.jax.jit(f)(x)


# ---------------------------------------------------------------------------------------------
# the interpreter


def _run_block(bk: Any, block: Block, regs: list[Any]) -> list[Any]:
    regs = list(regs)
    ns = bk.ns
    for op in block.ops:
        a = [regs[i] for i in op.args]
        name = op.name
        if name in ("sin", "cos", "tanh", "exp"):
            regs.append(getattr(ns, name)(a[0]))
        elif name == "square":
            regs.append(a[0] * a[0])
        elif name == "mul":
            regs.append(a[0] * a[1])
        elif name == "add":
            regs.append(a[0] + a[1])
        elif name == "sub":
            regs.append(a[0] - a[1])
        elif name == "sum":
            regs.append(a[0].sum())
        elif name == "mean":
            regs.append(a[0].mean())
        elif name == "matmul":
            regs.append(bk.const(MATRIX) @ a[0])
        elif name == "broadcast":
            regs.append(bk.broadcast(a[0]))
        elif name == "index":
            regs.append(a[0][op.param])
        elif name == "splice":
            regs.append(bk.cat([a[0][: op.param], a[1][op.param :]]))
        elif name == "stop_gradient":
            regs.append(bk.stop_gradient(a[0]))
        elif name in ("psum", "pmean"):
            regs.append(getattr(bk, name)(a[0], op.param))
        elif name == "pair":
            regs.extend(bk.custom["pair"](*a))
        elif name in ("cjvp", "cvjp", "cvjp2"):
            regs.append(bk.custom[name](*a))
        elif name == "checkpoint":
            assert op.block is not None
            sub = op.block

            def body(*xs: Any, sub: Block = sub) -> Any:
                r = _run_block(bk, sub, list(xs))
                outs = tuple(r[i] for i in sub.outputs)
                return outs if len(outs) > 1 else outs[0]

            out = bk.checkpoint(body)(*a)
            regs.extend(out if len(sub.outputs) > 1 else (out,))
        else:  # pragma: no cover - the drawing makes only the ops above
            raise AssertionError(name)
    return regs


def program(bk: Any, case: Case) -> Callable[[Any], Any]:
    def f(x: Any) -> Any:
        regs = _run_block(bk, case.body, bk.tree_leaves(x))
        outs = [regs[i] for i in case.body.outputs]
        if case.out_layout == "single":
            return outs[0]
        if case.out_layout == "tuple":
            return tuple(outs)
        return {"u": outs[0], "v": outs[-1]}

    return f


def scalarize(bk: Any, tree: Any) -> Any:
    total = 0.0
    for k, leaf in enumerate(bk.tree_leaves(tree)):
        total = total + (leaf * bk.const(pattern(bk.shape(leaf), k))).sum()
    return total


def _fixed_tree(bk: Any, case: Case, seed: int, scale: float = 1.0) -> Any:
    leaves = [bk.const(scale * pattern(leaf_shape(k), seed + i)) for i, k in enumerate(case.kinds)]
    return layout_tree(case.layout, leaves)


def apply_transform(bk: Any, case: Case, t: Transform, f: Callable[[Any], Any]) -> Callable:
    name = t.name
    if name in WITH_ARGNUMS:
        return _derivative(bk, t, f)
    if name == "hvp":
        return lambda x: tuple(
            bk.hvp(lambda x: scalarize(bk, f(x)), (x,), (_fixed_tree(bk, case, t.seed),))
        )
    if name == "checkpoint":
        return bk.checkpoint(f)
    if name == "jvp":
        return lambda x: tuple(bk.jvp(f, (x,), (_fixed_tree(bk, case, t.seed),)))
    if name == "linearize":

        def lin(x: Any) -> Any:
            out, f_jvp = bk.linearize(f, x)
            return out, f_jvp(_fixed_tree(bk, case, t.seed))

        return lin
    if name == "vjp":

        def vjp(x: Any) -> Any:
            if t.has_aux:
                out, vjp_fn, aux = bk.vjp(lambda x: _with_aux(f(x)), x, has_aux=True)
            else:
                out, vjp_fn = bk.vjp(f, x)
            ct = bk.tree_map(lambda o: bk.const(pattern(bk.shape(o), t.seed)), out)
            return (out, vjp_fn(ct)[0], aux) if t.has_aux else (out, vjp_fn(ct)[0])

        return vjp
    assert name == "vmap"
    kw: dict[str, Any] = {"in_axes": in_axes_tree(case, t), "out_axes": t.out_axes}
    if t.axis_name:
        kw["axis_name"] = t.axis_name
    if t.in_axes_form == "none":
        kw["axis_size"] = t.size
    if t.chunk_size is not None and bk.chunks:
        kw["chunk_size"] = t.chunk_size
    mapped = bk.vmap(f, **kw)
    axes = _leaf_axes(case, t)

    def batched(x: Any) -> Any:
        leaves = bk.tree_leaves(x)
        big = []
        for i, (leaf, a) in enumerate(zip(leaves, axes)):
            if a is None:
                big.append(leaf)
                continue
            shape = list(leaf_shape(case.kinds[i]))
            shape.insert(a, t.size)
            big.append(bk.expand(leaf, a) + bk.const(0.25 * pattern(tuple(shape), t.seed + i)))
        return mapped(layout_tree(case.layout, big))

    return batched


def _with_aux(out: Any, main: Any = None) -> tuple[Any, Any]:
    """``(main, aux)`` for has_aux: the aux is the function's output, in a dict."""
    return (out if main is None else main), {"aux": out}


def _derivative(bk: Any, t: Transform, f: Callable[[Any], Any]) -> Callable:
    """grad, value_and_grad, jacrev, jacfwd, hessian, with their argnums and has_aux."""
    scalar = t.name in ("grad", "value_and_grad", "hessian")

    def objective(*xs: Any) -> Any:
        out = f(tuple(xs) if t.argnums is not None else xs[0])
        main = scalarize(bk, out) if scalar else out
        return _with_aux(out, main) if t.has_aux else main

    kw: dict[str, Any] = {}
    if t.argnums is not None:  # tuple layout: the leaves become positional arguments
        kw["argnums"] = t.argnums
    if t.has_aux:
        kw["has_aux"] = True
    if t.chunk_size is not None and bk.chunks:
        kw["chunk_size"] = t.chunk_size
    d = getattr(bk, t.name)(objective, **kw)
    return (lambda x: d(*x)) if t.argnums is not None else d


def _leaf_axes(case: Case, t: Transform) -> tuple[int | None, ...]:
    if t.in_axes_form == "prefix":
        a, b = t.in_axes
        return (a,) + (b,) * (len(case.kinds) - 1)
    return t.in_axes


def build(bk: Any, case: Case) -> Callable[[Any], Any]:
    f = program(bk, case)
    for t in case.stack:
        f = apply_transform(bk, case, t, f)
    return f


def inputs(bk: Any, case: Case) -> Any:
    leaves = [
        bk.const(np.array(v if k == "v" else v[0], dtype=np.float64))
        for k, v in zip(case.kinds, case.values)
    ]
    return layout_tree(case.layout, leaves)


def run(bk: Any, case: Case, x: Any = None) -> Any:
    return bk.call(build(bk, case), inputs(bk, case) if x is None else x)


# ---------------------------------------------------------------------------------------------
# comparing results


def plain(tree: Any, force: bool = False) -> Any:
    """Nested dicts/tuples/lists of numpy arrays, whatever the library. ``force`` converts
    torch's internal ZeroTensor (torch.func returns it for some zero derivatives)."""
    if isinstance(tree, dict):
        return {k: plain(v, force) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(plain(v, force) for v in tree)
    if isinstance(tree, torch.Tensor):
        if force:  # adding a real zero materialises it (numpy(force=True) on one crashes later)
            return (tree.detach() + torch.zeros(tree.shape, dtype=tree.dtype)).cpu().numpy()
        return tree.detach().cpu().numpy()
    return np.asarray(tree)


def structure(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: structure(v) for k, v in sorted(tree.items())}
    if isinstance(tree, (tuple, list)):
        return (type(tree).__name__, [structure(v) for v in tree])
    return (str(tree.dtype), tree.shape)


def mismatch(ours: Any, ref: Any, rtol: float = 1e-9) -> str | None:
    """None when the two plain trees agree; otherwise what differs."""
    if structure(ours) != structure(ref):
        return f"structure: ours {structure(ours)}, reference {structure(ref)}"
    for a, b in zip(optree.tree_leaves(ours), optree.tree_leaves(ref)):
        scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
        if not np.allclose(a, b, rtol=rtol, atol=rtol * scale, equal_nan=True):
            return f"values: ours\n{ours}\nreference\n{ref}"
    return None


def finite_and_moderate(tree: Any, bound: float = 1e6) -> bool:
    leaves = optree.tree_leaves(tree)
    return all(np.all(np.isfinite(x)) and np.max(np.abs(x), initial=0.0) < bound for x in leaves)


# ---------------------------------------------------------------------------------------------
# grad modes: the answer must not depend on them


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


GRAD_MODES: dict[str, tuple[Callable[[], Any], bool]] = {
    # name: (context, inputs require grad)
    "no_grad": (torch.no_grad, False),
    "inference_mode": (torch.inference_mode, False),
    "requires_grad": (_nothing, True),
    "no_grad+requires_grad": (torch.no_grad, True),
}


def run_in_mode(bk: Any, case: Case, mode: str) -> Any:
    context, requires_grad = GRAD_MODES[mode]
    x = inputs(bk, case)
    if requires_grad:
        x = optree.tree_map(lambda t: t.requires_grad_(True), x)
    with context():
        return run(bk, case, x)


# ---------------------------------------------------------------------------------------------
# one differential check


class Rejected(Exception):
    """The reference cannot run the case (JAX refuses it, or the values overflow)."""


def reference(bk: Any, case: Case) -> Any:
    try:
        out = plain(run(bk, case), force=True)
    except Exception as e:  # the reference refusing a case is not a finding
        raise Rejected(f"{bk.name}: {type(e).__name__}: {e}") from e
    if not finite_and_moderate(out):
        raise Rejected(f"{bk.name}: values overflow")
    return out


def disagreement(
    bk: Any, case: Case, ref: Any, mode: str | None = None, zero_tensor_ok: bool = False
) -> str | None:
    """None when ``bk`` (in grad mode ``mode``) agrees with ``ref``; otherwise what went wrong.
    A result holding torch's internal ZeroTensor is a finding unless ``zero_tensor_ok``."""
    try:
        out = run(bk, case) if mode is None else run_in_mode(bk, case, mode)
        ours = plain(out, force=zero_tensor_ok)
    except Exception as e:
        return f"raised {type(e).__name__}: {str(e)[:300]}"
    return mismatch(ours, ref)
