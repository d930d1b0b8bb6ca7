"""Command line: `jaxpr2sofie demo | convert | inspect | bench | flags | primitives`.

A model is a Keras file (`.keras`, or legacy `.h5`/`.hdf5`, converted with `from_keras`), or a
Python file (or an importable module name) defining, at module level:
  function       fn(params, x) -> y   (or fn(x) when params is None); jitted or not
  params         a pytree of arrays, or None
  example_input  an array or a pytree of arrays fixing input shapes and dtypes
Other names can be chosen with --function/--params/--input.

examples:
  jaxpr2sofie convert model.keras --name Net -o out/ --validate
  jaxpr2sofie inspect my_model.py
  jaxpr2sofie bench my_model.py --function predict --input x
  jaxpr2sofie bench --peers --quick --models A,D     # the peer benchmark (benchmarks/README.md)
  g++ -O2 -I out main.cpp $(jaxpr2sofie flags) -o main   # build a program against a generated header
"""
from __future__ import annotations

import argparse
import importlib
import os
import runpy
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_DEFAULT_NAMES = {"function": "function", "params": "params", "input": "example_input"}


class LoadedModel(NamedTuple):
    """What `convert` needs, from whichever kind of model file was given."""
    fn: Any
    params: Any
    example_input: Any
    name: str              # the model name used when --name is not given
    output_names: Any = None   # a Keras model's names for a list of outputs (o1, o2)


def _raised_where(e: BaseException, spec: str) -> str:
    """The line of the model file (or, failing that, the innermost line) where an exception was raised."""
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename}:{e.lineno}"
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve() == Path(spec).resolve()] if Path(spec).exists() else []
    f = (own or frames or [None])[-1]
    return f"{f.filename}:{f.lineno}" if f else spec


def _run_model_code(spec: str) -> dict:
    """The namespace of a Python model file or module.

    A model file runs arbitrary user code: any failure in it is the user's to fix, so it is reported
    as one line naming the file and the line, instead of a traceback through runpy or importlib.
    """
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.exists():
            raise SystemExit(f"error: model file {spec} does not exist")
        if path.is_dir():
            raise SystemExit(f"error: {spec} is a directory: pass a Python model file (.py), a module name "
                             f"or a Keras file ({', '.join(KERAS_SUFFIXES)})")
        try:
            return runpy.run_path(spec)
        except Exception as e:
            raise SystemExit(f"error: running the model file {spec} failed at {_raised_where(e, spec)}: "
                             f"{type(e).__name__}: {e}") from None
    try:
        return vars(importlib.import_module(spec))
    except Exception as e:
        # "no module named <spec>" is a mistyped model name; a missing import inside the module is not
        if isinstance(e, ModuleNotFoundError) and e.name and (spec == e.name or spec.startswith(e.name + ".")):
            raise SystemExit(f"error: no model file or importable module named {spec} (a model is a .py file, "
                             f"a module name, or a Keras file: {', '.join(KERAS_SUFFIXES)})") from None
        raise SystemExit(f"error: importing the model module {spec} failed at {_raised_where(e, spec)}: "
                         f"{type(e).__name__}: {e}") from None


def load_model_file(spec: str, fn_name="function", params_name="params", input_name="example_input"):
    """(fn, params, example_input) from a Python model file or an importable module name."""
    ns = _run_model_code(spec)
    missing = [n for n in (fn_name, input_name) if n not in ns]
    if missing:
        raise SystemExit(f"error: {spec} defines no {', '.join(missing)}: a model file needs module-level "
                         f"`{fn_name}`, `{params_name}` (may be None) and `{input_name}` (see `jaxpr2sofie --help`)")
    return ns[fn_name], ns.get(params_name), ns[input_name]


def load_keras_file(spec: str) -> LoadedModel:
    """A `.keras`/`.h5` file through the Keras bridge, with its errors as one line each."""
    if not Path(spec).exists():
        # checked here too: importing Keras to learn that the file is missing takes seconds
        raise SystemExit(f"error: model file {spec} does not exist")
    try:
        from .keras_bridge import keras_function
        kf = keras_function(spec)
    except ImportError as e:
        raise SystemExit(f"error: {e}") from None
    except (OSError, ValueError, TypeError) as e:
        # the bridge's file errors name the file already; others (e.g. a free input dimension) do not
        msg = str(e) if str(Path(spec)) in str(e) else f"{spec}: {e}"
        raise SystemExit(f"error: {msg}") from None
    return LoadedModel(kf.fn, kf.params, kf.example_input, kf.name, kf.output_names)


