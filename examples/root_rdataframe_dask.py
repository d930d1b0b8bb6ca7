"""Tutorial, distributed: the classifier of root_rdataframe.py scored by RDataFrame on a Dask cluster.

The same `jaxpr2sofie.root.define` call as on one machine: the model's C++ (weights inside) reaches
every worker through ROOT's distributed RDataFrame, and each worker process declares it once.
Here the cluster is a LocalCluster of worker processes on this machine; pass a scheduler address
to use a real one.

    python examples/root_rdataframe_dask.py [--events 100000] [--workers 2] [--scheduler tcp://host:8786]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from root_rdataframe import FEATURES, make_events, plot, train_and_convert  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="number of events (default 100000)")
    ap.add_argument("--out", default="out_root_dask", help="folder for the model, the events and the plot")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster (default 2)")
    ap.add_argument("--partitions", type=int, default=8, help="partitions of the dataset (default 8)")
    ap.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (default: a LocalCluster)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    ev = make_events(args.events)
    want = train_and_convert(ev, out)            # JAX first, ROOT after (see root_rdataframe.py)

    import jaxpr2sofie.root as j2s_root   # first: it filters the PyPI ROOT's "alpha stage" warning
    import ROOT
    from dask.distributed import Client, LocalCluster

    ROOT.gROOT.SetBatch(True)
    ROOT.RDF.FromNumpy({**{f: ev[f] for f in FEATURES}, "label": ev["label"],
                        "event": np.arange(args.events, dtype=np.int64)}).Snapshot("events", str(out / "events.root"))
    cluster = None
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        t0 = time.time()
        df = ROOT.RDataFrame("events", str(out / "events.root"), executor=client, npartitions=args.partitions)
        df = j2s_root.define(df, "score", out, FEATURES)
        h_sig = df.Filter("label == 1").Histo1D(("sig", "signal;classifier score;events", 50, 0, 1), "score")
        h_bkg = df.Filter("label == 0").Histo1D(("bkg", "background;classifier score;events", 50, 0, 1), "score")
        # ROOT's Dask backend starts Dask's text progress bar, which redraws a line every 0.1 s: on a
        # terminal it stays one line, in a log (CI, a batch job) it is thousands; there the one
        # line printed below says the same
        shown = contextlib.nullcontext() if sys.stdout.isatty() else contextlib.redirect_stdout(io.StringIO())
        with shown:
            cols = df.AsNumpy(["event", "score"])
        print(f"\nthe cluster scored {len(cols['score'])} events in {time.time() - t0:.1f} s")
        plot(ROOT, h_sig.GetValue(), h_bkg.GetValue(), out / "score.png")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    event, got = cols["event"], cols["score"]
    ok = len(event) == args.events and len(np.unique(event)) == args.events
    err = float(np.max(np.abs(got - want[event]))) if ok else float("inf")
    print(f"every event scored once: {ok}; max |C++ on the cluster - JAX| = {err:.2e}")
    return 0 if ok and err <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
