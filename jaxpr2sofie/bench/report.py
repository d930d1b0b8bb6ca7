"""The peer benchmark's results as a printed table, a JSON file and a plot."""
from __future__ import annotations

import json
from pathlib import Path

from .machine import cpu_slug


def column(key: str) -> str:
    if key == "ours-mt":
        return "ours:mt"
    if key.endswith("-portable"):
        return key[:-len("-portable")] + ":O2"
    return key.replace("jax2onnx", "j2o").replace("ort1-", "ort1:").replace("ort-", "ort:")


def fmt_us(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def ratio_rows(results: dict) -> list:
    """Per model x batch: ours against the best single-threaded peer and the best peer overall,
    and ours' achieved GFLOP/s as a fraction of the single-core sgemm peak."""
    by_cell = {}
    for c in results["cells"]:
        by_cell.setdefault((c["model"], c["batch"]), {})[c["contender"]] = c
    peak = results["peak"].get("gflops_1core")
    rows = []
    for (model, batch), cells in by_cell.items():
        ok = {k: c["us"] for k, c in cells.items() if c["status"] == "ok"}
        # builds at other flag sets are compared with each other, not counted among the peers
        other = {k: ok.pop(k) for k in list(ok) if results["contenders"][k].get("flag_set", "native") != "native"}
        ours = ok.pop("ours", None)
        ours_mt = ok.pop("ours-mt", None)
        row = {"model": model, "batch": batch}
        portable, sofie_portable = other.get("ours-portable"), other.get("sofie-portable")
        row["portable_over_native"] = portable / ours if portable and ours else None
        row["portable_over_sofie"] = portable / sofie_portable if portable and sofie_portable else None
        for label, pool in (("1t", {k: v for k, v in ok.items() if results["contenders"][k]["single_thread"]}),
                            ("all", ok)):
            best = min(pool, key=pool.get) if pool else None
            row[f"best_{label}"] = best
            row[f"ours_over_best_{label}"] = ours / pool[best] if best and ours is not None and pool[best] > 0 else None
        # ours on every core against the fastest peer (threaded or not)
        best = row["best_all"]
        row["ours_mt_over_best_all"] = ours_mt / ok[best] if best and ours_mt is not None and ok[best] > 0 else None
        gflops = cells.get("ours", {}).get("gflops")
        row["ours_gflops"] = gflops
        row["ours_peak_fraction"] = gflops / peak if gflops and peak else None
        rows.append(row)
    return rows


def table(results: dict) -> str:
    keys = list(results["contenders"])
    m, peak, over = results["machine"], results["peak"], results["overhead_us"]
    s = results["settings"]
    lines = [f"jaxpr2sofie peer benchmark, {results['date']}: {m['model']} ({' '.join(m['flags'])}), {m['cores']} cores",
             f"µs per call, median of {s['repeats']} interleaved rounds (each the median of {s['samples']} loops)"
             + ("; --quick" if s["quick"] else ""),
             "Python call overhead subtracted (a trivial model timed in every cell's rounds; median over cells): "
             + (", ".join(f"{k} {v:.2f} µs" for k, v in over.items()) or "none measured")]
    if "error" in peak:
        lines.append(f"sgemm peak: not measured ({peak['error']})")
    else:
        lines.append(f"sgemm peak ({peak['blas']}, {peak['n']}^3): {peak['gflops_1core']:.1f} GFLOP/s on 1 core, "
                     f"{peak['gflops_all_cores']:.1f} on {peak['all_cores']} cores")
    head = ["model", "batch"] + [column(k) for k in keys] + ["ours/1t", "ours/all", "mt/all", "O2/O3", "O2:sofie",
                                                             "GFLOP/s", "%peak"]
    body, notes = [], []
    ratios = {(r["model"], r["batch"]): r for r in ratio_rows(results)}
    cells = {(c["model"], c["batch"], c["contender"]): c for c in results["cells"]}
    column_absent = {k: v["absent"] for k, v in results["contenders"].items() if v["absent"]}
    for model, info in results["models"].items():
        for batch in info["batches"]:
            row = [model, str(batch)]
            for k in keys:
                c = cells.get((model, batch, k))
                if c is None:
                    row.append("")
                elif c["status"] == "ok":
                    row.append(fmt_us(c["us"]))
                elif c["status"] == "absent" and k in column_absent:
                    row.append("absent")
                elif c["status"] == "skipped":
                    row.append("-")
                else:
                    notes.append(f"{model} batch {batch} {k}: {c['status']}: {c['reason']}")
                    row.append(f"{'n/a' if c['status'] == 'absent' else 'err'}[{len(notes)}]")
            r = ratios.get((model, batch), {})
            row += [f"{r['ours_over_best_1t']:.2f}" if r.get("ours_over_best_1t") else "-",
                    f"{r['ours_over_best_all']:.2f}" if r.get("ours_over_best_all") else "-",
                    f"{r['ours_mt_over_best_all']:.2f}" if r.get("ours_mt_over_best_all") else "-",
                    f"{r['portable_over_native']:.2f}" if r.get("portable_over_native") else "-",
                    f"{r['portable_over_sofie']:.2f}" if r.get("portable_over_sofie") else "-",
                    f"{r['ours_gflops']:.1f}" if r.get("ours_gflops") else "-",
                    f"{100 * r['ours_peak_fraction']:.0f}" if r.get("ours_peak_fraction") else "-"]
            body.append(row)
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines.append("")
    lines += ["  ".join(x[i].rjust(widths[i]) if i > 0 else x[i].ljust(widths[i]) for i in range(len(x)))
              for x in [head] + body]
    lines.append("")
    lines.append("ours/1t, ours/all: ours divided by the fastest single-threaded peer / by the fastest peer "
                 "(below 1: ours is faster; -: that peer's time is 0 once its Python overhead is subtracted); "
                 "mt/all: ours-mt (ours on every core, batch split over threads) over the fastest peer; "
                 "O2/O3: ours built portable (-O2 -march=x86-64-v3) over ours built native (-O3 -march=native); "
                 "O2:sofie: ours over real SOFIE, both built portable; "
                 "%peak: ours' GFLOP/s over the 1-core sgemm peak")
    for k in keys:
        info = results["contenders"][k]
        lines.append(f"  {column(k):10s} {info['label']}" + (f"  [absent: {info['absent']}]" if info["absent"] else ""))
    for i, n in enumerate(notes, 1):
        lines.append(f"  [{i}] {n}")
    return "\n".join(lines)


def write(results: dict, out: Path) -> tuple:
    """`<out>/<YYYY-MM-DD>-<cpu>.json` and the plot beside it; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{results['date'][:10]}-{cpu_slug(results['machine']['model'])}"
    png = out / f"{stem}.png"
    try:
        plot(results, png)
    except ImportError:    # matplotlib is in the [bench] extra only
        png = None
    path = out / f"{stem}.json"
    data = dict(results, rows=ratio_rows(results), table=table(results), plot=png.name if png else None)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path, png


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")        # files only: no display needed, none touched
    import matplotlib.pyplot as plt
    models = list(results["models"])
    ncols = min(4, len(models))
    nrows = -(-len(models) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(8.0, 4.2 * ncols), 3.4 * nrows + 0.8), squeeze=False)
    handles = {}
    for ax, model in zip(axes.flat, models):
        for k in results["contenders"]:
            pts = sorted((c["batch"], c["us"]) for c in results["cells"]
                         if c["model"] == model and c["contender"] == k and c["status"] == "ok" and c["us"] > 0)
            if pts:
                (line,) = ax.plot(*zip(*pts), marker="o", markersize=3, lw=2.2 if k == "ours" else 1.2,
                                  label=column(k))
                handles[k] = line
        ax.set_xscale("log")
        ax.set_yscale("log")
        batches = results["models"][model]["batches"]
        ax.set_xticks(batches, [str(b) for b in batches])   # the batches run, not powers of ten
        ax.minorticks_off()
        ax.set_title(f"{model}: {results['models'][model]['title']}", fontsize=8)
        ax.set_xlabel("batch", fontsize=8)
        ax.set_ylabel("µs per call", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    m = results["machine"]
    fig.suptitle(f"jaxpr2sofie peer benchmark, {results['date'][:10]}, {m['model']}, {m['cores']} cores", fontsize=10)
    fig.legend(list(handles.values()), [column(k) for k in handles], loc="lower center",
               ncol=min(len(handles), 8), fontsize=8)
    fig.tight_layout(rect=(0, 0.8 / fig.get_figheight(), 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