def load_model(args) -> LoadedModel:
    """The model named on the command line: a Keras file, or a Python file or module."""
    if args.model.lower().endswith(KERAS_SUFFIXES):
        given = [f"--{k}" for k in _DEFAULT_NAMES if getattr(args, k) is not None]
        if given:
            raise SystemExit(f"error: {' and '.join(given)} {'applies' if len(given) == 1 else 'apply'} only to "
                             "Python model files: a Keras file holds one model, whose inputs come from the model "
                             "itself")
        return load_keras_file(args.model)
    names = [getattr(args, k) or default for k, default in _DEFAULT_NAMES.items()]
    return LoadedModel(*load_model_file(args.model, *names), name="Model")


def _best_ns(call, iters: int) -> float:
    """Nanoseconds per call of `call()` from Python: the best of 5 loops of `iters` calls."""
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(iters):
            call()
        runs.append((time.perf_counter() - t0) / iters * 1e9)
    return min(runs)


def _xla_latency_ns(fn, params, x, iters=300) -> float:
    import jax
    f = jax.jit(fn)
    # arrays already on the device, so the timing is XLA's, not NumPy-to-device copies
    args = jax.device_put((params, x) if params is not None else (x,))
    jax.block_until_ready(f(*args))
    return _best_ns(lambda: jax.block_until_ready(f(*args)), iters)


def _ort_latency_ns(model, x, iters=300):
    """ONNX Runtime (one thread) on our own ONNX export, called from Python; None (and why) when
    the onnx or onnxruntime package is not installed."""
    import tempfile
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError as e:
        return None, f"not installed ({e.name}): pip install onnx onnxruntime"
    import jax
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{model.name}.onnx"
            model.to_onnx(path)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(x)]   # the inputs in the export's order
        feed = dict(zip((i.name for i in sess.get_inputs()), leaves))
        sess.run(None, feed)
    except Exception as e:   # the table still shows the other rows; the reason is printed in this one
        return None, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return _best_ns(lambda: sess.run(None, feed), iters), ""


def latency_table(model, fn, params, x) -> str:
    from .cpp.build import time_in_cpp
    cpp = time_in_cpp(model.graph, iters=2000)
    xla = _xla_latency_ns(fn, params, x)
    ort, why = _ort_latency_ns(model, x)
    rows = [("generated C++ (Session::run, timed in C++, 1 BLAS thread)", cpp),
            ("JAX jax.jit on XLA CPU (called from Python)", xla),
            ("ONNX Runtime, 1 thread, on our ONNX export (called from Python)", ort)]
    lines = [f"{'implementation':66s} {'latency':>12s}"]
    lines += [f"{n:66s} {v / 1000:9.2f} us" if v is not None else f"{n:66s} {why}" for n, v in rows]
    lines.append(f"speed-up of the C++ over XLA: {xla / cpp:.1f}x" +
                 (f", over ONNX Runtime: {ort / cpp:.1f}x" if ort is not None else "") +
                 "   (best of 5 runs; batch as in the example input; the Python-called figures include "
                 "the call overhead, which batch-1 C++ callers do not pay)")
    return "\n".join(lines)


def _convert(args):
    from .model import convert, model_name
    loaded = load_model(args)
    batch = {"dynamic": "dynamic"}.get(getattr(args, "batch", None))
    return loaded, convert(loaded.fn, loaded.params, loaded.example_input, name=model_name(args.name, loaded.name),
                           batch=batch, max_batch=getattr(args, "max_batch", None), output_names=loaded.output_names)


def cmd_convert(args) -> int:
    _, m = _convert(args)
    hxx, dat = m.generate(args.output, weights=args.weights)
    print(m.summary())
    print(f"\nwrote {hxx} and {dat}")
    if args.onnx:
        from .onnx import DEFAULT_OPSET
        try:
            m.to_onnx(args.onnx, opset=args.opset)
        except ImportError as e:   # onnx not installed: the message names the package
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"wrote {args.onnx} (ONNX opset {args.opset or DEFAULT_OPSET})")
    if args.validate:
        print(f"C++ vs JAX on random inputs: {m.validate()}")
    return 0


