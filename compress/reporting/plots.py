"""Trade-off plots with the Pareto front marked (ShrinkBench asks for curves, not single points)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Literal, get_origin, get_type_hints

from compress import compressors
from compress.errors import CompressError
from compress.measuring.runtimes.onnx_runtime import ORT_CPU
from compress.measuring.runtimes.torch_eager import TORCH_CPU
from compress.store.rows import ResultRow

Metric = Callable[[ResultRow], float | None]


def _median(runtime: str, batch: int) -> Metric:
    def metric(r: ResultRow) -> float | None:
        lat = r.lat(runtime, batch)
        return lat.median_ms if lat else None
    return metric


def axes(batch: int) -> dict[str, tuple[str, Metric]]:
    """The x axes of the trade-off plots; latency at the report's batch size."""
    return {
        "macs": ("MACs per image (millions, log scale)", lambda r: r.macs / 1e6),
        f"cpu_b{batch}": (f"torch latency (PyTorch eager, CPU), batch {batch}, median ms, log scale",
                          _median(TORCH_CPU, batch)),
        f"ort_b{batch}": (f"ort latency (ONNX Runtime, CPU), batch {batch}, median ms, log scale",
                          _median(ORT_CPU, batch)),
        "size": ("size on disk (MB, log scale)", lambda r: r.size_bytes / 1e6),
    }


def family_fields(compressor: str) -> list[str]:
    """The options that make a family (a line in a plot): the choices (Literal fields), not the numbers swept."""
    try:
        cls = compressors.get(compressor).config
    except CompressError:
        return []
    hints = get_type_hints(cls)
    return [f.name for f in fields(cls) if f.init and get_origin(hints[f.name]) is Literal]


def series_label(row: ResultRow) -> str:
    """One line per method: compressor plus the settings that define a family (not the swept amount)."""
    comp = row.config.get("compressor") or {}
    parts = [row.compressor]
    for key in family_fields(row.compressor):
        if key in comp:
            parts.append(str(comp[key]))
    if row.config.get("source"):
        parts.append(f"from {row.config['source']['compressor']}")
    return " ".join(parts)


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (lower) and accuracy (higher), by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((cost, acc))
    return front


def _where(key: str, rows: list[ResultRow], batch: int) -> str:
    """What a plot's x axis was measured with: runtime, batch, machine (MACs and size are not timed)."""
    env = rows[-1].env
    machine = f"{env.get('cpu', 'unknown CPU')}, {env.get('threads', '?')} threads"
    runtime = {"cpu": "PyTorch eager CPU", "ort": "ONNX Runtime CPU"}.get(key.split("_")[0])
    if runtime is None:
        what = "theory, not timed" if key == "macs" else "bytes on disk"
        return f"{what}; accuracy on the test split; models timed on {machine}"
    return f"{runtime}, batch {batch}, median of timed calls; {machine}"


def tradeoff_plots(rows: list[ResultRow], out_dir: Path, stem: str, batch: int = 32) -> list[tuple[str, Path]]:
    """Accuracy against MACs, torch and ort latency and size; returns (title, path) of each PNG written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.accuracy is not None]
    if len(rows) < 2:
        return []
    written = []
    for key, (xlabel, metric) in axes(batch).items():
        pts = [(metric(r), 100 * r.accuracy, r) for r in rows if metric(r)]  # type: ignore[operator]
        if len(pts) < 2:
            continue
        fig, ax = plt.subplots(figsize=(9.5, 4.8))
        families: dict[str, list[tuple[float, float]]] = {}
        for x, y, r in pts:
            families.setdefault("baseline" if r.compressor == "baseline" else series_label(r), []).append((x, y))
        for label, xy in sorted(families.items()):
            xy.sort()
            style = dict(marker="*", markersize=14, linestyle="none", color="black") if label == "baseline" else \
                dict(marker="o", linestyle="-" if len(xy) > 1 else "none")
            ax.plot([p[0] for p in xy], [p[1] for p in xy], label=label, **style)  # type: ignore[arg-type]
        front = pareto([(x, y) for x, y, _ in pts])
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", alpha=0.5,
                linewidth=6, zorder=0, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 accuracy on the test split (%)")
        ax.grid(True, which="both", alpha=0.3)
        # outside the axes, right of them: a legend never covers a point
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
        title = f"accuracy vs {xlabel.split(' (')[0]}"
        ax.set_title(f"{title}\n{_where(key, rows, batch)}", fontsize=10)
        path = save(fig, Path(out_dir) / f"{stem}_acc_vs_{key}.png")
        written.append((title, path))
    return written


def save(fig: Any, path: Path) -> Path:
    """Write a figure atomically (a report never links a half-written image) and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)
    return path
