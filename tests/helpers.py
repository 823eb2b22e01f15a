"""Builders shared by the tests: one place, so no test module imports another's private helpers.

The CLI in-process (`cli`), its one-line error check, narrow and tiny VGG16 specs with saved checkpoints and
random loaders, a fake clock for timing code, synthetic result rows for the report, the compressor contract.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from compress import compressors
from compress.cli.main import main
from compress.compressors import Context
from compress.data.split import Loaders
from compress.measuring import counting
from compress.measuring.runtimes.cuda import TORCH_CUDA
from compress.measuring.runtimes.onnx_runtime import ORT_CPU
from compress.measuring.runtimes.torch_eager import TORCH_CPU
from compress.models import checkpoints, vgg
from compress.store.rows import Latency, ResultRow


def cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def one_line(code: int, err: str, match: str, want: int = 2) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("compress")]  # progress lines may precede it
    assert code == want and len(lines) == 1 and match in lines[0] and "Traceback" not in err, err


def narrow(path: Path) -> Path:
    checkpoints.save_checkpoint(vgg.build(NARROW), NARROW, path, extra={"image_size": 32})
    return path


NARROW = vgg.ModelSpec(num_classes=10, conv_widths=tuple(w // 8 for w in vgg.VGG16_WIDTHS), hidden=(64, 64))


TINY = vgg.ModelSpec(num_classes=4, conv_widths=(16,) * 13, hidden=(64,))


def tiny_loaders(n_train: int = 64, n_test: int = 24, labels: int | None = None) -> Loaders:
    g = torch.Generator().manual_seed(0)

    def ds(n: int) -> TensorDataset:
        y = torch.full((n,), labels) if labels is not None else torch.randint(0, 4, (n,), generator=g)
        return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), y)

    return Loaders(DataLoader(ds(n_train), batch_size=16), DataLoader(ds(8), batch_size=16),
                   DataLoader(ds(n_test), batch_size=16))


def int8_ctx(tmp_path: Path, loaders: Loaders | None = None) -> Context:
    return Context(loaders=loaders or tiny_loaders(), device=torch.device("cpu"), num_classes=4, image_size=32,
                   run_dir=tmp_path / "run", threads=2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lat(ms: float, batch: int) -> Latency:
    return Latency(batch=batch, median_ms=ms, p90_ms=ms * 1.05, iqr_ms=ms * 0.02, calls=20)


def correct(n_right: int, n: int = 40) -> str:
    return "1" * n_right + "0" * (n - n_right)


BASE = ResultRow(
    row_id="r0-baseline", created="2026-11-23T00:00:00+00:00", dataset="synthetic", compressor="baseline",
    config={"arch": "vgg16"}, config_hash="aaaa", baseline_row_id=None, model_path="m.pt", num_classes=10,
    image_size=32, params=134_301_514, nonzero_params=134_301_514, macs=432_800_768, size_bytes=537_215_939,
    latency={TORCH_CPU: {1: lat(30, 1), 32: lat(240, 32)}, TORCH_CUDA: {1: lat(0.9, 1), 32: lat(1.4, 32)},
             ORT_CPU: {1: lat(20, 1), 32: lat(180, 32)}}, latency_notes={TORCH_CUDA: "NVIDIA H100"},
    accuracy=0.975, accuracy_before_finetune=None, test_images=40, finetune_epochs=0, best_epoch=9,
    train_seconds=700.0, seed=0, env={"cpu": "test CPU", "cpu_vnni": False, "threads": 2, "torch": "x",
                                      "dtype": "float32", "git_commit": "abc1234"},
    command="python -m compress baseline", onnx_size_bytes=537_000_000,
    onnx_parity=1e-6, conv_macs=313_000_000, correct=correct(39))


def report_rows() -> list[ResultRow]:
    pruned = replace(BASE, row_id="r1-pruning", compressor="pruning", config={"compressor": {"amount": 0.3}},
                     config_hash="bbbb", baseline_row_id=BASE.row_id, params=65_739_348, nonzero_params=65_739_348,
                     macs=211_000_000, size_bytes=263_000_000, accuracy=0.95,
                     latency={TORCH_CPU: {1: lat(30, 1), 32: lat(174, 32)}, ORT_CPU: BASE.latency[ORT_CPU]},
                     accuracy_before_finetune=0.19, finetune_epochs=6, command="python -m compress run pruning",
                     correct="0" * 38 + "1" * 2, latency_notes={TORCH_CUDA: "n/a (no CUDA device)"})
    int8 = replace(BASE, row_id="r2-quantization", compressor="quantization", config={"compressor": {}},
                   config_hash="cccc", baseline_row_id=BASE.row_id, source_row_id=BASE.row_id, size_bytes=134_500_000,
                   latency={ORT_CPU: {1: lat(20, 1), 32: lat(90, 32)}},
                   latency_notes={TORCH_CUDA: "n/a (CPU int8 backend)"}, backend="onnxruntime int8", env={**BASE.env, "dtype": "int8"},
                   accuracy=0.95, correct=correct(38))
    control = replace(BASE, row_id="r3-control", compressor="distillation", config={"compressor": {"kd": False}},
                      config_hash="dddd", baseline_row_id=BASE.row_id, params=580_000, accuracy=0.90,
                      finetune_epochs=12, correct=correct(36))
    kd = replace(control, row_id="r4-kd", config={"compressor": {"kd": True}}, config_hash="eeee", accuracy=0.95,
                 control_row_id=control.row_id, correct=correct(38))
    return [BASE, pruned, int8, control, kd]


def defaults_of(name: str, **changes: object) -> dict:
    return {"compressor": {**json.loads(json.dumps(asdict(compressors.get(name).config()), default=str)), **changes}}


def five() -> list[ResultRow]:
    """The baseline and each of seed 004's methods at its default (plus a non-default pruning row)."""
    rows = [BASE]
    for i, name in enumerate(("slim-head", "depthwise", "pruning", "quantization", "distillation"), 1):
        rows.append(replace(BASE, row_id=f"r{i}-{name}", compressor=name, config=defaults_of(name),
                            config_hash=f"h{i}", baseline_row_id=BASE.row_id, params=BASE.params // (i + 1),
                            macs=BASE.macs // (i + 1), size_bytes=BASE.size_bytes // (i + 1),
                            latency={TORCH_CPU: {32: lat(240 / (i + 1), 32)}, ORT_CPU: {32: lat(180 / i, 32)}},
                            accuracy=0.95, correct=correct(38), command=f"python -m compress run {name}"))
    rows.append(replace(rows[3], row_id="r9-pruning", config=defaults_of("pruning", amount=0.7, importance="random"),
                        config_hash="h9"))
    return rows