def cmd_inspect(args) -> int:
    from .errors import UnsupportedPrimitiveError
    from .model import convert, model_name
    from .primitives import HANDLERS
    from .trace import primitive_inventory, trace
    fn, params, x, default_name, _ = load_model(args)
    inv = primitive_inventory(trace(fn, params, x).closed_jaxpr)
    try:
        convert(fn, params, x, name=model_name(args.name, default_name))
        problems = None
    except UnsupportedPrimitiveError as e:
        problems = e
    lines = {}   # where each primitive without a rule is used, so the table says where to look
    for prim, _, where in (problems.problems if problems else ()):
        lines.setdefault(prim, []).append(where)
    print(f"{'primitive':28s} {'uses':>5s}  rule")
    for name in sorted(inv):
        rule = HANDLERS[name].family if name in HANDLERS else "MISSING"
        at = f"  at {', '.join(dict.fromkeys(lines[name]))}" if rule == "MISSING" and name in lines else ""
        print(f"{name:28s} {inv[name]:5d}  {rule}{at}")
    if problems:
        print("\n" + str(problems))
        return 1
    print("\nall primitives convert.")
    return 0


PEER_OPTIONS = ("models", "batches", "contenders", "repeats", "quick")


def cmd_bench(args) -> int:
    if args.peers:
        if args.model is not None:
            raise SystemExit(f"error: --peers runs the peer benchmark on its own models (choose them with --models), "
                             f"not on {args.model}: drop MODEL, or drop --peers to time {args.model} against XLA")
        from .bench import run_from_args
        return run_from_args(args)
    given = [f"--{k}" for k in PEER_OPTIONS if getattr(args, k) not in (None, False)]
    if given:
        raise SystemExit(f"error: {', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of the peer "
                         "benchmark: add --peers")
    if args.model is None:
        raise SystemExit("error: bench needs a MODEL file to time against XLA, or --peers for the peer benchmark "
                         "(jaxpr2sofie bench --peers --quick)")
    loaded, m = _convert(args)
    print(latency_table(m, loaded.fn, loaded.params, loaded.example_input))
    return 0


def cmd_demo(args) -> int:
    from . import convert
    from .examples import example_input, function, params
    print("jaxpr2sofie demo: the bundled jet-tagging MLP (jaxpr2sofie/examples.py)\n")
    m = convert(function, params, example_input, name="JetTagger")
    print(m.summary())
    hxx, dat = m.generate(args.output)
    print(f"\nwrote {hxx} and {dat}")
    rng = np.random.default_rng(1)
    worst = max((m.validate(rng.standard_normal(example_input.shape).astype(np.float32)) for _ in range(20)),
                key=lambda v: v.max_abs)
    print(f"compiled C++ vs JAX on 20 random inputs: {worst}")
    ok = worst.max_abs <= 1e-5
    print("validation:", "PASSED" if ok else "FAILED", "(tolerance 1e-5)\n")
    print(latency_table(m, function, params, example_input))
    print(f"\nmachine: {_machine()}")
    return 0 if ok else 1


def cmd_flags(args) -> int:
    from .cpp.build import link_flags
    print(link_flags())
    return 0


def primitive_table() -> str:
    """The supported-primitive table of the README, generated from the registry."""
    from .primitives import HANDLERS
    families = {}
    for name, h in HANDLERS.items():
        families.setdefault(h.family, []).append(name)
    lines = ["| family | primitives |", "|---|---|"]
    for fam in sorted(families):
        lines.append(f"| {fam} | {', '.join(f'`{n}`' for n in sorted(families[fam]))} |")
    return "\n".join(lines)


def cmd_primitives(args) -> int:
    print(primitive_table())
    return 0


