"""Which Keras layers reach working C++: one small model per layer (tests/test_keras.py's LAYERS),
through four paths, as a Markdown table (README "Real SOFIE"):

- `sofie.keras.parse`: SOFIE's own Keras parser on the saved `.keras` file, then SOFIE generates
  code ("parses" means parse and generate succeed; the parser needs TensorFlow's Keras, so run this
  in a venv with TensorFlow: without it the column reads "needs TensorFlow");
- the project: `from_keras` -> our C++ header, compiled, matching Keras at 1e-4;
- the project's export through SOFIE: `to_rmodel(route="onnx")` -> SOFIE's header, compiled,
  matching Keras at 1e-4;
- SOFIE's operators: `to_rmodel(route="operators")` -> SOFIE's header, compiled, matching Keras.

Run: python benchmarks/sofie_coverage.py [--only conv2d_same,lstm] [--json coverage.json]
(outside CI: every layer model is compiled three times; nothing is asserted)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402

PATHS = ("sofie.keras.parse", "jaxpr2sofie", "export through SOFIE", "SOFIE's operators")


def _close(got, want, atol=1e-4) -> str:
    got = list(got) if isinstance(got, tuple) else [got]
    if len(got) != len(want):
        return f"{len(got)} outputs, Keras {len(want)}"
    for g, w in zip(got, want):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g.shape != w.shape:
            return f"shape {g.shape} != {w.shape}"
        err, scale = float(np.max(np.abs(g - w), initial=0.0)), max(float(np.max(np.abs(w), initial=0.0)), 1e-2)
        if not err <= atol * scale:
            return f"off by {err:.2g}"
    return ""


def _first_line(e: Exception) -> str:
    if getattr(e, "problems", None):   # the operators the route cannot take, by type
        return type(e).__name__ + ": " + ", ".join(sorted({p[0] for p in e.problems}))
    text = str(e).strip().splitlines()
    return (type(e).__name__ + ": " + (text[0] if text else ""))[:90]


def keras_parser(model, name: str) -> str:
    """'yes', or why not, for SOFIE's own Keras parser."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return "needs TensorFlow"
    import sofie
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.keras"
        try:
            model.save(path)
            rm = sofie.keras.parse(str(path))
            rm.generate()
        except Exception as e:   # the parser's refusal, whatever its type
            return "no: " + _first_line(e)
    return "yes"


def row(name: str, factory, specs) -> dict:
    import jaxpr2sofie as j2s
    from test_keras import layer_model, randomise, flat
    rng = np.random.default_rng(7)
    model = randomise(layer_model(factory(), specs))
    xs = [s.sample(rng) for s in specs]
    x = xs if len(xs) > 1 else xs[0]
    want = flat(model(x, training=False))
    out = {"layer": name, PATHS[0]: keras_parser(model, name)}
    try:
        m = j2s.from_keras(model, example_input=x, name="Cov")
    except Exception as e:
        return {**out, **{p: "no: " + _first_line(e) for p in PATHS[1:]}}
    runs = {PATHS[1]: lambda: m.compile(), PATHS[2]: lambda: m.compile_sofie(route="onnx"),
            PATHS[3]: lambda: m.compile_sofie(route="operators")}
    for path, build in runs.items():
        try:
            why = _close(build()(*flat(x)), want)
            out[path] = "yes" if not why else "wrong: " + why
        except Exception as e:
            out[path] = "no: " + _first_line(e)
    return out


def table(rows) -> str:
    lines = ["| layer model | " + " | ".join(PATHS) + " |", "|---" * (len(PATHS) + 1) + "|"]
    for r in rows:
        lines.append(f"| `{r['layer']}` | " + " | ".join(r[p] for p in PATHS) + " |")
    totals = []
    for p in PATHS:
        cells = [r[p] for r in rows]
        totals.append(cells[0] if len(set(cells)) == 1 and cells[0] == "needs TensorFlow"
                      else f"{sum(c == 'yes' for c in cells)}/{len(cells)}")
    lines.append("| **handled** | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated layer model names (default: all)")
    ap.add_argument("--json", default="", help="also write the rows to this file")
    args = ap.parse_args(argv)
    from test_keras import LAYERS
    wanted = set(filter(None, args.only.split(",")))
    chosen = [(n, f, s) for n, f, s in LAYERS if not wanted or n in wanted]
    if wanted - {n for n, _, _ in chosen}:
        ap.error(f"unknown layer model(s): {', '.join(sorted(wanted - {n for n, _, _ in chosen}))}")
    rows = []
    for k, (name, factory, specs) in enumerate(chosen):
        rows.append(row(name, factory, specs))
        print(f"[{k + 1}/{len(chosen)}] {name}: " + ", ".join(f"{p}: {rows[-1][p]}" for p in PATHS),
              file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
