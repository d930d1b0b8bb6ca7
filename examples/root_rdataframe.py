"""Tutorial: a Flax classifier scored inside ROOT's RDataFrame, multithreaded.

1. make synthetic "signal vs background" events and train a small Flax MLP on them (a few seconds);
2. convert it with jaxpr2sofie (out_root/Classifier.hxx + .dat) and score every event with JAX;
3. write the events to a TTree with ROOT, score them with RDataFrame on all cores through the
   generated C++ (`jaxpr2sofie.root.define`), check the scores against JAX;
4. fill the score histograms of signal and background and save them as a picture.

    python examples/root_rdataframe.py [--events 100000] [--out out_root]

All JAX work happens before ROOT is imported: PyROOT's LLVM and jaxlib's are best kept apart.
`examples/root_rdataframe_dask.py` runs step 3 on a Dask cluster instead.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

FEATURES = ["pt", "eta", "mass", "ntracks"]


def make_events(n: int, seed: int = 0):
    """Signal: a 125 GeV resonance with harder pT and fewer tracks; background: falling spectra."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.5).astype(np.int32)
    sig = label == 1
    pt = np.where(sig, rng.gamma(4.0, 15.0, n), rng.exponential(30.0, n))
    eta = np.where(sig, rng.normal(0, 1.2, n), rng.normal(0, 2.0, n))
    mass = np.where(sig, rng.normal(125.0, 8.0, n), rng.exponential(80.0, n) + 40.0)
    ntracks = np.where(sig, rng.poisson(8, n), rng.poisson(14, n)).astype(np.int32)
    return {"pt": pt.astype(np.float32), "eta": eta.astype(np.float32), "mass": mass.astype(np.float32),
            "ntracks": ntracks, "label": label}


def features(ev) -> np.ndarray:
    """The network sees standardised features; the same arithmetic runs inside the model."""
    return np.stack([ev[f].astype(np.float32) for f in FEATURES], axis=1)


def train_and_convert(ev, out: Path):
    import jax
    import jax.numpy as jnp
    import flax.linen as nn
    import optax

    import jaxpr2sofie as j2s

    x = features(ev)
    mean, std = x.mean(0), x.std(0)

    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = (x - mean) / std                      # standardisation is part of the model
            x = nn.relu(nn.Dense(32)(x))
            x = nn.relu(nn.Dense(32)(x))
            return nn.sigmoid(nn.Dense(1)(x))[..., 0]

    model = Classifier()
    params = model.init(jax.random.key(0), x[:1])
    opt = optax.adam(3e-3)
    state = opt.init(params)
    y = ev["label"].astype(np.float32)

    @jax.jit
    def step(params, state, xb, yb):
        def loss(p):
            s = jnp.clip(model.apply(p, xb), 1e-6, 1 - 1e-6)
            return -jnp.mean(yb * jnp.log(s) + (1 - yb) * jnp.log(1 - s))
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, value

    rng = np.random.default_rng(1)
    t0 = time.time()
    for it in range(400):
        idx = rng.integers(0, len(x), 512)
        params, state, value = step(params, state, x[idx], y[idx])
    print(f"trained for 400 steps in {time.time() - t0:.1f} s, last loss {float(value):.3f}")

    m = j2s.from_flax(model, params, x[:1], name="Classifier")    # one event per call
    m.generate(out)
    print(f"validation of the C++ against JAX: {m.validate(x[:1])}")
    scores = np.asarray(jax.jit(model.apply)(params, x))           # JAX's scores for every event
    return scores


def score_in_root(ev, out: Path, threads: int):
    import jaxpr2sofie.root as j2s_root   # first: it filters the PyPI ROOT's "alpha stage" warning
    import ROOT

    ROOT.gROOT.SetBatch(True)
    ROOT.EnableImplicitMT(threads)
    ROOT.RDF.FromNumpy({**{f: ev[f] for f in FEATURES}, "label": ev["label"],
                        "event": np.arange(len(ev["label"]), dtype=np.int64)}).Snapshot("events", str(out / "events.root"))

    df = ROOT.RDataFrame("events", str(out / "events.root"))
    df = j2s_root.define(df, "score", out, FEATURES)         # one Session per thread, built from out/
    h_sig = df.Filter("label == 1").Histo1D(("sig", "signal;classifier score;events", 50, 0, 1), "score")
    h_bkg = df.Filter("label == 0").Histo1D(("bkg", "background;classifier score;events", 50, 0, 1), "score")
    cols = df.AsNumpy(["event", "score"])                    # the same event loop fills everything
    plot(ROOT, h_sig.GetValue(), h_bkg.GetValue(), out / "score.png")
    return cols["event"], cols["score"]


def plot(ROOT, h_sig, h_bkg, path: Path):
    c = ROOT.TCanvas("c", "score", 800, 600)
    c.SetLogy()
    for h in (h_sig, h_bkg):
        h.SetStats(0)
    h_sig.SetLineColor(ROOT.kRed + 1)
    h_sig.SetLineWidth(2)
    h_bkg.SetLineColor(ROOT.kBlue + 1)
    h_bkg.SetLineWidth(2)
    h_bkg.SetTitle("Classifier score (Flax model, jaxpr2sofie C++ in RDataFrame)")
    h_bkg.Draw("hist")
    h_sig.Draw("hist same")
    legend = ROOT.TLegend(0.35, 0.75, 0.65, 0.88)
    legend.AddEntry(h_sig, "signal", "l")
    legend.AddEntry(h_bkg, "background", "l")
    legend.Draw()
    c.SaveAs(str(path))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="number of events (default 100000)")
    ap.add_argument("--out", default="out_root", help="folder for the model, the events and the plot")
    ap.add_argument("--threads", type=int, default=0, help="RDataFrame threads (default: all cores)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ev = make_events(args.events)
    want = train_and_convert(ev, out)
    t0 = time.time()
    event, got = score_in_root(ev, out, args.threads)
    print(f"RDataFrame scored {len(got)} events in {time.time() - t0:.1f} s (incl. JIT and writing the TTree)")

    ok = len(event) == len(want) and len(np.unique(event)) == len(want)
    err = float(np.max(np.abs(got - want[event]))) if ok else float("inf")
    print(f"every event scored once: {ok}; max |C++ in RDataFrame - JAX| = {err:.2e}")
    print(f"histogram saved to {out / 'score.png'}")
    return 0 if ok and err <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
