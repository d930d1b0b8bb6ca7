"""The benchmark's RDataFrame row (issue 24): a model scored inside ROOT's RDataFrame through
`jaxpr2sofie.root.define`, against RDataFrame's own cost of reading the columns and the model's
compiled latency, on one thread and with `ROOT.EnableImplicitMT`.

The events (28 float columns of normal noise) are written once per event count into the compile
cache (`JAXPR2SOFIE_CACHE`), with a TTree cluster every `CLUSTER` entries: RDataFrame's threads
take whole clusters, and ROOT's default clustering (about 30 MB) gives a 1 M-event file of these
columns 4 uneven clusters, two thirds of the events for one thread. Each thread count runs in a
child process of its own (`EnableImplicitMT` is set once per process, and ROOT's LLVM is kept
apart from jaxlib's); the child times `repeats` event loops of each contender, interleaved, wall
clock and CPU time. One thread is RDataFrame's sequential loop (no implicit MT).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WIDTHS = (28, 64, 64, 1)           # the model: an MLP on 28 float columns (the Higgs features' count)
CLUSTER = 10_000                   # entries per TTree cluster (fAutoFlush)
MARGIN_US = 0.3                    # issue 24's budget: compiled + reading the columns + this
MODEL = f"MLP {'-'.join(map(str, WIDTHS))}, ReLU"
COLUMNS = [f"x{i:02d}" for i in range(WIDTHS[0])]
LABELS = {"read": "RDataFrame alone: the 28 columns read and summed (a Define of their sum)",
          "ours": "jaxpr2sofie.root.define on our header (its library built with {flags})",
          "sofie": "jaxpr2sofie.root.define on the header real SOFIE (PyPI sofie) generated"}
_RESULT = "RDF-RESULT "


def rdf_absent() -> str:
    """"" when PyROOT can be imported here, else why not (checked in a child: no ROOT in this process)."""
    res = subprocess.run([sys.executable, "-c", "import ROOT; ROOT.RDataFrame"], capture_output=True, text=True,
                         env=_child_env())
    if res.returncode == 0:
        return ""
    last = (res.stderr.strip().splitlines() or ["no message"])[-1]
    return f"PyROOT not usable ({last}): pip install 'jaxpr2sofie[root]'"


def _child_env() -> dict:
    from ..cpp.build import ONE_THREAD
    here = str(Path(__file__).resolve().parents[2])   # the jaxpr2sofie the parent runs, also from a checkout
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, **ONE_THREAD, PYTHONPATH=here + (os.pathsep + path if path else ""))


def events(n: int, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, WIDTHS[0])).astype(np.float32)


def events_file(n: int) -> Path:
    from ..cpp.build import cache_dir
    return cache_dir() / "rdf-events" / f"normal28-{n}-c{CLUSTER}.root"


def _prepare(n: int, work: Path, with_sofie: bool, settings, log) -> dict:
    """In this process (JAX): the model converted at batch 1 and written for `define` (ours and, if
    asked, SOFIE's header), its compiled latency timed by the project's harness, JAX's scores of
    every event (the check), and the events as .npy when the ROOT file is not cached yet."""
    import jax
    from ..cpp.build import build_timing_harness
    from ..examples import jet_tagger_params
    from ..model import convert
    from ..root import LOCAL_FLAGS
    from .contenders import HarnessRunner
    from .models import mlp
    from .runner import calibrate
    x = events(n)
    params = jet_tagger_params(seed=sum(WIDTHS), widths=WIDTHS)
    m = convert(mlp, params, x[:1], name="RdfMlp", progress=False)
    folders = {"ours": work / "ours"}
    m.generate(folders["ours"])
    if with_sofie:
        folders["sofie"] = work / "sofie"
        m.generate(folders["sofie"], backend="sofie")
    # the flags define builds its library with (a local dataframe)
    harness = HarnessRunner(build_timing_harness(m.graph, flags=LOCAL_FLAGS), None)
    try:
        iters = calibrate(harness, settings.target_s * 1e9)
        rounds = [statistics.median(harness.time(iters, settings.samples)) / 1e3 for _ in range(settings.repeats)]
    finally:
        harness.close()
    scores = np.asarray(jax.jit(mlp)(params, x))
    spec = {"events": n, "file": str(events_file(n)), "columns": COLUMNS, "cluster": CLUSTER,
            "models": {k: str(v) for k, v in folders.items()}, "repeats": settings.repeats,
            "mean": float(scores.mean(dtype=np.float64)), "scale": float(np.abs(scores).max())}
    if not events_file(n).exists():
        np.save(work / "events.npy", x)
        spec["npy"] = str(work / "events.npy")
    log(f"RDataFrame row: {MODEL} compiled at batch 1: {statistics.median(rounds):.3f} µs")
    return {"spec": spec, "compiled_us": statistics.median(rounds), "compiled_rounds_us": rounds}


def _in_child(spec: dict, threads: int, log) -> dict:
    res = subprocess.run([sys.executable, "-m", "jaxpr2sofie.bench.rdf", json.dumps({**spec, "threads": threads})],
                         capture_output=True, text=True, env=_child_env())
    found = [ln[len(_RESULT):] for ln in res.stdout.splitlines() if ln.startswith(_RESULT)]
    if res.returncode != 0 or not found:
        tail = (res.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"the RDataFrame child ({threads} thread(s)) failed: {tail}")
    out = json.loads(found[-1])
    spec.pop("npy", None)       # written by the first child
    for k, v in out["contenders"].items():
        log(f"RDataFrame {threads} thread(s) {k}: {v['wall_us']:.3f} µs/event wall, {v['cpu_us']:.3f} CPU")
    return out


def run(settings, log) -> dict:
    """The RDataFrame section of the results, or {"absent": why} / {"error": why}."""
    import shutil
    import tempfile
    from .runner import short
    from .sofie_peer import sofie_absent
    why = rdf_absent()
    if why:
        return {"absent": why}
    n = settings.rdf_events
    threads = sorted({1, os.cpu_count() or 1})
    sofie_why = sofie_absent()
    work = Path(tempfile.mkdtemp(prefix="j2s-bench-rdf-"))
    t0 = time.perf_counter()
    try:
        prep = _prepare(n, work, not sofie_why, settings, log)
        runs = {str(t): _in_child(prep["spec"], t, log) for t in threads}
    except Exception as e:    # noqa: BLE001 - the peer table stands without this row
        return {"error": short(e), "events": n}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summarise(n, prep, runs, sofie_why, time.perf_counter() - t0)


def summarise(n: int, prep: dict, runs: dict, sofie_why: str, wall_s: float) -> dict:
    one, top = runs["1"]["contenders"], runs[max(runs, key=int)]["contenders"]
    compiled = prep["compiled_us"]
    budget = compiled + one["read"]["wall_us"] + MARGIN_US
    from ..root import LOCAL_FLAGS
    out = {"events": n, "model": MODEL, "columns": len(COLUMNS), "flags": " ".join(LOCAL_FLAGS), "cores": os.cpu_count(),
           "cluster": CLUSTER, "file": runs["1"]["file"], "root": runs["1"]["root"],
           "repeats": prep["spec"]["repeats"], "compiled_us": compiled, "compiled_rounds_us": prep["compiled_rounds_us"],
           "labels": {k: LABELS[k].format(flags=" ".join(LOCAL_FLAGS)) for k in one},
           "sofie_absent": sofie_why or None,
           "threads": {t: r["contenders"] for t, r in runs.items()},
           "slots": {t: r["slots"] for t, r in runs.items()},
           # the 1-minute load average as each child ended: above the cores, other jobs took CPU
           "load": {t: r.get("load") for t, r in runs.items()},
           "budget": {"margin_us": MARGIN_US, "budget_us": budget, "ours_us": one["ours"]["wall_us"],
                      "met": one["ours"]["wall_us"] <= budget, "over_us": one["ours"]["wall_us"] - budget,
                      # what define adds over reading the columns and running the model
                      "overhead_us": one["ours"]["wall_us"] - one["read"]["wall_us"] - compiled},
           "wall_s": wall_s}
    if len(runs) > 1:
        out["speedup"] = {k: one[k]["wall_us"] / top[k]["wall_us"] for k in one if top[k]["wall_us"] > 0}
        out["speedup_threads"] = int(max(runs, key=int))
    return out


# -- the child: ROOT only ---------------------------------------------------------------------------------

def _write_events(ROOT, spec: dict) -> None:
    path = Path(spec["file"])
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.load(spec["npy"])
    cols = {c: np.ascontiguousarray(x[:, i]) for i, c in enumerate(spec["columns"])}
    opts = ROOT.RDF.RSnapshotOptions()
    opts.fAutoFlush = spec["cluster"]
    part = path.with_suffix(f".{os.getpid()}.part")
    ROOT.RDF.FromNumpy(cols).Snapshot("events", str(part), spec["columns"], opts)
    part.replace(path)       # atomic: a killed run leaves no half file under the final name


def _file_facts(ROOT, path: str, n: int) -> dict:
    f = ROOT.TFile.Open(path)
    tree = f.Get("events")
    it, clusters = tree.GetClusterIterator(0), 0
    while it.Next() < n:
        clusters += 1
    facts = {"clusters": clusters, "compression": f.GetCompressionSettings(), "zip_mb": tree.GetZipBytes() / 1e6,
             "entries": int(tree.GetEntries())}
    f.Close()
    return facts


def _child(spec: dict) -> None:
    import jaxpr2sofie.root as j2s_root    # before ROOT: it filters the PyPI ROOT's alpha-stage warning
    import ROOT
    ROOT.gROOT.SetBatch(True)
    if spec.get("npy") and not Path(spec["file"]).exists():
        _write_events(ROOT, spec)
    n, cols, threads = spec["events"], spec["columns"], spec["threads"]
    if threads > 1:
        ROOT.EnableImplicitMT(threads)
    frames = {"read": ROOT.RDataFrame("events", spec["file"]).Define("v", " + ".join(cols))}
    for key, folder in spec["models"].items():
        frames[key] = j2s_root.define(ROOT.RDataFrame("events", spec["file"]), "v", folder, cols)
    facts = _file_facts(ROOT, spec["file"], n)
    if facts["entries"] != n:
        raise RuntimeError(f"{spec['file']} holds {facts['entries']} events, not {n}")

    def loop(df):
        mean = df.Mean("v")
        c0, t0 = time.process_time(), time.perf_counter()     # CPU time of every thread of the process
        value = mean.GetValue()
        return time.perf_counter() - t0, time.process_time() - c0, value

    means = {k: loop(df)[2] for k, df in frames.items()}     # the first loop also compiles (cling)
    for k in spec["models"]:
        if abs(means[k] - spec["mean"]) > 1e-4 * spec["scale"]:
            raise RuntimeError(f"{k}: mean score {means[k]:.6g} in RDataFrame, {spec['mean']:.6g} from JAX")
    rounds = {k: [] for k in frames}
    keys = list(frames)
    for r in range(spec["repeats"]):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            rounds[k].append(loop(frames[k])[:2])
    out = {}
    for k, got in rounds.items():
        wall = statistics.median(w for w, _ in got)
        cpu = statistics.median(c for _, c in got)
        out[k] = {"wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6, "events_per_s": n / wall,
                  "rounds_wall_us": [w / n * 1e6 for w, _ in got], "rounds_cpu_us": [c / n * 1e6 for _, c in got]}
    # how the events were shared among the slots (a loop that reads no column)
    slots = ROOT.RDataFrame("events", spec["file"]).Define("slot", "rdfslot_").Histo1D(
        ("slots", "slots", threads, 0, threads), "slot").GetValue()
    print(_RESULT + json.dumps({"contenders": out, "root": str(ROOT.gROOT.GetVersion()),
                                "load": os.getloadavg()[0],
                                "slots": [int(slots.GetBinContent(i + 1)) for i in range(threads)],
                                "file": facts}), flush=True)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
