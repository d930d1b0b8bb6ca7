"""Which Keras layers reach working C++: one small model per layer (tests/test_keras.py's LAYERS),
through four paths, as a Markdown table (README "Real SOFIE"):

- `sofie.keras.parse`: SOFIE's own Keras parser on the model saved as a `.keras` file (by Keras 3
  on JAX, read back by Keras 3 on TensorFlow), SOFIE generates its header, which is compiled (the
  project's compiler, flags and BLAS, as the other columns) into a small program whose outputs must
  match Keras at 1e-4: "yes" only then, else the parser's refusal or the wrong numbers. The parser
  needs TensorFlow, which the project's venv does not have: give `--tf-python` a Python of a separate
  venv with `tensorflow-cpu` and `sofie` (that venv only parses and generates, in a subprocess:
  `--keras-parser-only`); without it, and without TensorFlow here, the column reads "needs TensorFlow";
- the project: `from_keras` -> our C++ header, compiled, matching Keras at 1e-4;
- the project's export through SOFIE: `to_rmodel(route="onnx")` -> SOFIE's header, compiled,
  matching Keras at 1e-4;
- SOFIE's operators: `to_rmodel(route="operators")` -> SOFIE's header, compiled, matching Keras.

Run: python benchmarks/sofie_coverage.py [--only conv2d_same,lstm] [--json coverage.json] [--md table.md]
         [--tf-python venv-tf/bin/python] [--models-dir DIR]
(venv-tf: python3 -m venv venv-tf && venv-tf/bin/pip install tensorflow-cpu sofie numpy)
(outside CI: every layer model is compiled three or four times; nothing is asserted)

The TensorFlow side alone: python benchmarks/sofie_coverage.py --keras-parser-only --models-dir DIR
(in the TensorFlow venv; reads DIR/<layer>.keras, writes SOFIE's header and weights of each model
into DIR/<layer>/ and what happened into DIR/keras_parser.json; imports neither JAX nor jaxpr2sofie).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
BATCH = 2           # the batch of the sample inputs (tests/test_keras.py's In.sample)
PARSER_JSON = "keras_parser.json"

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


# -- sofie.keras.parse: the TensorFlow side (parse and generate), then compile and compare here ----

def keras_parser_generate(path: Path, out: Path) -> dict:
    """SOFIE's Keras parser on the saved model `path`, then SOFIE's header and weights into `out`:
    {"header", "weights", "inputs", "outputs"} (tensor names, in the order of Session::infer), or
    {"error": the parser's or generator's refusal}. Needs TensorFlow's Keras and sofie, not JAX."""
    import sofie
    try:
        rm = sofie.keras.parse(str(path), batch_size=BATCH)
        rm.generate()
        out.mkdir(parents=True, exist_ok=True)
        hxx = out / f"{path.stem}.hxx"
        rm.output_generated(str(hxx))
        return {"header": str(hxx), "weights": str(hxx.with_suffix(".dat")),
                "inputs": list(rm.get_input_tensor_names()), "outputs": list(rm.get_output_tensor_names())}
    except Exception as e:   # the parser's refusal, whatever its type
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        m = re.fullmatch(r"TMVA\.SOFIE - parsing keras layer (\w+) is not yet supported", text)
        if m:
            return {"error": f"the parser refuses {m.group(1)} (\"not yet supported\")"}
        if text.startswith("TMVA.SOFIE - "):
            return {"error": "the parser: " + text[len("TMVA.SOFIE - "):][:90]}
        return {"error": _first_line(e)}


def keras_parser_only(models_dir: Path) -> None:
    """--keras-parser-only: every DIR/<layer>.keras through keras_parser_generate, in this process
    (the TensorFlow venv); the results, written after each model, in DIR/keras_parser.json."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import sofie
    import tensorflow as tf
    results = {"versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                            "sofie": getattr(sofie, "__version__", "") or _dist_version("sofie")}, "models": {}}
    files = sorted(models_dir.glob("*.keras"))
    for k, f in enumerate(files):
        results["models"][f.stem] = r = keras_parser_generate(f, models_dir / f.stem)
        (models_dir / PARSER_JSON).write_text(json.dumps(results, indent=1))
        print(f"[{k + 1}/{len(files)}] {f.stem}: {r.get('error', 'generated')}", file=sys.stderr, flush=True)


def _dist_version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


RUNNER = r"""#include "{header}"
#include <cstdint>
#include <fstream>
#include <iterator>
#include <vector>

