"""End to end through the CLI on a tiny digits subset: the commands a user types."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compress.cli.main import main
from compress.store.rows import ROW_COLUMNS
from compress.store.sqlite import Store
from tests.conftest import QUICK_CLI, QUICK_DATA, QUICK_LATENCY


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ws")


@pytest.fixture(scope="module")
def slim_run(workspace: Path) -> tuple[int, list[dict]]:
    """One real `run slim-head --json` (baseline trained on the fly), shared by the tests below."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "slim-head", "--json", "--workdir", str(workspace / "runs"),
                     "--reports-dir", str(workspace / "reports"), "--epochs", "1", "--baseline-epochs", "1",
                     *QUICK_CLI, "--runtimes", "torch,ort", "--export-onnx"])  # checks the ONNX Runtime columns too
    return code, json.loads(out.getvalue())


def test_run_prints_every_column_as_json(slim_run: tuple[int, list[dict]], workspace: Path) -> None:
    code, rows = slim_run
    assert code == 0
    assert [r["compressor"] for r in rows] == ["baseline", "slim-head"]
    for r in rows:
        assert set(ROW_COLUMNS) <= set(r)
        assert r["params"] > 0 and r["macs"] > 0 and r["size_bytes"] > 0
        assert 0.0 <= r["accuracy"] <= 1.0 and r["test_images"] == 16
        assert r["latency"]["torch"]["1"]["median_ms"] > 0 and r["latency"]["torch"]["32"]["batch"] == 32
        assert r["env"]["torch"] and r["env"]["threads"] >= 1 and "cpu_vnni" in r["env"]
        assert r["latency_notes"]["cuda"].startswith("n/a")
        assert r["latency"]["ort"]["32"]["batch"] == 32 and 0 <= r["onnx_parity"] <= 1e-4 and r["onnx_size_bytes"] > 0
        assert r["backend"] == "pytorch fp32" and r["env"]["dtype"] == "float32"
    base, slim = rows
    for r in rows:  # --export-onnx: the parity-checked export that was timed, kept beside the model
        onnx = workspace / "runs" / r["dataset"] / r["compressor"] / r["row_id"] / "model.onnx"  # its run folder
        assert onnx.stat().st_size == r["onnx_size_bytes"]
    assert slim["baseline_row_id"] == base["row_id"]
    assert slim["params"] < 0.31 * base["params"]
    assert slim["size_bytes"] < 0.31 * base["size_bytes"]
    assert slim["finetune_epochs"] == 1 and slim["config"]["compressor"]["hidden"] == [1024, 256]


def test_rows_are_stored_and_the_report_is_written(slim_run: tuple[int, list[dict]], workspace: Path) -> None:
    stored = Store(workspace / "runs" / "results.sqlite").rows("digits")
    assert {r.row_id for r in stored} == {r["row_id"] for r in slim_run[1]}
    text = (workspace / "reports" / "digits.md").read_text()
    full = text.split("## All models")[1].split("\n## ")[0]  # the full table: one line per stored row
    lines = [ln for ln in full.splitlines() if ln.startswith("| baseline") or ln.startswith("| slim-head")]
    assert lines[0].startswith("| baseline") and len(lines) == 2
    assert "## Environment" in text and "python -m compress run slim-head" in text


