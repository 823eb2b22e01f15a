"""Sensitivity scans as tables and plots: the terminal after `compress sensitivity`, and the report."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from compress.reporting.cells import code, md_table, plain
from compress.reporting.plots import save
from compress.sensitivity.scans import PruningScan, QuantizationScan
from compress.store.rows import ResultRow


def pruning_frame(scan: PruningScan) -> pd.DataFrame:
    """One line per convolution: its validation top-1 at each amount, and its largest amount within tolerance."""
    allowed = scan.tolerated(scan.tolerance)
    rows = []
    for c in scan.curves:
        line: dict[str, str] = {"layer": c.layer, "filters": str(c.channels)}
        line.update({f"{a:g}": f"{100 * acc:.1f}" for a, acc in zip(scan.amounts, c.accuracy)})
        line[f"largest amount within {scan.tolerance:g} pt"] = f"{allowed[c.layer]:g}" if allowed[c.layer] else "none"
        rows.append(line)
    return pd.DataFrame(rows)


def quantization_frame(scan: QuantizationScan) -> pd.DataFrame:
    """Layers ranked from the most to the least harmed by int8 (accuracy alone, then SQNR)."""
    def harm(x: object) -> tuple[float, float]:
        acc = getattr(x, "alone_accuracy")
        sqnr = getattr(x, "sqnr_db")
        return (acc if acc is not None else 1.0, sqnr if math.isfinite(sqnr) else float("inf"))

    rows = []
    for rank, x in enumerate(sorted(scan.layers, key=harm), 1):
        loss = "" if x.alone_accuracy is None else f"{100 * (scan.val_accuracy - x.alone_accuracy):.2f}"
        rows.append({"rank": rank, "layer": x.layer, "op": x.op,
                     "SQNR dB (int8 model vs fp32)": f"{x.sqnr_db:.1f}" if math.isfinite(x.sqnr_db) else "n/a",
                     "top-1 with only it int8 %": "" if x.alone_accuracy is None else f"{100 * x.alone_accuracy:.2f}",
                     "points lost": loss,
                     "keep fp32": "yes" if x.layer in scan.keep_fp32 else ""})
    return pd.DataFrame(rows)


def table(scan: PruningScan | QuantizationScan) -> str:
    """The scan as a markdown table with one line of context (what `compress sensitivity` prints)."""
    if isinstance(scan, PruningScan):
        head = (f"Validation top-1 (%) with one convolution pruned at each amount, no fine-tuning; baseline "
                f"{100 * scan.val_accuracy:.2f}% on {scan.val_images} validation images; {scan.seconds:.0f} s.")
        return head + "\n\n" + md_table(pruning_frame(scan), disable_numparse=True)
    keep = ", ".join(scan.keep_fp32) or f"none (every layer alone in int8 stays within {scan.tolerance:g} pt)"
    head = (f"int8 per layer, validation split ({scan.val_images} images): fp32 {100 * scan.val_accuracy:.2f}%, every "
            f"layer int8 {100 * scan.int8_accuracy:.2f}%; worth keeping in fp32: {keep}; {scan.seconds:.0f} s.")
    return head + "\n\n" + md_table(quantization_frame(scan), disable_numparse=True)


def plot(scan: PruningScan, out_dir: Path, stem: str) -> Path:
    """Li et al.'s Figure 2 for this baseline: one curve per convolution, accuracy against the amount pruned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    cmap = plt.get_cmap("viridis")
    for i, c in enumerate(scan.curves):
        ax.plot([0.0, *scan.amounts], [100 * scan.val_accuracy, *(100 * a for a in c.accuracy)], marker="o",
                markersize=3, color=cmap(i / max(1, len(scan.curves) - 1)), label=f"{c.layer} ({c.channels})")
    ax.axhline(100 * scan.val_accuracy - scan.tolerance, color="grey", linestyle="--", linewidth=1,
               label=f"baseline - {scan.tolerance:g} pt")
    ax.set_xlabel("fraction of the layer's filters pruned (lowest L1 first), no fine-tuning")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"pruning sensitivity per convolution ({scan.val_images} validation images)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    path = save(fig, Path(out_dir) / f"{stem}_sensitivity_pruning.png")
    return path


def sections(scans: list[PruningScan | QuantizationScan], plots: dict[str, Path]) -> list[str]:
    """The report's sensitivity sections (empty without a stored scan)."""
    out: list[str] = []
    for scan in scans:
        if isinstance(scan, PruningScan):
            figure = plots.get("pruning")
            out += ["## Which layers can lose filters", "",
                    f"From {code(scan.command)}: each convolution pruned alone, validation split (never the test "
                    "split). `run pruning --per-layer sensitivity --amount A` uses it: one tolerance for every layer, "
                    "raised until the MACs reach uniform pruning's at A.", ""]
            if figure is not None:
                out += [f"![pruning sensitivity per convolution]({figure.name})", ""]
            out += [table(scan), ""]
        else:
            out += ["## Which layers break int8", "", f"From {code(scan.command)}: ONNX Runtime static int8 (QDQ, "
                    "per-channel, minmax), validation split.", "", table(scan), ""]
    return out


def guided_against_uniform(rows: list[ResultRow], by_id: dict[str, ResultRow]) -> list[str]:
    """Each sensitivity-guided pruning row against uniform pruning at the same --amount and budget, McNemar between."""
    from compress.reporting.cells import significance

    lines = []
    for r in rows:
        comp = r.config.get("compressor") or {}
        if r.compressor != "pruning" or not comp.get("per_layer"):
            continue
        twins = [u for u in rows if u.compressor == "pruning" and u.row_id != r.row_id
                 and not (u.config.get("compressor") or {}).get("per_layer")
                 and all((u.config.get("compressor") or {}).get(k) == comp.get(k)
                         for k in ("amount", "importance", "keep_classifier", "round_to"))
                 and (u.config.get("compressor") or {}).get("scope") == "uniform"
                 and u.config.get("finetune") == r.config.get("finetune") and not u.config.get("source")]
        if not twins or r.accuracy is None:
            continue
        u = twins[-1]
        if u.accuracy is None:
            continue
        test = significance(r, u)
        gain = 100 * (r.accuracy - u.accuracy)
        verdict = ("guided beat uniform" if gain > 0 else "guided did not beat uniform") + \
            ("" if test is None else f" (McNemar p = {test.p_value:.3f}" + (", significant)" if test.significant
                                                                              else ", not significant)"))
        lines.append(f"- amount {comp.get('amount')} ({plain(str(comp.get('per_layer')))}): guided "
                     f"{100 * r.accuracy:.2f}% at {r.macs / 1e6:.1f} M MACs against uniform {100 * u.accuracy:.2f}% "
                     f"at {u.macs / 1e6:.1f} M MACs, both after {r.finetune_epochs} fine-tuning epochs: "
                     f"{gain:+.2f} pts, {verdict}; per-layer amounts "
                     + ", ".join(f"{a:g}" for a in comp.get("layer_amounts") or []))
    return lines
