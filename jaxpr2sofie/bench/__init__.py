"""The peer benchmark (issue 14): jaxpr2sofie's generated C++ against XLA, ONNX Runtime on the
jax2onnx export and on ours, IREE and ROOT's own SOFIE, per model and batch, on one machine.

    python benchmarks/run.py --quick --models A --batches 1,64
    jaxpr2sofie bench --peers --models A,D

`models` defines the networks, `contenders` (with `iree` and `sofie_peer`) how each peer is
prepared, checked against JAX and timed, `runner` the interleaved measurement, `rdf` the
RDataFrame row (a model scored through jaxpr2sofie.root.define), `machine` the CPU, versions and
the sgemm peak, `report` the table, JSON and plot. Lives in the package, not in
benchmarks/, so that the command line of an installed jaxpr2sofie runs it too.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = Path("benchmarks/results")


def _csv(kind):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    return parse


def add_arguments(p: argparse.ArgumentParser, default_out: Path = DEFAULT_OUT) -> None:
    from .contenders import all_contenders
    from .models import MODELS
    p.add_argument("--models", type=_csv(str.upper), metavar="A,B,...",
                   help=f"models to run (default: all): {'; '.join(f'{k} {m.title}' for k, m in MODELS.items())}")
    p.add_argument("--batches", type=_csv(int), metavar="1,64,...",
                   help="batches for every model (default: 1,16,64,256, plus 1024 for the MLPs A B D E; "
                        "MobileNetV2 (G) 1,16)")
    p.add_argument("--contenders", type=_csv(str), metavar="ours,xla,...",
                   help=f"contenders to run (default: all): {', '.join(all_contenders())}")
    p.add_argument("--flag-sets", type=_csv(str.lower), metavar="native,portable",
                   help="compiler flags ours and SOFIE are built with, each a column of its own (default "
                        "native,portable): native = -O3 -march=native, portable = -O2 -march=x86-64-v3, "
                        "portable-O3 = -O3 -march=x86-64-v3 (ours only: the optimiser's share apart from the ISA's)")
    p.add_argument("--repeats", type=int, metavar="N",
                   help="interleaved timing rounds per cell; the cell's figure is their median (default 5, 2 with --quick)")
    p.add_argument("--rdf-events", type=int, metavar="N",
                   help="events of the RDataFrame row: a 28-64-64-1 MLP scored through jaxpr2sofie.root.define "
                        "on 1 thread and on every core (default 1000000; 0: no row; needs PyROOT)")
    p.add_argument("--quick", action="store_true", help="fewer and shorter timing loops, a smaller sgemm probe")
    p.add_argument("--out", type=Path, default=default_out, metavar="DIR",
                   help=f"folder for <date>-<cpu>.json and .png (default: {default_out})")


def run_from_args(args) -> int:
    """Run with parsed arguments, print the table, write the JSON and the plot."""
    from . import report
    from .runner import Settings, run
    from .contenders import FLAG_SETS
    kw = dict(models=args.models, batches=args.batches, contenders=args.contenders, repeats=args.repeats,
              out=args.out, flag_sets=args.flag_sets, rdf_events=args.rdf_events)
    unknown = [f for f in args.flag_sets or () if f not in FLAG_SETS]
    if unknown or (args.flag_sets is not None and "native" not in args.flag_sets):
        raise SystemExit(f"error: --flag-sets takes native (always) and any of {', '.join(FLAG_SETS)}")
    if args.rdf_events is not None and args.rdf_events < 0:
        raise SystemExit("error: --rdf-events must be 0 (no RDataFrame row) or more")
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit("error: --repeats must be at least 1")
    settings = Settings.quick_settings(**kw) if args.quick else Settings(**{k: v for k, v in kw.items() if v is not None})
    try:
        results = run(settings)
    except ValueError as e:       # an unknown model or contender name
        raise SystemExit(f"error: {e}") from None
    path, png = report.write(results, settings.out)
    print(report.table(results))
    print(f"\nwrote {path}" + (f" and {png}" if png else " (no plot: matplotlib is not installed)"))
    print(f"wall time {results['wall_s']:.0f} s")
    return 0


def main(argv=None, default_out: Path = DEFAULT_OUT) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, default_out)
    return run_from_args(p.parse_args(argv))