def _machine() -> str:
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__       # here, not at import: the package may one day import this module
    p = argparse.ArgumentParser(prog="jaxpr2sofie", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"jaxpr2sofie {__version__}",
                   help="print the jaxpr2sofie version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = sub.add_parser("demo", help="convert the bundled example, compile, validate against JAX, time against XLA",
                       description="Convert the bundled jet-tagging MLP, compile it, validate it against JAX "
                                   "and time it against XLA.")
    d.add_argument("-o", "--output", default="out", metavar="DIR",
                   help="directory for the generated files, created if missing (default: out)")
    d.set_defaults(run=cmd_demo)
    sub.add_parser("flags", help="print the compiler flags to build a program against a generated header",
                   description="Print the flags to compile and link a C++ program against any generated header: "
                               "the C++ standard, the BLAS sgemm symbol and the BLAS link line, e.g. "
                               "g++ -O2 -I out main.cpp $(jaxpr2sofie flags) -o main").set_defaults(run=cmd_flags)
    sub.add_parser("primitives", help="print the supported-primitive table (markdown)",
                   description="Print the table of supported JAX primitives (markdown).").set_defaults(
                       run=cmd_primitives)
    for name, run, text in (("convert", cmd_convert, "write <NAME>.hxx and <NAME>.dat for a model"),
                            ("inspect", cmd_inspect, "list the primitives of a model and which are unsupported"),
                            ("bench", cmd_bench, "latency of the generated C++ against jax.jit on XLA CPU, or with --peers "
                                                 "the peer benchmark")):
        c = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                           epilog=f"example: jaxpr2sofie {name} model.keras --name Net"
                                  + (" -o out/ --validate" if name == "convert" else "")
                                  + ("; jaxpr2sofie bench --peers --quick --models A,D" if name == "bench" else ""))
        c.add_argument("model", metavar="MODEL", nargs="?" if name == "bench" else None,
                       help="a Keras file (.keras, or legacy .h5/.hdf5), or a Python file (.py) or importable "
                            "module name defining `function`, `params` and `example_input` at module level"
                            + (" (not with --peers)" if name == "bench" else ""))
        c.add_argument("--function", metavar="NAME",
                       help="Python model files: the module-level name of the function to convert, called "
                            "fn(params, x), or fn(x) when params is None (default: function)")
        c.add_argument("--params", metavar="NAME",
                       help="Python model files: the module-level name of the parameter pytree, which may be "
                            "None (default: params)")
        c.add_argument("--input", metavar="NAME",
                       help="Python model files: the module-level name of the example input, an array or pytree "
                            "of arrays fixing the input shapes and dtypes (default: example_input)")
        c.add_argument("--name", metavar="NAME",
                       help="C++ model name: namespace TMVA_SOFIE_<NAME>, files <NAME>.hxx and <NAME>.dat "
                            "(default: Model for a Python file, the file name without its extension for a Keras file)")
        if name == "convert":
            c.add_argument("-o", "--output", default=".", metavar="DIR",
                           help="directory for <NAME>.hxx and <NAME>.dat, created if missing (default: .)")
            c.add_argument("--onnx", metavar="FILE",
                           help="also write the model as ONNX, for ROOT's SOFIE parser, onnxruntime and Netron "
                                "(needs the onnx package)")
            c.add_argument("--opset", type=int, choices=range(17, 22), metavar="{17..21}",
                           help="ONNX opset for --onnx (default 18)")
            c.add_argument("--batch", choices=("fixed", "dynamic"), default="fixed",
                           help="fixed: the C++ takes the example input's batch (default); dynamic: the batch is "
                                "chosen per call, Session(weight_file, max_batch) and infer(batch, x)")
            c.add_argument("--max-batch", type=int, metavar="N",
                           help="with --batch dynamic: the Session's default max_batch (default: the example's batch)")
            c.add_argument("--weights", choices=("text", "binary"), default="text",
                           help="weight file format: SOFIE's text format (default) or the faster-loading binary one")
            c.add_argument("--validate", action="store_true",
                           help="also compile the generated C++ with the C++ compiler and compare its outputs "
                                "with JAX on a random input (prints the largest errors)")
        if name == "bench":
            from .bench import add_arguments
            c.add_argument("--peers", action="store_true",
                           help="run the peer benchmark instead: its models A-H against XLA, ONNX Runtime, IREE "
                                "and SOFIE, checked and timed side by side; a table, a JSON file and a plot "
                                "(peers need pip install -e '.[bench]'; see benchmarks/README.md)")
            peers = c.add_argument_group("peer benchmark (with --peers)")
            add_arguments(peers)
        c.set_defaults(run=run)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "max_batch", None) is not None and args.batch != "dynamic":
        parser.error("--max-batch is the largest run-time batch: it needs --batch dynamic")
    from .errors import Jaxpr2SofieError
    try:
        code = args.run(args)
        sys.stdout.flush()   # a reader that stopped early shows up here, inside the try, not at exit
        return code
    except Jaxpr2SofieError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader closed the pipe (`jaxpr2sofie primitives | head`): it has what it wanted, so no
        # traceback; stdout goes to /dev/null so that Python's flush at exit does not fail again, and
        # the exit status is a shell's for a command stopped by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
