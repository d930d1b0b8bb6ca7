"""Command line: `jaxpr2sofie demo | convert | inspect | bench`.

A model file is a Python file (or an importable module name) defining, at module level:
  function       fn(params, x) -> y   (or fn(x) when params is None); jitted or not
  params         a pytree of arrays, or None
  example_input  an array or a pytree of arrays fixing input shapes and dtypes
Other names can be chosen with --function/--params/--input.
"""
from __future__ import annotations

import argparse
import importlib
import runpy
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def load_model_file(spec: str, fn_name="function", params_name="params", input_name="example_input"):
    if spec.endswith(".py") or Path(spec).exists():
        if not Path(spec).exists():
            raise SystemExit(f"error: model file {spec} does not exist")
        ns = runpy.run_path(spec)
    else:
        ns = vars(importlib.import_module(spec))
    missing = [n for n in (fn_name, input_name) if n not in ns]
    if missing:
        raise SystemExit(f"error: {spec} defines no {', '.join(missing)}: a model file needs module-level "
                         f"`{fn_name}`, `{params_name}` (may be None) and `{input_name}` (see `jaxpr2sofie --help`)")
    return ns[fn_name], ns.get(params_name), ns[input_name]


def _xla_latency_ns(fn, params, x, iters=300) -> float:
    import jax
    f = jax.jit(fn)
    # arrays already on the device, so the timing is XLA's, not NumPy-to-device copies
    args = jax.device_put((params, x) if params is not None else (x,))
    jax.block_until_ready(f(*args))
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(iters):
            jax.block_until_ready(f(*args))
        runs.append((time.perf_counter() - t0) / iters * 1e9)
    return min(runs)


def latency_table(model, fn, params, x) -> str:
    from .build import time_in_cpp
    cpp = time_in_cpp(model.graph, iters=2000)
    xla = _xla_latency_ns(fn, params, x)
    rows = [("generated C++ (Session::run, timed in C++, 1 BLAS thread)", cpp),
            ("JAX jax.jit on XLA CPU (called from Python)", xla)]
    lines = [f"{'implementation':60s} {'latency':>12s}"]
    lines += [f"{n:60s} {v / 1000:9.2f} us" for n, v in rows]
    lines.append(f"speed-up of the C++ over XLA: {xla / cpp:.1f}x   (best of 5 runs; batch as in the example input)")
    return "\n".join(lines)


def _convert(args):
    from . import convert
    fn, params, x = load_model_file(args.model, args.function, args.params, args.input)
    return fn, params, x, convert(fn, params, x, name=args.name)


def cmd_convert(args) -> int:
    fn, params, x, m = _convert(args)
    hxx, dat = m.generate(args.output)
    print(m.summary())
    print(f"\nwrote {hxx} and {dat}")
    if args.validate:
        print(f"C++ vs JAX on a random input: {m.validate()}")
    return 0


def cmd_inspect(args) -> int:
    from .errors import UnsupportedPrimitiveError
    from .model import convert
    from .primitives import HANDLERS
    from .trace import primitive_inventory, trace
    fn, params, x = load_model_file(args.model, args.function, args.params, args.input)
    inv = primitive_inventory(trace(fn, params, x).closed_jaxpr)
    print(f"{'primitive':28s} {'uses':>5s}  rule")
    for name in sorted(inv):
        print(f"{name:28s} {inv[name]:5d}  {HANDLERS[name].family if name in HANDLERS else 'MISSING'}")
    try:
        convert(fn, params, x, name=args.name)
    except UnsupportedPrimitiveError as e:
        print("\n" + str(e))
        return 1
    print("\nall primitives convert.")
    return 0


def cmd_bench(args) -> int:
    fn, params, x, m = _convert(args)
    print(latency_table(m, fn, params, x))
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
    import os
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="jaxpr2sofie", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="convert the bundled example, compile, validate against JAX, time against XLA")
    d.add_argument("-o", "--output", default="out", help="directory for the generated files (default: out)")
    d.set_defaults(run=cmd_demo)
    sub.add_parser("primitives", help="print the supported-primitive table (markdown)").set_defaults(run=cmd_primitives)
    for name, run, text in (("convert", cmd_convert, "write <Name>.hxx and <Name>.dat for a model file"),
                            ("inspect", cmd_inspect, "list the primitives of a model file and which are unsupported"),
                            ("bench", cmd_bench, "latency of the generated C++ against jax.jit on XLA CPU")):
        c = sub.add_parser(name, help=text)
        c.add_argument("model", help="a Python file or module name defining function, params, example_input")
        c.add_argument("--function", default="function")
        c.add_argument("--params", default="params")
        c.add_argument("--input", default="example_input")
        c.add_argument("--name", default="Model", help="model name: TMVA_SOFIE_<name>, <name>.hxx")
        if name == "convert":
            c.add_argument("-o", "--output", default=".", help="output directory")
            c.add_argument("--validate", action="store_true", help="also compile and compare with JAX")
        c.set_defaults(run=run)
    args = p.parse_args(argv)
    from .errors import Jaxpr2SofieError
    try:
        return args.run(args)
    except Jaxpr2SofieError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
