"""The generated C++ reads like code a person wrote (issue 22, item 6): tensors named after the
user's layers and scopes, one comment per operator saying what it computes and on which source
line the user wrote it, indentation that follows the nesting, and index arithmetic done at
conversion time where it is known. Each model here is also compiled and compared with JAX: a
readable header that computes something else would be worse than an unreadable one."""
from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from helpers import convert_and_check

THIS_FILE = "test_readable_code.py"


class Tagger(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="stem")(x))
        x = nn.max_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1)
        x = nn.LayerNorm(name="norm")(nn.Dense(16, name="hidden")(x))
        return nn.Dense(3, name="head")(nn.gelu(x))


def _tagger():
    m = Tagger()
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
    variables = m.init(jax.random.PRNGKey(0), x)
    return convert_and_check(lambda v, x: m.apply(v, x), variables, x, atol=1e-4, name="Tagger")


def _run_body(header: str) -> list[str]:
    lines = header.splitlines()
    start = next(i for i, l in enumerate(lines) if re.match(r"\s+void run\(", l))
    depth, body = 0, []
    for line in lines[start:]:
        body.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0 and len(body) > 1:
            return body
    raise AssertionError("run() does not close")


def test_tensors_are_named_after_the_layers_that_make_them():
    header = _tagger().header()
    declared = set(re.findall(r"float\* tensor_(\w+) = nullptr;", header))
    # the layer's own name, without the model's class (every tensor would carry it)
    for layer in ("hidden", "norm"):
        assert any(t.startswith(layer + "_") for t in declared), (layer, sorted(declared))
    assert not any(t.startswith("Tagger_") for t in declared), sorted(declared)


def test_every_operator_says_what_it_computes_and_where_the_user_wrote_it():
    m = _tagger()
    body = _run_body(m.header())
    comments = [l.strip() for l in body if l.strip().startswith("//")]
    sourced = [c for c in comments if re.search(r"@ \S*" + re.escape(THIS_FILE) + r":\d+", c)]
    ops = [op for op in m.graph.walk() if not op.aliases_input]
    assert len(sourced) >= len(ops) - 1, (len(ops), comments)
    # the layer comes first, then the SOFIE-style operator, then the primitive and source line
    at = next(i for i, c in enumerate(comments) if c.startswith("// hidden: Gemm"))
    assert re.search(r"dot_general @ \S*" + re.escape(THIS_FILE) + r":\d+ ", " ".join(comments[at:at + 2])), comments
    assert any(c.startswith("// stem: Conv") for c in comments), comments


def test_named_scope_and_gradient_keep_the_users_names():
    def loss(w, x):
        with jax.named_scope("encoder"):
            h = jnp.tanh(x @ w["w"])
        return jnp.sum(h * h)

    w = {"w": np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)}
    x = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    m = convert_and_check(jax.grad(loss, argnums=1), w, x, atol=1e-4, name="Grad")
    header = m.header()
    names = set(re.findall(r"tensor_(\w+)", header))
    assert any(n.startswith("encoder_") for n in names), sorted(names)
    # JAX wraps the scope in jvp(...) and transpose(...) for the gradient: no such names leak out
    assert not any("jvp" in n or "transpose_jvp" in n for n in names), sorted(names)


def test_indentation_follows_the_nesting():
    header = _tagger().header()
    lines = header.splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "namespace detail {")
    outer = len(lines[start]) - len(lines[start].lstrip())
    end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("} // namespace detail"))
    inner = [l for l in lines[start + 1:end] if l.strip()]
    assert inner and all(l.startswith(" " * (outer + 3)) for l in inner), \
        next(l for l in inner if not l.startswith(" " * (outer + 3)))
    assert not any("\t" in l for l in lines)


def test_known_sizes_and_offsets_are_numbers_not_expressions():
    header = _tagger().header()
    allocate = header[header.index("void allocate("):header.index("void load_weights(")]
    assert "+ 63) / 64" not in allocate and "const size_t off" not in allocate, allocate
    body = "\n".join(_run_body(header))
    # border pixels of the first convolution: their window is worked out at conversion time
    assert not re.search(r"static_cast<std::int64_t>\(\d+\)", body), body
    assert not re.search(r"\b0 - \d", body) and not re.search(r"\w \+ 0[,)]", body), body
