"""Hostile input, round two: one line and a non-zero exit for each class of problem, nothing stored or
written where it does not belong. Each test names the class it covers."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import time
from pathlib import Path

import pytest
import torch

from compress.cli.faults import one_line_errors
from compress.models import checkpoints, vgg
from compress.store.sqlite import Store
from tests.conftest import QUICK_DATA, QUICK_LATENCY
from tests.photos import photo_folder
from tests.helpers import NARROW
from tests.helpers import cli as _cli
from tests.helpers import narrow as _narrow
from tests.helpers import one_line as _one_line

HOSTILE_CASES = 0  # counted below, stated in the README's fault section


NUMBERS = [
    (["run", "slim-head", "--lr", "nan"], "'nan' is not a finite number"),
    (["run", "slim-head", "--lr", "inf"], "'inf' is not a finite number"),
    (["run", "slim-head", "--lr", "1e9"], "--lr must be at most 10, got 1000000000.0"),
    (["baseline", "--seed", "-1"], "--seed must be between 0 and 4294967295"),
    (["baseline", "--seed", str(2**32)], "--seed must be between 0 and 4294967295"),
    (["run", "slim-head", "--image-size", "100000"], "--image-size 100000 is too large"),
    (["run", "slim-head", "--epochs", "100000000"], "--epochs must be at most 10000"),
    (["run", "slim-head", "--batch-size", "100000000"], "--batch-size must be at most 65536"),
    (["run", "slim-head", "--latency-budget-s", "inf"], "'inf' is not a finite number"),
    (["run", "slim-head", "--latency-batches", "1,100000000"], "--latency-batches must be at most 65536"),
    (["run", "slim-head", "--threads", "100000"], "--threads must be at most 1024"),
    (["run", "pruning", "--amount", "nan"], "'nan' is not a finite number"),
    (["sweep", "pruning", "--amount", "0.3,nan"], "comma-separated floats (finite numbers)"),
    (["run", "distillation", "--temperature", "inf"], "'inf' is not a finite number"),
    (["run", "all", "--amounts", "0.3,inf"], "comma-separated floats (finite numbers)"),
]
HOSTILE_CASES += len(NUMBERS)


@pytest.mark.parametrize("argv,match", NUMBERS, ids=[" ".join(a) for a, _ in NUMBERS])
def test_numbers_out_of_range_are_refused_before_any_work(argv: list[str], match: str, tmp_path: Path) -> None:
    code, _, err = _cli([*argv, "--workdir", str(tmp_path / "runs")])
    _one_line(code, err, match)
    assert not (tmp_path / "runs" / "baselines").exists()


def test_training_that_diverges_stops_and_caches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-finite training: a loss of NaN stops the run; no NaN baseline is cached or measured."""
    from compress.training import loop

    class Diverges(torch.nn.CrossEntropyLoss):
        def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return super().forward(logits, y) * float("nan")

    monkeypatch.setattr(loop.nn, "CrossEntropyLoss", Diverges)
    code, _, err = _cli(["baseline", "--epochs", "1", "--workdir", str(tmp_path / "runs"), *QUICK_DATA,
                         *QUICK_LATENCY, "--batch-size", "16"])
    _one_line(code, err, "the training loss became nan at batch 1: training diverged and nothing was saved")
    assert not list((tmp_path / "runs").rglob("meta.json")) and not list((tmp_path / "runs").rglob("model.pt"))
    assert not (tmp_path / "runs" / "results.sqlite").exists()


SPECS = [
    ({"arch": "vgg16", "bogus": 1}, "unknown field(s) bogus"),
    ({"arch": "vgg16", "num_classes": "ten"}, "num_classes='ten', which no model can have"),
    ({"arch": "vgg16", "conv_widths": [10**9] * 13}, "expected a list of whole numbers from 1 to 65536"),
    ({"arch": "resnet", "num_classes": 3}, "arch='resnet'"),
    ([1, 2, 3], "is a list, not a mapping"),
    (None, "is a NoneType, not a mapping"),
]
HOSTILE_CASES += len(SPECS) + 1


@pytest.mark.parametrize("spec,match", SPECS, ids=[str(m) for _, m in SPECS])
def test_damaged_specs_are_one_line(spec: object, match: str, tmp_path: Path) -> None:
    path = tmp_path / "damaged.pt"
    torch.save({"format": checkpoints.CHECKPOINT_FORMAT, "spec": spec, "state_dict": {}}, path)
    code, _, err = _cli(["measure", "--weights", str(path), "--workdir", str(tmp_path / "runs"), *QUICK_LATENCY])
    _one_line(code, err, match)


def test_a_checkpoint_without_its_spec_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nospec.pt"
    torch.save({"format": checkpoints.CHECKPOINT_FORMAT, "state_dict": {}}, path)
    code, _, err = _cli(["measure", "--weights", str(path), "--workdir", str(tmp_path / "runs")])
    _one_line(code, err, "says it is a compress checkpoint but has no spec")


HOSTILE_CASES += 1


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    model = vgg.build(NARROW)
    with torch.no_grad():
        model.features[0].weight[0, 0, 0, 0] = float("nan")
    checkpoints.save_checkpoint(model, NARROW, tmp_path / "nan.pt")
    code, _, err = _cli(["measure", "--weights", str(tmp_path / "nan.pt"), "--store", "--dataset", "digits",
                         "--workdir", str(tmp_path / "runs"), *QUICK_DATA, *QUICK_LATENCY])
    _one_line(code, err, "holds non-finite weights (NaN or infinity) in 1 tensor(s), first features.0.weight")
    assert not (tmp_path / "runs" / "results.sqlite").exists()


