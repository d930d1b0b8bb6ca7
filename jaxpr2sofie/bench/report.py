"""The peer benchmark's results as a printed table, a JSON file and a plot."""
from __future__ import annotations

import json
from pathlib import Path

from .contenders import FLAG_LABELS
from .machine import cpu_slug


def column(key: str) -> str:
    if key == "ours-mt":
        return "ours:mt"
    for flag_set in sorted(FLAG_LABELS, key=len, reverse=True):     # portable-o3 before portable
        if key.endswith(f"-{flag_set}"):
            return f"{key[:-len(flag_set) - 1]}:{FLAG_LABELS[flag_set]}"
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
        portable_o3 = other.get("ours-portable-o3")
        row["portable_over_native"] = portable / ours if portable and ours else None
        row["portable_over_sofie"] = portable / sofie_portable if portable and sofie_portable else None
        # the two halves of portable_over_native: the baseline ISA at -O3, then -O2 at that ISA
        row["isa_ratio"] = portable_o3 / ours if portable_o3 and ours else None
        row["opt_ratio"] = portable / portable_o3 if portable and portable_o3 else None
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


# Ratio columns: (header, key of ratio_rows, the flag set it needs or None, what it is)
RATIOS = [("ours/1t", "ours_over_best_1t", None, "ours over the fastest single-threaded peer (below 1: ours is "
           "faster; -: that peer's time is 0 once its Python overhead is subtracted)"),
          ("ours/all", "ours_over_best_all", None, "ours over the fastest peer"),
          ("mt/all", "ours_mt_over_best_all", None, "ours-mt (ours on every core, batch split over threads) over the "
           "fastest peer"),
          ("O2/O3", "portable_over_native", "portable", "ours built portable (-O2 -march=x86-64-v3) over ours built "
           "native (-O3 -march=native)"),
          ("O2:sofie", "portable_over_sofie", "portable", "ours over real SOFIE, both built portable"),
          ("O3v3/O3", "isa_ratio", "portable-o3", "ours at -O3 -march=x86-64-v3 over native: the ISA's share"),
          ("O2/O3v3", "opt_ratio", "portable-o3", "ours at -O2 over -O3, both -march=x86-64-v3: the optimiser's share")]


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
    ratios_shown = [r for r in RATIOS if r[2] is None or r[2] in s["flag_sets"]]
    head = ["model", "batch"] + [column(k) for k in keys] + [r[0] for r in ratios_shown] + ["GFLOP/s", "%peak"]
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
            row += [f"{r[key]:.2f}" if r.get(key) else "-" for _, key, _, _ in ratios_shown]
            row += [f"{r['ours_gflops']:.1f}" if r.get("ours_gflops") else "-",
                    f"{100 * r['ours_peak_fraction']:.0f}" if r.get("ours_peak_fraction") else "-"]
            body.append(row)
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines.append("")
    lines += ["  ".join(x[i].rjust(widths[i]) if i > 0 else x[i].ljust(widths[i]) for i in range(len(x)))
              for x in [head] + body]
    lines.append("")
    lines.append("; ".join(f"{name}: {what}" for name, _, _, what in ratios_shown)
                 + "; %peak: ours' GFLOP/s over the 1-core sgemm peak")
    for k in keys:
        info = results["contenders"][k]
        lines.append(f"  {column(k):10s} {info['label']}" + (f"  [absent: {info['absent']}]" if info["absent"] else ""))
    for i, n in enumerate(notes, 1):
        lines.append(f"  [{i}] {n}")
    if results.get("rdf"):
        lines += ["", *rdf_table(results["rdf"])]
    return "\n".join(lines)


def rdf_table(r: dict) -> list:
    """The RDataFrame row's lines: per thread count, µs per event (wall and CPU) and events per
    second of reading the columns alone and of scoring them with the model, then the budget."""
    if "absent" in r or "error" in r:
        return [f"RDataFrame row: {'absent' if 'absent' in r else 'error'}: {r.get('absent') or r.get('error')}"]
    f = r["file"]
    lines = [f"RDataFrame (ROOT {r['root']}): {r['events']} events of {r['columns']} float columns "
             f"({f['clusters']} clusters of {r['cluster']} events, compression {f['compression']}, {f['zip_mb']:.0f} MB), "
             f"{r['model']}, median of {r['repeats']} event loops per cell; compiled at batch 1 ({r['flags']}, "
             f"the project's harness): {r['compiled_us']:.3f} µs ({1 / r['compiled_us']:.2f} M events/s)",
             ""]
    keys = list(r["labels"])
    head = ["threads"] + [f"{k} µs/ev" for k in keys] + [f"{k} CPU µs/ev" for k in keys] + [f"{k} Mev/s" for k in keys]
    body = [[t] + [f"{c[k]['wall_us']:.3f}" for k in keys] + [f"{c[k]['cpu_us']:.3f}" for k in keys]
            + [f"{c[k]['events_per_s'] / 1e6:.2f}" for k in keys] for t, c in r["threads"].items()]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines += ["  ".join(x[i].rjust(widths[i]) if i else x[i].ljust(widths[i]) for i in range(len(x)))
              for x in [head] + body]
    b = r["budget"]
    lines += ["", f"budget (issue 24, 1 thread): compiled {r['compiled_us']:.3f} + read "
                  f"{b['budget_us'] - r['compiled_us'] - b['margin_us']:.3f} + {b['margin_us']} = {b['budget_us']:.3f} "
                  f"µs/event; ours {b['ours_us']:.3f}: {'met' if b['met'] else 'missed'} by {abs(b['over_us']):.3f} µs "
                  f"(define's own cost over reading and the model: {b['overhead_us']:+.3f} µs)"]
    if r.get("speedup"):
        slots = r["slots"][str(r["speedup_threads"])]
        lines.append(f"{r['speedup_threads']} threads (EnableImplicitMT) over 1 (the sequential loop), wall clock: "
                     + ", ".join(f"{k} {v:.2f}x" for k, v in r["speedup"].items())
                     + f"; events per slot: {', '.join(map(str, slots))}")
    if any(v is not None for v in r.get("load", {}).values()):
        lines.append("load average (1 min) as each thread count ended: "
                     + ", ".join(f"{t} thread(s) {v:.2f}" for t, v in r["load"].items() if v is not None)
                     + f", {r.get('cores', '?')} cores (a load above a count's threads: other jobs took CPU)")
    lines += [f"  {k:6s} {v}" + (f"  [absent: {r['sofie_absent']}]" if k == "sofie" and r.get("sofie_absent") else "")
              for k, v in r["labels"].items()]
    return lines


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


