"""The layout's import rules, read from the source (AST), and the operator contract.

- `ir/` (dimensions, tensors, graphs, operator classes) imports no pass and no backend;
- `passes/` (backend-neutral rewrites) imports the IR only;
- each backend (`cpp/`, `onnx/`, `rmodel/`) imports the IR and never another backend;
- the front end (trace, bridges, lowering, the primitive table) imports no backend: it builds IR,
  and only the public API module (`model.py`) hands that IR to a backend;
- every operator class has a C++ rule, an ONNX rule and an RModel rule (or a stated reason it has
  none) and an answer to "are its rows independent".
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxpr2sofie"

FRONT_END = ("trace", "lowering", "keras_bridge", "flax_bridge", "values", "source", "primitives", "params_check",
             "options", "outputs")
BACKENDS = ("cpp", "onnx", "rmodel")
# sofie_backend.py, ROOT's own SOFIE generating the header, reads our ONNX export (RModelParser_ONNX):
# the one module allowed to build on another backend, and never on the C++ one
SOFIE_ROUTE = "sofie_backend"
# what each layer may import inside the package (first component after `jaxpr2sofie.`)
ALLOWED = {
    "ir": {"ir", "errors"},
    "passes": {"ir", "passes", "errors"},
    "cpp": {"cpp", "ir", "errors", "progress"},
    "onnx": {"onnx", "ir", "errors"},
    "rmodel": {"rmodel", "ir", "errors"},
    **{f: {"ir", "errors", *FRONT_END} for f in FRONT_END},
}
# the bridges return a SofieModel: they call the public API module, which reaches the backends;
# `options` reads the options from convert's signature there
for _bridge in ("keras_bridge", "flax_bridge", "options"):
    ALLOWED[_bridge] = ALLOWED[_bridge] | {"model"}


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set:
    """Every module of the package `path` imports (at the top or inside a function)."""
    mod = _module(path)
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "jaxpr2sofie"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:   # from . import x, y: the names are modules
                    out |= {f"{target}.{a.name}" for a in node.names}
                    continue
            else:
                target = node.module or ""
            if target.split(".")[0] == "jaxpr2sofie":
                out.add(target)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _files():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_import_rules(layer):
    bad = []
    for path in _files():
        if _layer(_module(path)) != layer:
            continue
        for target in sorted(_imports(path)):
            if _layer(target) not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not bad, f"{layer}/ may import only {sorted(ALLOWED[layer])}:\n" + "\n".join(bad)


def test_backends_never_import_each_other():
    for path in _files():
        me = _layer(_module(path))
        if me in BACKENDS:
            others = {_layer(t) for t in _imports(path)} & (set(BACKENDS) - {me})
            assert not others, f"{path.relative_to(PACKAGE)} (backend {me}) imports backend(s) {sorted(others)}"


def test_sofie_route_builds_on_onnx_only():
    path = PACKAGE / f"{SOFIE_ROUTE}.py"
    assert "cpp" not in {_layer(t) for t in _imports(path)}


def test_front_end_imports_no_backend():
    """Belt and braces over test_import_rules: no front-end module names a backend."""
    for path in _files():
        if _layer(_module(path)) in FRONT_END:
            hit = {_layer(t) for t in _imports(path)} & {*BACKENDS, SOFIE_ROUTE}
            assert not hit, f"{path.relative_to(PACKAGE)} imports backend(s) {sorted(hit)}"


def test_no_package_named_sofie():
    """`sofie` is the PyPI package of ROOT's SOFIE (a backend we will drive): no module of ours shadows it."""
    assert not (PACKAGE / "sofie").exists() and not (PACKAGE / "sofie.py").exists()


def _operator_classes():
    import jaxpr2sofie.ir.ops as ops_pkg
    from jaxpr2sofie.ir.ops.base import Op
    import importlib
    import pkgutil
    for info in pkgutil.iter_modules(ops_pkg.__path__):
        importlib.import_module(f"jaxpr2sofie.ir.ops.{info.name}")

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    # abstract bases (a class whose name starts with "_", or View: the strided-copy family) are not operators
    return sorted({c for c in subclasses(Op) if not c.__name__.startswith("_") and c.__module__.startswith("jaxpr2sofie.ir.")
                   and not inspect.isabstract(c) and c.__name__ not in ABSTRACT}, key=lambda c: c.__name__)


ABSTRACT = {"View"}

# operator classes with no ONNX rule, and why
NO_ONNX = {
    "FusedElementwise": "exported as its steps (onnx.expand): ONNX has no fused-loop operator",
    "DimValue": "the batch size read as a value (jax dim_as_value): not exported yet, OnnxExportError names it",
    "Iota": "an iota over the run-time batch: not exported yet, OnnxExportError names it",
}


def test_every_operator_has_a_cpp_rule():
    from jaxpr2sofie.cpp import emit  # noqa: F401  (registers the rules)
    from jaxpr2sofie.cpp.rules import RULES
    missing = [c.__name__ for c in _operator_classes() if c not in RULES]
    assert not missing, f"operator classes without a C++ rule (cpp/ops/, @emits): {missing}"


def test_every_operator_has_an_onnx_rule_or_a_reason():
    pytest.importorskip("onnx")
    from jaxpr2sofie.onnx import RULES
    missing = [c.__name__ for c in _operator_classes() if c not in RULES and c.__name__ not in NO_ONNX]
    assert not missing, f"operator classes without an ONNX rule (onnx/, @exports) or a reason in NO_ONNX: {missing}"
    stale = [n for n in NO_ONNX if any(c.__name__ == n and c in RULES for c in _operator_classes())]
    assert not stale, f"NO_ONNX lists classes that do have a rule: {stale}"


def test_every_operator_has_an_rmodel_rule_or_a_reason():
    """SOFIE's operators route (rmodel/): a rule building bound ROperator_* objects, or why not
    (rmodel.NO_RULE, which the user's error quotes)."""
    from jaxpr2sofie.rmodel import NO_RULE, RULES
    missing = [c.__name__ for c in _operator_classes() if c not in RULES and c.__name__ not in NO_RULE]
    assert not missing, f"operator classes without an RModel rule (rmodel/, @builds) or a reason in NO_RULE: {missing}"
    stale = [n for n in NO_RULE if any(c.__name__ == n and c in RULES for c in _operator_classes())]
    assert not stale, f"NO_RULE lists classes that do have a rule: {stale}"
    unknown = [n for n in NO_RULE if n not in {c.__name__ for c in _operator_classes()}]
    assert not unknown, f"NO_RULE names no operator class: {unknown}"


def test_every_operator_answers_row_independence():
    """`rows(g)` says whether the operator keeps the batch's rows apart; a class without an answer
    would silently turn threads off for every model that uses it."""
    from jaxpr2sofie.ir.ops.base import Op
    missing = [c.__name__ for c in _operator_classes() if c.rows is Op.rows]
    assert not missing, f"operator classes without a rows() answer: {missing}"


def test_vector_kinds_agree():
    """The IR's list of elementwise kinds with a vector form is what the C++ backend implements."""
    from jaxpr2sofie.cpp.ops.fused import VECTOR_CALLS
    from jaxpr2sofie.cpp.vmath import KINDS
    from jaxpr2sofie.ir.ops.elementwise import VECTOR_KINDS
    assert set(KINDS) == set(VECTOR_CALLS) == set(VECTOR_KINDS)