HOSTILE_CASES += 1


def test_a_folder_with_one_class_is_refused(tmp_path: Path) -> None:
    data = photo_folder(tmp_path / "OnePlant", classes=("healthy",), per_class=4)
    (data / ".hidden").mkdir()
    code, _, err = _cli(["run", "slim-head", "--data", str(data), "--workdir", str(tmp_path / "runs")])
    _one_line(code, err, "has 1 class folder (healthy): a classifier needs at least two")
    assert "(hidden folders ignored: .hidden)" in err


HOSTILE_CASES += 1


def test_a_stored_dataset_name_cannot_write_outside_the_reports_folder(tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.helpers import BASE

    Store(tmp_path / "runs" / "results.sqlite").add(replace(BASE, dataset="../../escaped", command="x `rm -rf` y"))
    reports = tmp_path / "deep" / "reports"
    code, _, err = _cli(["report", "--workdir", str(tmp_path / "runs"), "--reports-dir", str(reports)])
    assert code == 0, err
    assert sorted(p.name for p in reports.iterdir() if p.suffix == ".md") == ["escaped.md"]
    assert not (tmp_path / "escaped.md").exists() and not (tmp_path / "deep" / "escaped.md").exists()
    text = (reports / "escaped.md").read_text()
    assert "# compress report: ../../escaped" in text
    assert "``x `rm -rf` y``" in text  # a longer fence: the backticks inside stay literal


HOSTILE_CASES += 1


def test_a_damaged_row_is_named_and_skipped_not_a_traceback(tmp_path: Path) -> None:
    import sqlite3

    from tests.helpers import BASE

    store = Store(tmp_path / "runs" / "results.sqlite")
    store.add(BASE)
    con = sqlite3.connect(store.path)
    with con:
        con.execute("INSERT INTO rows VALUES ('broken-row', 'synthetic', 'x', 'now', '{not json')")
    con.close()
    code, _, err = _cli(["report", "--workdir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "r")])
    assert code == 0 and "skipped 1 damaged row(s)" in err and "broken-row" in err
    assert (tmp_path / "r" / "synthetic.md").exists()


HOSTILE_CASES += 1


def test_a_corrupt_store_is_found_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "results.sqlite").write_bytes(b"this is not a database" * 100)
    code, _, err = _cli(["run", "slim-head", "--workdir", str(tmp_path / "runs"), *QUICK_DATA])
    _one_line(code, err, "is damaged (file is not a database): move it aside")
    assert not (tmp_path / "runs" / "baselines").exists() and not (tmp_path / "runs" / "splits").exists()


HOSTILE_CASES += 1


def test_an_interrupt_or_full_disk_inside_a_save_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted writes and a full disk reach us wrapped (torch.save re-raises as RuntimeError)."""
    def wrapped_interrupt() -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("PytorchStreamWriter failed writing file") from exc

    err = io.StringIO()
    with contextlib.redirect_stderr(err), one_line_errors() as outcome:
        wrapped_interrupt()
    assert outcome.code == 130 and err.getvalue().startswith("compress: interrupted")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    weights = _narrow(tmp_path / "narrow.pt")
    monkeypatch.setattr(os, "fsync", full)
    code, _, err2 = _cli(["run", "slim-head", "--baseline-weights", str(weights), "--epochs", "0",
                          "--workdir", str(tmp_path / "runs"), *QUICK_DATA, *QUICK_LATENCY])
    _one_line(code, err2, "no space left on the disk writing")
    assert not list((tmp_path / "runs").rglob("*.tmp"))  # nothing half-written left behind


HOSTILE_CASES += 2


def test_leftovers_of_killed_runs_are_cleaned_at_start_but_never_a_live_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    folder = runs / "digits" / "pruning" / "20260101-x"
    folder.mkdir(parents=True)
    dead = folder / ".model.pt.999999999.abc123.tmp"
    dead.write_bytes(b"x" * 1_000_000)
    live = folder / f".row.json.{os.getppid()}.def456.tmp"  # our parent is alive: a live writer's file
    live.write_bytes(b"y")
    orphan = folder / "resume.best.pt"  # a 1-epoch run killed mid-epoch: no resume.pt, its owner is gone
    orphan.write_bytes(b"z" * 500_000)
    (folder / "resume.owner").write_text("999999999")
    busy = runs / "digits" / "pruning" / "20260101-y" / "resume.best.pt"  # a live training's (the test's parent)
    busy.parent.mkdir(parents=True)
    busy.write_bytes(b"w")
    (busy.parent / "resume.owner").write_text(str(os.getppid()))
    old = time.time() - 3600
    os.utime(busy, (old, old))
    code, _, err = _cli(["measure", "--weights", str(_narrow(tmp_path / "n.pt")), "--workdir", str(runs),
                         *QUICK_LATENCY])
    assert code == 0, err
    assert "cleaned 2 leftover file(s) of interrupted runs" in err and "(1.5 MB freed)" in err
    assert not dead.exists() and not orphan.exists() and live.exists() and busy.exists()


HOSTILE_CASES += 1


def test_an_error_caused_by_compress_home_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("COMPRESS_HOME", str(blocker / "runs"))
    code, _, err = _cli(["run", "slim-head", "--reports-dir", str(tmp_path / "r")])
    _one_line(code, err, f"$COMPRESS_HOME {blocker / 'runs'} cannot be created")


HOSTILE_CASES += 1


def test_the_count_of_hostile_cases_is_what_the_readme_says() -> None:
    readme = (Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text()  # the manual's page
    assert f"{HOSTILE_CASES} hostile cases in tests/test_hostile.py" in readme