def test_saved_model_measures_again_with_the_same_accuracy(slim_run: tuple[int, list[dict]], workspace: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    slim = slim_run[1][1]
    code = main(["measure", "--weights", slim["model_path"], "--json", "--workdir", str(workspace / "runs"),
                 "--dataset", "digits", *QUICK_DATA, *QUICK_LATENCY])
    assert code == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["accuracy"] == slim["accuracy"] and row["params"] == slim["params"]
    assert row["row_id"] not in {r.row_id for r in Store(workspace / "runs" / "results.sqlite").rows()}  # no --store


def test_second_run_reuses_the_cached_baseline_and_prints_a_table_that_fits_120_columns(
        slim_run: tuple[int, list[dict]], workspace: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")  # a 120-column terminal
    code = main(["run", "slim-head", "--head", "gap", "--workdir", str(workspace / "runs"),  # no training needed here
                 "--reports-dir", str(workspace / "reports"), "--epochs", "0", *QUICK_CLI])
    captured = capsys.readouterr()
    assert code == 0 and "using cached baseline" in captured.err
    assert max(len(line) for line in captured.out.splitlines()) <= 120, captured.out
    assert "slim-head" in captured.out and "head=gap" in captured.out and "baseline vgg16:" in captured.out
    stored = Store(workspace / "runs" / "results.sqlite").rows("digits")
    gap = next(r for r in reversed(stored) if r.compressor == "slim-head" and r.config["compressor"]["head"] == "gap")
    base = next(r for r in stored if r.row_id == gap.baseline_row_id)
    assert base.accuracy == slim_run[1][0]["accuracy"]  # same weights, same test split
    assert gap.params < 0.15 * base.params


def test_sweep_stores_every_point_and_draws_the_tradeoff_plots(slim_run: tuple[int, list[dict]], workspace: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # --importance l1 alone: the random control a sweep adds by default is checked at the parser (below); here it
    # would only double the time (each point writes a VGG16 checkpoint).
    code = main(["sweep", "pruning", "--amount", "0.3,0.6", "--importance", "l1", "--json", "--workdir",
                 str(workspace / "runs"), "--reports-dir", str(workspace / "reports"), "--epochs", "0", *QUICK_CLI])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["compressor"] for r in rows] == ["baseline"] + ["pruning"] * 2
    points = {(r["config"]["compressor"]["amount"], r["config"]["compressor"]["importance"]) for r in rows[1:]}
    assert points == {(0.3, "l1"), (0.6, "l1")}
    assert all(r["baseline_row_id"] == rows[0]["row_id"] for r in rows[1:])  # one baseline timing for the sweep
    l1 = [r for r in rows[1:] if r["config"]["compressor"]["importance"] == "l1"]
    by_amount = sorted(l1, key=lambda r: r["config"]["compressor"]["amount"])
    assert by_amount[0]["macs"] > by_amount[1]["macs"] and all(r["accuracy_before_finetune"] is not None
                                                               for r in rows[1:])
    report = (workspace / "reports" / "digits.md").read_text()
    for key in ("macs", "cpu_b32", "size"):
        png = workspace / "reports" / f"digits_acc_vs_{key}.png"
        assert png.stat().st_size > 5000 and f"]({png.name})" in report
    assert "## Speed-up against MACs" in report


def test_a_pruning_sweep_brings_its_random_control_unless_told_otherwise() -> None:
    from dataclasses import fields

    from compress import compressors
    from compress.cli.parser import build_parser
    from compress.experiments.plans import grid

    ns = build_parser().parse_args(["sweep", "pruning", "--amount", "0.3,0.6"])
    comp = compressors.get("pruning")
    points = grid(comp, {f.name: getattr(ns, "c_" + f.name) for f in fields(comp.config) if hasattr(ns, "c_" + f.name)})
    assert {(p.amount, p.importance) for p in points} == {(0.3, "l1"), (0.6, "l1"), (0.3, "random"), (0.6, "random")}


def test_quantize_a_stored_run_with_from(slim_run: tuple[int, list[dict]], workspace: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`--from RUN`: the slim-head model is int8-quantized; the source is re-measured beside it."""
    slim = slim_run[1][1]
    code = main(["run", "quantization", "--from", slim["row_id"], "--calibration-size", "32", "--json",
                 "--workdir", str(workspace / "runs"), "--reports-dir", str(workspace / "reports"),
                 *QUICK_DATA, *QUICK_LATENCY, "--runtimes", "torch,ort"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    base, int8 = rows
    stored = {r.row_id: r for r in Store(workspace / "runs" / "results.sqlite").rows("digits")}
    source = stored[int8["source_row_id"]]
    assert source.compressor == "slim-head" and source.row_id != slim["row_id"]  # re-measured now
    assert source.config_hash == slim["config_hash"] and source.baseline_row_id == base["row_id"]
    assert int8["config"]["source"] == {"compressor": "slim-head", "config_hash": slim["config_hash"]}
    assert int8["params"] == slim["params"] and int8["env"]["dtype"] == "int8"
    assert int8["size_bytes"] * 3.5 < int8["onnx_size_bytes"] and int8["model_path"].endswith(".int8.onnx")
    assert "torch" not in int8["latency"] and int8["latency"]["ort"]["32"]["median_ms"] > 0
    assert int8["latency_notes"]["cuda"] == "n/a (CPU int8 backend)" and int8["finetune_epochs"] == 0
    report = (workspace / "reports" / "digits.md").read_text()
    assert "## int8 against its own fp32" in report and "vs the fp32 ONNX file" in report


def test_unstructured_pruning_end_to_end_keeps_its_zeros_and_its_dense_cost(
        slim_run: tuple[int, list[dict]], workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The pipeline's order: masks on while fine-tuning (zeros cannot regrow), then made permanent, then saved."""
    from torch import nn

    from compress.models.checkpoints import load_model

    code = main(["run", "pruning", "--method", "unstructured", "--amount", "0.5", "--epochs", "1", "--json",
                 "--workdir", str(workspace / "runs"), "--reports-dir", str(workspace / "reports"), *QUICK_CLI])
    assert code == 0
    base, row = json.loads(capsys.readouterr().out)
    model = load_model(Path(row["model_path"])).model  # loads: no masks or weight_orig were saved
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert float((m.weight == 0).float().mean()) >= 0.4999  # every layer still half zeros after training
    assert row["params"] == base["params"] and row["nonzero_params"] < 0.51 * row["params"]
    assert row["macs"] == base["macs"] and abs(row["size_bytes"] - base["size_bytes"]) < 0.001 * base["size_bytes"]


def test_sensitivity_then_guided_pruning_against_uniform_in_the_report(
        slim_run: tuple[int, list[dict]], workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scan on the validation split, prune per layer from it at uniform 0.5's MACs, compare both in the report."""
    where = ["--workdir", str(workspace / "runs"), "--reports-dir", str(workspace / "reports")]
    per_layer = ["run", "pruning", "--per-layer", "sensitivity", "--amount", "0.6", "--epochs", "0", "--json",
                 *where, *QUICK_CLI]
    # (no scan yet: tests/test_sensitivity.py checks the one line that says which command to run)
    assert main(["sensitivity", "pruning", "--amounts", "0.5,0.9", "--json", *where, *QUICK_DATA]) == 0
    scan = json.loads(capsys.readouterr().out)
    assert len(scan["curves"]) == 13 and scan["val_images"] == 11 and scan["amounts"] == [0.5, 0.9]  # 80 digits: every class holds out a validation image
    assert main(per_layer) == 0
    guided = json.loads(capsys.readouterr().out)[1]
    amounts = guided["config"]["compressor"]["layer_amounts"]
    assert len(amounts) == 13 and all(0 <= a <= 0.9 for a in amounts)
    # uniform 0.6 with the same budget: the sweep test above stored it in this workspace; run it when alone
    same = [r for r in Store(workspace / "runs" / "results.sqlite").rows("digits") if r.compressor == "pruning"
            and r.config["compressor"]["amount"] == 0.6 and not r.config["compressor"].get("per_layer")
            and r.config["compressor"]["importance"] == "l1" and r.config["finetune"] == guided["config"]["finetune"]]
    if not same:
        assert main(["run", "pruning", "--amount", "0.6", "--epochs", "0", "--json", *where, *QUICK_CLI]) == 0
        capsys.readouterr()
        same = [r for r in Store(workspace / "runs" / "results.sqlite").rows("digits") if r.compressor == "pruning"
                and r.config["compressor"]["amount"] == 0.6 and not r.config["compressor"].get("per_layer")]
    assert guided["macs"] <= 1.02 * same[-1].macs
    report = (workspace / "reports" / "digits.md").read_text()
    assert "## Sensitivity-guided against uniform pruning" in report and "## Which layers can lose filters" in report
    assert "(digits_sensitivity_pruning.png)" in report
    assert (workspace / "reports" / "digits_sensitivity_pruning.png").stat().st_size > 5000
    # a bad --per-layer file: tests/test_sensitivity.py (one CompressError line naming the model's layers)


@pytest.mark.parametrize("flags, message", [
    (["--objective", "speed"], "invalid choice: 'speed'"),
    (["--max-drop", "-1"], "argument --max-drop: must be >= 0 points of accuracy, got -1"),
    (["--max-drop", "abc"], "argument --max-drop: invalid float value: 'abc'"),
    (["--max-drop", "nan"], "argument --max-drop: 'nan' is not a finite number"),
    (["--budget-min", "0"], "argument --budget-min: must be a positive number, got 0"),
])
def test_search_refuses_bad_input_in_one_line(flags: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:  # refused when the command line is read
        main(["search", *flags, "--workdir", str(tmp_path / "runs")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "runs").exists()  # refused before any work


def test_search_with_no_time_to_train_returns_the_best_untuned_candidate_marked_as_such(
        slim_run: tuple[int, list[dict]], workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--workdir", str(workspace / "runs"), "--reports-dir", str(workspace / "reports")]
    before = len(Store(workspace / "runs" / "results.sqlite").rows("digits"))
    assert main(["search", "--objective", "macs", "--budget-min", "0.01", *where, *QUICK_DATA, *QUICK_LATENCY]) == 0
    out = capsys.readouterr().out
    assert "best UNTUNED candidate pruning amount=" in out and "not stored: untuned" in out
    assert len(Store(workspace / "runs" / "results.sqlite").rows("digits")) == before + 1  # the baseline row only
    saved = sorted((workspace / "runs" / "digits" / "search").glob("search-*.json"))
    assert saved and json.loads(saved[-1].read_text())["best_untuned"] is True
    assert "## Search: the best macs within 1 points" in (workspace / "reports" / "digits.md").read_text()


def test_every_distilled_row_has_its_control_beside_it(slim_run: tuple[int, list[dict]], workspace: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "distillation", "--student", "seed-student", "--epochs", "1", "--json",
                 "--workdir", str(workspace / "runs"), "--reports-dir", str(workspace / "reports"), *QUICK_CLI])
    assert code == 0
    base, control, kd = json.loads(capsys.readouterr().out)
    assert base["compressor"] == "baseline" and control["compressor"] == kd["compressor"] == "distillation"
    assert control["config"]["compressor"]["kd"] is False and kd["config"]["compressor"]["kd"] is True
    assert kd["control_row_id"] == control["row_id"] and control["control_row_id"] is None
    assert control["finetune_epochs"] == kd["finetune_epochs"] == 1 and control["params"] == kd["params"]
    assert kd["params"] * 10 < base["params"] and len(kd["correct"]) == kd["test_images"]
    report = (workspace / "reports" / "digits.md").read_text()
    assert "## Distillation against its control" in report and f"control row `{control['row_id']}`" in report


def test_measure_without_data_reports_what_needs_no_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    import torchvision

    path = tmp_path / "best_model.pth"
    torch.save(torchvision.models.vgg16(weights=None, num_classes=3).state_dict(), path)
    code = main(["measure", "--weights", str(path), "--image-size", "32", "--json", "--workdir", str(tmp_path),
                 *QUICK_LATENCY])
    row = json.loads(capsys.readouterr().out)[0]
    assert code == 0 and row["accuracy"] is None and row["params"] == 134_272_835 and row["macs"] > 0


@pytest.mark.parametrize("argv", [[], ["baseline"], ["measure"], ["report"], ["list"],
                                  *[[cmd, name] for cmd in ("run", "sweep") for name in ("pruning", "slim-head", "quantization")]])
def test_every_help_page_renders(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0 and "usage: compress" in capsys.readouterr().out


def test_run_help_shows_each_compressors_own_finetune_budget(capsys: pytest.CaptureFixture[str]) -> None:
    for name, epochs in (("pruning", 6), ("slim-head", 3)):
        with pytest.raises(SystemExit):
            main(["run", name, "--help"])
        assert f"training epochs (default {epochs})" in capsys.readouterr().out


def test_list_names_each_compressor(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()]
    assert names == sorted(names) == ["depthwise", "distillation", "low-rank", "precision", "pruning", "quantization", "slim-head"]
    assert "classifier" in out and "Hinton" in out


BAD = [
    (["run", "nope"], "invalid choice: 'nope'"),
    (["run", "slim-head", "--data", "/no/such/folder"], "/no/such/folder does not exist"),
    (["run", "slim-head", "--image-size", "16"], "--image-size 16 is too small"),
    (["run", "slim-head", "--epochs", "-1"], "--epochs must be >= 0"),
    (["run", "slim-head", "--batch-size", "0"], "--batch-size must be positive"),
    (["run", "slim-head", "--baseline-epochs", "0"], "--baseline-epochs must be positive"),
    (["baseline", "--epochs", "0"], "--epochs must be positive for the baseline, got 0"),
    (["run", "slim-head", "--epochs", "two"], "invalid int value: 'two'"),
    (["run", "slim-head", "--hidden", "1024,x"], "comma-separated ints"),
    (["baseline", "--dataset", "imagenet"], "unknown --dataset 'imagenet'"),
    (["baseline", "--dataset", "cifar10", "--data-root", "/no/such/root"], "pass --download"),
    (["measure", "--weights", "/no/such.pth"], "/no/such.pth does not exist"),
    (["run", "pruning", "--amount", "1.5"], "--amount must be between 0 and 1 (exclusive), got 1.5"),
    (["run", "pruning", "--amount", "0"], "--amount must be between 0 and 1 (exclusive), got 0.0"),
    (["run", "pruning", "--importance", "taylor"], "invalid choice: 'taylor'"),
    (["sweep", "pruning", "--amount", "0.3,2"], "--amount must be between 0 and 1 (exclusive), got 2.0"),
    (["sweep", "pruning", "--importance", "l1,taylor"], "invalid choice 'taylor': choose from l1, l2, random"),
    (["run", "quantization", "--calibration-size", "5"], "--calibration-size must be at least 32 images, got 5"),
    (["run", "quantization", "--calibration", "kl"], "invalid choice: 'kl'"),
    (["run", "quantization", "--from", "20990101-nope"], "--from 20990101-nope: no stored run of dataset 'digits'"),
    (["run", "slim-head", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["run", "slim-head", "--latency-min-calls", "0"], "latency settings need warmup >= 0 and 1 <= min_calls"),
    (["run", "slim-head", "--latency-batches", "0"], "--latency-batches must be positive batch sizes"),
    (["run", "slim-head", "--latency-budget-s", "-1"], "--latency-budget-s must be >= 0"),
    (["run", "slim-head", "--lr", "0"], "--lr must be positive, got 0.0"),
    (["run", "slim-head", "--weight-decay", "-1"], "--weight-decay must be >= 0, got -1.0"),
    (["run", "slim-head", "--max-samples", "0"], "--max-samples must be positive, got 0"),
    (["run", "slim-head", "--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
    (["run", "distillation", "--temperature", "0"], "--temperature must be positive, got 0.0"),
    (["run", "distillation", "--alpha", "2"], "--alpha must be in [0, 1], got 2.0"),
    (["run", "distillation", "--width", "0"], "--width must be in (0, 1], got 0.0"),
    (["run", "distillation", "--student", "resnet"], "invalid choice: 'resnet'"),
    (["run", "depthwise", "--head", "mlp", "--hidden", "0"], "--hidden widths must be positive, got 0"),
    (["run", "pruning", "--round-to", "0"], "--round-to must be >= 1, got 0"),
    (["run", "all", "--amounts", "0.3,1.5"], "--amount must be between 0 and 1 (exclusive), got 1.5"),
    (["run", "all", "--baseline-epochs", "0"], "--baseline-epochs must be positive, got 0"),
    (["run", "slim-head", "--data", "a-file"], "--data a-file is a file"),  # the tests make a-file in their cwd
    (["run", "slim-head", "--reports-dir", "a-file/reports"], "--reports-dir a-file/reports cannot be"),
    # an empty item of a comma list was dropped: --hidden '' built a head without hidden layers, labelled "default"
    (["run", "slim-head", "--hidden", ""], "expected comma-separated ints, got '': an empty value"),
    (["run", "slim-head", "--hidden", "1024,,256"], "got '1024,,256': an empty item"),
    (["run", "low-rank", "--rank", ","], "an empty item"),
    (["sweep", "pruning", "--amount", "0.3,"], "an empty item"),
    (["run", "slim-head", "--latency-batches", ""], "an empty value"),
    # the speed-up column vanished while the legend said "batch 7"
    (["run", "slim-head", "--latency-batches", "1", "--report-batch", "7"],
     "--report-batch 7: --latency-batches times only batch(es) 1; pass one of them"),
    (["run", "slim-head", "--dataset-name", "../up"], "--dataset-name '../up': use letters, digits"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_nothing_is_stored(tmp_path: Path, argv: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process (fast); the two subprocess tests below show the same holds for a real process."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    try:
        code = main([*argv, "--workdir", str(tmp_path / "runs")])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "results.sqlite").exists()


@pytest.mark.parametrize("argv,message", [BAD[1], BAD[19]], ids=["missing data", "unknown --from run"])
def test_bad_input_in_a_real_process_exits_2_with_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    proc = subprocess.run([sys.executable, "-m", "compress", *argv, "--workdir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "results.sqlite").exists()


def test_from_an_int8_run_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint from the wrong compressor: int8 output cannot be compressed again."""
    from dataclasses import replace

    from tests.helpers import BASE

    Store(tmp_path / "results.sqlite").add(replace(BASE, row_id="20260101-quantization-abc", dataset="digits",
                                                   compressor="quantization", backend="onnxruntime int8",
                                                   model_path=str(tmp_path / "model.int8.onnx")))
    assert main(["run", "pruning", "--from", "20260101-quant", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a quantization run (onnxruntime int8); only fp32 PyTorch runs can be compressed further" in err
    assert not (tmp_path / "baselines").exists()  # refused before a baseline was trained


def test_data_folder_without_images_is_named(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "Early_blight").mkdir(parents=True)
    (tmp_path / "imgs" / "Healthy").mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40)).save(tmp_path / "imgs" / "Healthy" / "1.JPG")
    proc = subprocess.run([sys.executable, "-m", "compress", "baseline", "--data", str(tmp_path / "imgs"),
                           "--workdir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Early_blight hold no readable images" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "compress", "baseline", "--data", str(tmp_path / "empty")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "has no class folders" in proc.stderr


def test_main_leaves_the_callers_sigterm_handler_as_it_found_it(tmp_path: Path) -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    assert main(["report", "--workdir", str(tmp_path)]) == 2  # empty store: an error, after the handler was set
    assert signal.getsignal(signal.SIGTERM) is before


def test_report_asked_for_a_batch_no_row_has_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`report --report-batch 7` when the rows hold batches 1 and 32: one line naming them."""
    from tests.helpers import report_rows as _rows

    store = Store(tmp_path / "results.sqlite")
    for r in _rows():
        store.add(r)
    assert main(["report", "--workdir", str(tmp_path), "--reports-dir", str(tmp_path / "r"), "--report-batch", "7"]) == 2
    err = capsys.readouterr().err
    assert "--report-batch 7: the stored rows of 'synthetic' have only batch(es) 1, 32" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["report", "--workdir", str(tmp_path), "--reports-dir", str(tmp_path / "r"), "--report-batch", "1"]) == 0


def test_ctrl_c_while_starting_is_one_line(tmp_path: Path) -> None:
    """Hostile input: Ctrl-C in the first second (`compress list` while torch imports) printed ~30 lines of
    KeyboardInterrupt. A sitecustomize makes the interrupt arrive exactly there, every time."""
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class Interrupt(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n")
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parents[1]}"}
    for argv in ([sys.executable, "-m", "compress", "list"], [sys.executable, "-c",
                                                             "from compress.__main__ import run; raise SystemExit(run())"]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
        assert proc.returncode == 130 and proc.stderr.strip() == "compress: interrupted while starting; nothing was done"


def test_a_right_to_left_override_in_a_class_name_is_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Hostile input: a class folder named with U+202E was printed raw in the class-count error, so a terminal
    showed the line reordered. Bidi controls are escaped like ESC."""
    from PIL import Image

    from compress.errors import printable

    (tmp_path / "d" / "gnp.\u202eexe").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "d" / "gnp.\u202eexe" / "1.png")
    assert main(["baseline", "--data", str(tmp_path / "d"), "--workdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "gnp.\\u202eexe" in err and "\u202e" not in err
    for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c":
        assert ch not in printable(f"a{ch}b") and printable(f"a{ch}b").startswith("a\\u")


def test_two_folders_with_the_same_name_do_not_share_a_report(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Silent wrong result: a/photos and b/photos in one workdir wrote one photos.md (b's baseline shown, a's rows
    compared with a baseline not in the table). The second is refused before any work, naming the first;
    --dataset-name gives it a name of its own; a first folder that was moved away gives its name up."""
    from tests.photos import photo_folder

    from compress.store.workspace import Workspace

    a = photo_folder(tmp_path / "a" / "photos", per_class=2, side=32)
    b = photo_folder(tmp_path / "b" / "photos", per_class=2, side=32)
    ws = Workspace(tmp_path / "runs")
    ws.claim("photos", f"folder {a.resolve()}")  # what a's first run records
    argv = ["run", "slim-head", "--data", str(b), "--workdir", str(ws.root), *QUICK_LATENCY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"the dataset name 'photos' is already used in {ws.root} by folder {a.resolve()}" in err
    assert "--dataset-name" in err and len(err.strip().splitlines()) == 1
    assert not (ws.root / "baselines").exists()
    assert main(["run", "all", "--dry-run", "--json", "--data", str(b), "--dataset-name", "photos-b",
                 "--workdir", str(ws.root)]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == "photos-b"
    import shutil

    shutil.rmtree(a)  # moved away: the name is free again
    ws.claim("photos", f"folder {b.resolve()}")
    assert json.loads(ws.dataset_record("photos").read_text())["source"] == f"folder {b.resolve()}"


def test_a_setting_that_changes_the_pixels_is_part_of_the_baselines_identity(tmp_path: Path) -> None:
    """Silent wrong result: `--normalization unit` reused ("using cached baseline") a baseline trained on the
    default normalization. The cache key holds the normalization whenever it is not what auto picks for this data
    and model; the keys of default settings are what they were, so existing caches survive."""
    import hashlib

    from compress.data.datasets import DataConfig

    data = str(tmp_path / "photos")
    old = DataConfig(data=data)  # the key before normalization was part of it (the formula, spelled out)
    raw = f"folder:{Path(data).resolve()}|224|0|0.2|0.1|None"
    assert old.key() == f"photos-224px-s0-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"
    assert DataConfig().key() == "digits-32px-s0-" + hashlib.sha256(b"digits|32|0|0.2|0.1|None").hexdigest()[:8]
    assert DataConfig(data=data, normalization="imagenet").key() == old.key()  # explicit default: the same pixels
    assert DataConfig(data=data, normalization="unit").key() != old.key()
    assert DataConfig(normalization="half").key() == DataConfig().key() != DataConfig(normalization="raw").key()
    keras = DataConfig(data=data, model_expects="raw")  # a Keras file's own input: auto follows it, key unchanged
    assert keras.normalization == "raw" and keras.key() == old.key()
    assert DataConfig(data=data, model_expects="raw", normalization="unit").key() != old.key()
    assert DataConfig(data=data).record() == {k: v for k, v in __import__("dataclasses").asdict(old).items()
                                              if k not in ("model_expects", "dataset_name")}


def test_a_class_missing_from_a_part_of_the_split_is_in_the_stored_row(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The gap warning (exit 0) is also in the row, so the report says it: `minor`'s two images give one training
    and one test image, none for validation."""
    from dataclasses import replace

    from compress.models import checkpoints, vgg
    from tests.photos import photo_folder
    from tests.helpers import NARROW

    data = photo_folder(tmp_path / "photos", classes=("major", "minor"), per_class=30, side=32)
    for extra in sorted((data / "minor").iterdir())[2:]:
        extra.unlink()
    spec = replace(NARROW, num_classes=2)
    checkpoints.save_checkpoint(vgg.build(spec), spec, tmp_path / "w.pt", extra={"image_size": 32})
    assert main(["measure", "--weights", str(tmp_path / "w.pt"), "--data", str(data), "--image-size", "32",
                 "--store", "--json", "--workdir", str(tmp_path / "runs"), *QUICK_LATENCY]) == 0
    out, err = capsys.readouterr()
    row = json.loads(out)[0]
    assert row["test_images"] == 7  # 6 of major, 1 of minor
    assert "warning: 1 class(es) have no validation image (minor)" in err
    assert any("have no validation image (minor)" in c for c in row["caveats"])


def test_every_entry_of_the_workdir_is_one_workspace_names(slim_run: tuple[int, list[dict]], workspace: Path) -> None:
    """After a run, a sensitivity scan and a search, everything in the workdir is a path a Workspace method names:
    the start-up clean-up derives what it owns from the same methods, so nothing it may clean is named by hand."""
    from compress import compressors
    from compress.store.workspace import BASELINE_RUNS, RESERVED, Workspace

    where = ["--workdir", str(workspace / "runs"), "--reports-dir", str(workspace / "reports")]
    assert main(["sensitivity", "pruning", "--amounts", "0.5", *where, *QUICK_DATA]) == 0
    assert main(["search", "--objective", "macs", "--budget-min", "0.01", *where, *QUICK_DATA, *QUICK_LATENCY]) == 0
    ws = Workspace(workspace / "runs")
    store = ws.store.path
    named = {store, store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm"), ws.temp,
             ws.split_path("x").parent, ws.baseline_dir("x", "y").parent}
    assert {p.name for p in named if p.name in RESERVED} == set(RESERVED)  # the names a dataset may not take
    for entry in ws.root.iterdir():
        if entry in named:
            continue
        name = entry.name
        kinds = [*compressors.names(), BASELINE_RUNS]
        known = {ws.compressor_dir(name, c) for c in kinds} | set(ws.dataset_entries(name))
        stray = [p for p in entry.iterdir() if p not in known]
        assert entry == ws.dataset_dir(name) and not stray, f"not named by Workspace: {stray or entry}"
    folders, runs = ws.own_folders(compressors.names())
    assert ws.sensitivity_dir("digits") in folders and ws.search_dir("digits") in folders
    assert all(r.parent.parent == ws.dataset_dir("digits") or r.parent == ws.baseline_dir("x", "y").parent
               for r in runs) and len(runs) >= 2
    assert {p.name for p in ws.split_path("x").parent.iterdir()} and all(
        p.suffix == ".json" for p in ws.split_path("x").parent.iterdir())