template <class T> std::vector<T> load(const char *path) {{
   std::ifstream f(path, std::ios::binary);
   std::vector<char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
   std::vector<T> v(b.size() / sizeof(T));
   std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
   return v;
}}
template <class T> void put(std::ofstream &f, const std::vector<T> &v) {{   // count, then doubles
   uint64_t n = v.size();
   f.write(reinterpret_cast<const char *>(&n), sizeof n);
   for (const T &x : v) {{ double d = static_cast<double>(x); f.write(reinterpret_cast<const char *>(&d), sizeof d); }}
}}
template <class T> void put_all(std::ofstream &f, const std::vector<T> &v) {{ put(f, v); }}
template <class T> void put_all(std::ofstream &f, const std::vector<std::vector<T>> &vs) {{ for (auto &v : vs) put(f, v); }}

int main(int, char **argv) {{
   {ns}::Session s(argv[1]);
{loads}
   auto r = s.infer({args});
   std::ofstream f(argv[2], std::ios::binary);
   put_all(f, r);
   return 0;
}}
"""


def keras_parser_check(gen: dict, xs: list, want: list) -> str:
    """Compile SOFIE's header generated by its Keras parser (gen: keras_parser_generate's result) into
    a program, run it on `xs` and compare with Keras' `want`: the column's cell."""
    if "error" in gen:
        return "no: " + gen["error"]
    from jaxpr2sofie.cpp.build import DEFAULT_FLAGS, compile_cached, find_blas, find_compiler
    from jaxpr2sofie.ir.tensor import ctype
    from jaxpr2sofie.sofie_header import namespace
    hxx = Path(gen["header"])
    header = hxx.read_text()
    ns = namespace(header)
    if ns is None:
        return "no: no SOFIE namespace in the generated header"
    if len(gen["inputs"]) != len(xs):
        return f"no: {len(gen['inputs'])} inputs, Keras {len(xs)}"
    loads = "\n".join(f"   auto in{k} = load<{ctype(x.dtype)}>(argv[{k + 3}]);" for k, x in enumerate(xs))
    args = ", ".join(f"in{k}.data()" for k in range(len(xs)))
    main = RUNNER.format(header=hxx.name, ns=ns[0], loads=loads, args=args)
    flags, link = list(DEFAULT_FLAGS), []
    routines = sorted(set(re.findall(r'extern "C" void (\w+_)\(', header)))
    if routines:
        b = find_blas()
        prefix = b.sgemm[:-len("sgemm_")]
        flags += [f"-D{r}={prefix}{r}" for r in routines if prefix]
        link = list(b.link)
    try:
        exe = compile_cached({hxx.name: header, "main.cpp": main}, ["main.cpp"], "runner", find_compiler(), flags,
                             link, what="SOFIE's code from its Keras parser", tag="sofie-keras-")
    except Exception as e:
        return "no: does not compile (" + _first_line(e)[:60] + ")"
    with tempfile.TemporaryDirectory() as d:
        ins = []
        for k, x in enumerate(xs):
            ins.append(str(Path(d) / f"x{k}.bin"))
            np.ascontiguousarray(x).tofile(ins[-1])
        out = Path(d) / "y.bin"
        run = subprocess.run([str(exe), gen["weights"], str(out), *ins], capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            why = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1]
            return "no: the program fails (" + why[:60] + ")"
        raw, got, at = out.read_bytes(), [], 0
        while at < len(raw):
            n = int(np.frombuffer(raw[at:at + 8], np.uint64)[0])
            got.append(np.frombuffer(raw[at + 8:at + 8 + 8 * n], np.float64))
            at += 8 + 8 * n
    if len(got) != len(want):
        return f"wrong: {len(got)} outputs, Keras {len(want)}"
    shaped = []
    for g, w in zip(got, want):
        if g.size != np.asarray(w).size:
            return f"wrong: {g.size} values, Keras {np.asarray(w).size}"
        shaped.append(g.reshape(np.shape(w)))
    why = _close(tuple(shaped), want)
    return "yes" if not why else "wrong: " + why


def keras_parser(model, name: str, xs: list, want: list, models_dir: Path | None) -> str:
    """The `sofie.keras.parse` cell. With `models_dir`, the model is saved there with its inputs and
    Keras' outputs, for the TensorFlow side (main() fills the cell after it has run). Without, the
    parser runs in this process when TensorFlow is importable here, else "needs TensorFlow"."""
    if models_dir is not None:
        try:
            model.save(models_dir / f"{name}.keras")
        except Exception as e:
            return "no: not saved (" + _first_line(e) + ")"
        np.savez(models_dir / f"{name}.npz", **{f"x{k}": x for k, x in enumerate(xs)},
                 **{f"y{k}": y for k, y in enumerate(want)})
        return "needs TensorFlow"
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return "needs TensorFlow"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.keras"
        try:
            model.save(path)
        except Exception as e:
            return "no: " + _first_line(e)
        return keras_parser_check(keras_parser_generate(path, Path(d) / name), xs, want)


def run_tf_side(tf_python: str, models_dir: Path) -> dict:
    """The TensorFlow venv's Python on `models_dir` (--keras-parser-only, a subprocess): its JSON."""
    (models_dir / PARSER_JSON).unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    subprocess.run([tf_python, str(Path(__file__).resolve()), "--keras-parser-only", "--models-dir", str(models_dir)],
                   env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=sys.stderr, check=False)   # the table alone on stdout
    f = models_dir / PARSER_JSON
    return json.loads(f.read_text()) if f.exists() else {"versions": {}, "models": {}}