def tables(text: str) -> list[list[str]]:
    """Each markdown table as its source lines (header, rule, body)."""
    out, cur = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            out.append(cur)
            cur = []
    return out


def compressor_ctx() -> Context:
    return Context(loaders=None, device=torch.device("cpu"), num_classes=10, image_size=32, run_dir=Path("unused"))


def contract_names() -> list[str]:
    """Every registered compressor whose result is an fp32 module (int8: tests/test_quantization.py; fp16/bf16:
    tests/test_runtimes.py)."""
    return [n for n in compressors.names() if n not in ("quantization", "precision")]


def check_contract(name: str) -> None:
    """The registry contract: defaults work, logits keep their shape, the model gets smaller."""
    comp = compressors.get(name)
    spec = vgg.ModelSpec(num_classes=10)
    base = vgg.build(spec)
    model, new_spec = comp.fn(copy.deepcopy(base), spec, comp.config(), compressor_ctx())
    if comp.finalize is not None:  # as the pipeline does after fine-tuning
        model = comp.finalize(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 10)
    assert counting.count_params(model)[0] < counting.count_params(base)[0]
    rebuilt = vgg.build(new_spec)  # the spec it returns must describe the model it returns
    rebuilt.load_state_dict(model.state_dict())
    assert comp.description


def store_row(i: int, writer: int) -> ResultRow:
    lat = Latency(batch=1, median_ms=1.0, p90_ms=1.2, iqr_ms=0.1, calls=10)
    return ResultRow(
        row_id=f"w{writer}-{i}", created=f"2026-01-01T00:00:00.{i:06d}+00:00",  # fixed width
        dataset="digits", compressor="baseline",
        config={"i": i}, config_hash=str(i), baseline_row_id=None, model_path="m.pt", num_classes=10,
        image_size=32, params=1, nonzero_params=1, macs=1, size_bytes=1, latency={"torch": {1: lat}},
        latency_notes={"cuda": "n/a"}, accuracy=0.5, accuracy_before_finetune=None, test_images=1, finetune_epochs=0,
        best_epoch=None, train_seconds=0.0, seed=0, env={}, command="test")