# One colour per family (a build of ours or of SOFIE at any flag set shares its family's colour),
# one dash per flag set, so the flag sets read as pairs of lines.
_FAMILY_COLOURS = {"ours": "tab:blue", "ours-mt": "tab:cyan", "sofie": "tab:red", "sofie-ops": "tab:pink",
                   "xla": "tab:green", "iree": "tab:purple", "ort1-jax2onnx": "tab:orange", "ort-jax2onnx": "tab:brown",
                   "ort1-ours": "tab:olive", "ort-ours": "tab:gray"}
_DASHES = {"native": "-", "portable": "--", "portable-o3": ":"}


def _style(key: str, info: dict) -> dict:
    flag_set = info.get("flag_set") or "native"
    family = key[:-len(flag_set) - 1] if flag_set != "native" and key.endswith(f"-{flag_set}") else key
    return {"color": _FAMILY_COLOURS.get(family), "linestyle": _DASHES.get(flag_set, "-"),
            "lw": 2.2 if family == "ours" else 1.2}


def _rdf_panel(ax, r: dict) -> None:
    """Bars: µs per event of each RDataFrame contender per thread count, and the budget line."""
    keys, threads = list(r["labels"]), list(r["threads"])
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        ax.bar([j + i * width for j in range(len(threads))], [r["threads"][t][k]["wall_us"] for t in threads], width,
               label=f"{k} (define)" if k != "read" else "read only", color=_FAMILY_COLOURS.get(k, "tab:gray"))
    ax.axhline(r["budget"]["budget_us"], color="black", lw=1, ls="--", label="budget, 1 thread")
    ax.axhline(r["compiled_us"], color="tab:blue", lw=1, ls=":", label="compiled model")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(threads))], [f"{t} thread{'s' if t != '1' else ''}"
                                                                         for t in threads])
    ax.set_title(f"RDataFrame: {r['model']}, {r['events']} events", fontsize=8)
    ax.set_ylabel("µs per event (wall)", fontsize=8)
    ax.tick_params(labelsize=7)
    top = max([r["budget"]["budget_us"]] + [c[k]["wall_us"] for c in r["threads"].values() for k in keys])
    ax.set_ylim(0, 1.45 * top)       # room for the legend above the bars
    ax.legend(fontsize=6, loc="upper center", ncol=3)
    ax.grid(True, axis="y", alpha=0.3)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")        # files only: no display needed, none touched
    import matplotlib.pyplot as plt
    models = list(results["models"])
    rdf = results.get("rdf") if results.get("rdf") and "threads" in results["rdf"] else None
    panels = len(models) + (rdf is not None)
    ncols = min(4, panels)
    nrows = -(-panels // ncols)
    legend_rows = -(-len(results["contenders"]) // 8)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(8.0, 4.2 * ncols), 3.4 * nrows + 0.5 + 0.25 * legend_rows),
                             squeeze=False)
    handles = {}
    for ax, model in zip(axes.flat, models):
        for k, info in results["contenders"].items():
            pts = sorted((c["batch"], c["us"]) for c in results["cells"]
                         if c["model"] == model and c["contender"] == k and c["status"] == "ok" and c["us"] > 0)
            if pts:
                (line,) = ax.plot(*zip(*pts), marker="o", markersize=3, label=column(k), **_style(k, info))
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
    if rdf is not None:
        _rdf_panel(axes.flat[len(models)], rdf)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    m = results["machine"]
    flags = "; ".join(f"{'plain' if f == 'native' else FLAG_LABELS[f]}: {' '.join(v[:2])}"
                      for f, v in results["settings"].get("flag_sets", {}).items())
    fig.suptitle(f"jaxpr2sofie peer benchmark, {results['date'][:10]}, {m['model']}, {m['cores']} cores"
                 + (f" (dashes: flag sets, {flags})" if flags else ""), fontsize=9)
    fig.legend(list(handles.values()), [column(k) for k in handles], loc="lower center",
               ncol=min(len(handles), 8), fontsize=8)
    fig.tight_layout(rect=(0, (0.25 + 0.25 * legend_rows) / fig.get_figheight(), 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