def fill_keras_column(rows: list, models_dir: Path, parsed: dict) -> None:
    """The TensorFlow side's results, compiled and compared with the outputs Keras gave here."""
    for r in rows:
        if r[PATHS[0]] != "needs TensorFlow":     # not saved
            continue
        name = r["layer"]
        if name not in parsed:
            r[PATHS[0]] = "no: not reached by the parser run (it stopped)"
            continue
        ref = np.load(models_dir / f"{name}.npz")
        xs = [ref[f"x{k}"] for k in range(sum(f.startswith("x") for f in ref.files))]
        want = [ref[f"y{k}"] for k in range(sum(f.startswith("y") for f in ref.files))]
        r[PATHS[0]] = keras_parser_check(parsed[name], xs, want)
        print(f"{name}: {PATHS[0]}: {r[PATHS[0]]}", file=sys.stderr, flush=True)


def row(name: str, factory, specs, models_dir=None) -> dict:
    import jaxpr2sofie as j2s
    from test_keras import layer_model, randomise, flat
    rng = np.random.default_rng(7)
    model = randomise(layer_model(factory(), specs))
    xs = [s.sample(rng) for s in specs]
    x = xs if len(xs) > 1 else xs[0]
    want = flat(model(x, training=False))
    out = {"layer": name, PATHS[0]: keras_parser(model, name, xs, want, models_dir)}
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
    ap.add_argument("--md", default="", help="also write the table to this file (SOFIE's C++ warnings, printed "
                    "on stdout, are not in it)")
    ap.add_argument("--tf-python", default="", help="the Python of a venv with TensorFlow and sofie, for the "
                    "sofie.keras.parse column (run there as a subprocess with --keras-parser-only)")
    ap.add_argument("--models-dir", default="", help="where the saved models, their reference values and "
                    "SOFIE's code from its Keras parser go (default: a temporary folder)")
    ap.add_argument("--keras-parser-only", action="store_true", help="the TensorFlow side: parse and generate "
                    "every --models-dir/*.keras, write --models-dir/keras_parser.json (no JAX, no jaxpr2sofie)")
    args = ap.parse_args(argv)
    if args.keras_parser_only:
        if not args.models_dir:
            ap.error("--keras-parser-only needs --models-dir")
        keras_parser_only(Path(args.models_dir))
        return
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from test_keras import LAYERS
    wanted = set(filter(None, args.only.split(",")))
    chosen = [(n, f, s) for n, f, s in LAYERS if not wanted or n in wanted]
    if wanted - {n for n, _, _ in chosen}:
        ap.error(f"unknown layer model(s): {', '.join(sorted(wanted - {n for n, _, _ in chosen}))}")
    with tempfile.TemporaryDirectory(prefix="j2s-keras-models-") as tmp:
        models_dir = None
        if args.tf_python or args.models_dir:
            models_dir = Path(args.models_dir or tmp)
            models_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for k, (name, factory, specs) in enumerate(chosen):
            rows.append(row(name, factory, specs, models_dir))
            print(f"[{k + 1}/{len(chosen)}] {name}: " + ", ".join(f"{p}: {rows[-1][p]}" for p in PATHS),
                  file=sys.stderr, flush=True)
        versions = {}
        if args.tf_python:
            parsed = run_tf_side(args.tf_python, models_dir)
            versions = parsed["versions"]
            fill_keras_column(rows, models_dir, parsed["models"])
    text = table(rows)
    if versions:
        text += "\n\n" + PATHS[0] + ": " + ", ".join(f"{k} {v}" for k, v in versions.items())
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"versions": versions, "rows": rows} if versions else rows, indent=1))


if __name__ == "__main__":
    main()
