"""Every case of the primitive table, converted, compiled and compared with JAX; plus the coverage tests
(jaxpr-only: they trace the cases with JAX and never run the converter)."""
from __future__ import annotations

import jax
import pytest

from jaxpr2sofie.primitives import ABSENT_FROM_JAX, HANDLERS
from primitive_cases import all_cases
from jaxpr2sofie.trace import primitive_inventory

from helpers import run_case

CASES = all_cases()


def _marks(c):
    marks = []
    if c.known_bug:
        marks.append(pytest.mark.skip(reason=f"open bug: {c.known_bug}"))
    return marks


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=_marks(c)) for c in CASES])
def test_case_matches_jax(case):
    run_case(case)


def _traced_primitives(case):
    inputs = case.inputs
    if case.batch == "dynamic":
        from jax import export   # imported: `import jax` alone does not load jax.export in jax 0.7
        (n,) = export.symbolic_shape("N")
        inputs = [jax.ShapeDtypeStruct((n, *a.shape[1:]), a.dtype) for a in inputs]
    if case.params is None:
        closed = jax.make_jaxpr(case.fn)(*inputs)
    else:
        closed = jax.make_jaxpr(case.fn)(case.params, *inputs)
    return set(primitive_inventory(closed))


@pytest.mark.jaxpr_only
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_case_jaxpr_has_claimed_primitives_no_conversion(case):
    """Traces the case with JAX only -- the converter does not run, so these tests say nothing about
    conversion (test_case_matches_jax does). A JAX release that lowers a function differently is
    caught here, not in a user's model."""
    found = _traced_primitives(case)
    # an older JAX (the declared floor) lowers e.g. jnp.stack to other primitives: the case still
    # runs through the converter (test_case_matches_jax), it only cannot contain what JAX lacks
    missing = set(case.primitives) - found - ABSENT_FROM_JAX
    assert not missing, f"case {case.name} claims {sorted(missing)} but its jaxpr has {sorted(found)}"


def test_every_registered_primitive_has_a_case():
    claimed = {p for c in CASES for p in c.primitives}
    untested = sorted(set(HANDLERS) - claimed)
    assert not untested, f"registered primitives without a test case: {untested}"


def test_every_registered_primitive_has_several_cases():
    """Several shapes per primitive: one lucky shape proves little about the index arithmetic."""
    from collections import Counter
    count = Counter(p for c in CASES for p in set(c.primitives))
    thin = sorted(p for p in HANDLERS if count[p] < 2)
    assert not thin, f"primitives with a single test case: {thin}"


from jaxpr2sofie.ir.ops.fused import FusedElementwise  # noqa: E402


def _op_types(graph) -> set:
    """Operator types, with a fused elementwise loop's steps (they still run, in one loop)."""
    ops = list(graph.walk())
    return {op.op_type for op in ops} | {s.op_type for op in ops if isinstance(op, FusedElementwise) for s in op.steps}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES if c.ops or c.no_ops])
def test_case_emits_declared_operators(case):
    """A fast path (a Loop instead of N unrolled copies, a fused Relu) that stops firing fails here."""
    import jaxpr2sofie as j2s
    if ABSENT_FROM_JAX & set(case.primitives):
        pytest.skip(f"this JAX ({jax.__version__}) has no {sorted(ABSENT_FROM_JAX & set(case.primitives))}: "
                    "the declared operators are those of its rule")
    if case.params is None:
        m = j2s.convert(lambda xs: case.fn(*xs), None, tuple(case.inputs), batch=case.batch)
    else:
        m = j2s.convert(lambda p, xs: case.fn(p, *xs), case.params, tuple(case.inputs), batch=case.batch)
    found = _op_types(m.graph)
    missing = set(case.ops) - found
    assert not missing, f"case {case.name} must emit {sorted(missing)}; the graph has {sorted(found)}"
    unwanted = set(case.no_ops) & found
    assert not unwanted, f"case {case.name} must not emit {sorted(unwanted)}"
