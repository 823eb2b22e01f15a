"""Faults: a killed writer corrupts nothing, training resumes exactly, memory errors read as one line."""

from __future__ import annotations

import copy
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compress.cli.main import main
from compress.experiments import pipeline
from compress.models import checkpoints, vgg
from compress.reporting import markdown
from compress.store.sqlite import Store
from compress.store.workspace import Workspace
from compress.training.config import TrainConfig
from compress.training.loop import FitOptions, fit

WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from compress.store.atomic import write_json
    from compress.cli.faults import one_line_errors, terminate_as_interrupt
    from compress.store.sqlite import Store
    from tests.helpers import store_row as _row
    store, out = Store(Path(sys.argv[1])), Path(sys.argv[2])
    real_fsync, writes = os.fsync, []

    def fsync_then_hang(fd):  # the fault-injection point: temp file written, not yet renamed over row.json
        real_fsync(fd)
        writes.append(fd)
        if len(writes) == 3:
            print("inside the third write", flush=True)
            time.sleep(120)  # the signal lands here, every time

    os.fsync = fsync_then_hang
    terminate_as_interrupt()  # what the CLI does: SIGTERM unwinds like Ctrl-C
    with one_line_errors() as outcome:
        for i in range(10):
            store.add(_row(i, 0))
            write_json(out / "row.json", {"payload": "x" * 2_000_000, "i": i})
    sys.exit(outcome.code)
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_a_writer_mid_write_leaves_store_and_files_intact(tmp_path: Path, sig: int) -> None:
    db, out = tmp_path / "results.sqlite", tmp_path / "run"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout is not None and proc.stdout.readline().strip() == "inside the third write"
    temps = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1  # the kill really lands inside atomic_open: a whole temp file, not yet renamed
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    rows = Store(db).rows()
    assert [r.row_id for r in rows] == ["w0-0", "w0-1", "w0-2"]  # every row added before the kill, no more
    saved = json.loads((out / "row.json").read_text())
    assert saved["i"] == 1 and len(saved["payload"]) == 2_000_000  # the last complete write, whole
    leftovers = sorted(p.name for p in out.iterdir() if p.name != "row.json")
    if sig == signal.SIGTERM:  # the CLI's own path: unwinds, removes its temp file, says one line, exits 130
        assert proc.returncode == 130 and leftovers == []
        assert err.strip().splitlines() == ["compress: interrupted; stored results are intact (an interrupted "
                                            "training continues with --resume)"]
    else:  # nothing runs after SIGKILL: the temp file stays beside a whole row.json, never in its place
        assert proc.returncode == -signal.SIGKILL and leftovers == temps
    assert markdown.render("digits", rows).startswith("# compress report: digits")


def _tiny_training() -> tuple[torch.nn.Module, DataLoader, DataLoader]:
    torch.manual_seed(3)  # data and weights on which epoch 2 is the best of 3 (the shuffling is the sampler's)
    spec = vgg.ModelSpec(num_classes=3, conv_widths=(4,) * 13, head="gap", hidden=(), dropout=0.5)
    data = TensorDataset(torch.randn(24, 3, 32, 32), torch.randint(0, 3, (24,)))
    gen = torch.Generator().manual_seed(0)
    return vgg.build(spec), DataLoader(data, batch_size=8, shuffle=True, generator=gen), DataLoader(data,
                                                                                                       batch_size=8)


def test_resumed_training_ends_exactly_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=3, lr=2e-2)  # on this data epoch 2 is the best and epoch 3 is worse
    model, train, val = _tiny_training()
    whole = fit(model, train, val, cfg, torch.device("cpu"))
    expected = copy.deepcopy(model.state_dict())
    assert whole.best_epoch == 2  # not the last: "restores the best epoch" is really exercised

    ckpt = tmp_path / "resume.pt"
    _interrupt_in_epoch(3, cfg, ckpt)  # dies in epoch 3: the best (epoch 2) is on disk only
    assert ckpt.exists() and ckpt.with_suffix(".best.pt").exists()

    model, train, val = _tiny_training()  # a fresh process would start from scratch like this
    result = fit(model, train, val, cfg, torch.device("cpu"), FitOptions(checkpoint=ckpt, resume=True))
    assert result.best_epoch == 2 and result.history == whole.history
    assert not ckpt.exists() and not ckpt.with_suffix(".best.pt").exists()
    for k, v in expected.items():
        assert torch.equal(v, model.state_dict()[k]), k


def _interrupt_in_epoch(epoch: int, cfg: TrainConfig, ckpt: Path) -> None:
    model, train, val = _tiny_training()
    calls = {"n": 0}

    def dies(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == (epoch - 1) * len(train) + 1:  # the first batch of `epoch`
            raise KeyboardInterrupt
        return torch.nn.functional.cross_entropy(logits, y)

    with pytest.raises(KeyboardInterrupt):
        fit(model, train, val, cfg, torch.device("cpu"), FitOptions(loss_fn=dies, checkpoint=ckpt))


def test_resume_refuses_a_checkpoint_written_with_other_settings(tmp_path: Path) -> None:
    from compress.errors import CompressError

    ckpt = tmp_path / "resume.pt"
    _interrupt_in_epoch(2, TrainConfig(epochs=3), ckpt)
    model, train, val = _tiny_training()
    with pytest.raises(CompressError, match="resume with the same flags, or delete it"):
        fit(model, train, val, TrainConfig(epochs=5), torch.device("cpu"), FitOptions(checkpoint=ckpt, resume=True))


def test_an_interrupted_run_is_found_by_its_configuration(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    config = {"compressor": {"amount": 0.3, "hidden": (1, 2)}, "arch": "vgg16"}
    for name, cfg, ckpt, done in (("20260101-a", config, True, False), ("20260102-b", {"other": 1}, True, False),
                                  ("20260103-c", config, True, True), ("20260104-d", config, False, False)):
        d = tmp_path / "digits" / "pruning" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"command": "x", **cfg}))
        if ckpt:
            (d / "resume.pt").write_bytes(b"")
        if done:
            (d / "row.json").write_text("{}")
    assert pipeline.interrupted_run(ws, "digits", "pruning", config) == tmp_path / "digits" / "pruning" / "20260101-a"
    assert pipeline.interrupted_run(ws, "digits", "pruning", {"nothing": 0}) is None


def test_out_of_memory_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def boom(*args: object, **kw: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(pipeline, "run_with_control", boom)
    code = main(["run", "slim-head", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "ran out of memory" in err and "--batch-size" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_a_missing_gpu_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", "slim-head", "--device", "cuda", "--workdir", str(tmp_path)]) == 2
    assert "no CUDA device is available here: use --device cpu" in capsys.readouterr().err


def test_resume_through_the_cli_ends_where_an_uninterrupted_run_does(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C in epoch 2 of `run slim-head`, then `--resume`: the same weights as a run never interrupted."""
    from compress.training import loop
    from tests.conftest import QUICK_DATA, QUICK_LATENCY
    from tests.helpers import NARROW

    weights = tmp_path / "narrow.pt"  # your own (small) checkpoint as the baseline: no baseline training
    checkpoints.save_checkpoint(vgg.build(NARROW), NARROW, weights, extra={"image_size": 32})
    common = ["run", "slim-head", "--baseline-weights", str(weights), "--epochs", "3", "--batch-size", "16",
              "--hidden", "32,16", "--json", *QUICK_DATA, *QUICK_LATENCY]

    def run(ws: str, *extra: str) -> tuple[int, str]:
        code = main([*common, "--workdir", str(tmp_path / ws), "--reports-dir", str(tmp_path / ws / "r"), *extra])
        return code, capsys.readouterr().out

    code, out = run("whole")
    assert code == 0
    whole = json.loads(out)[1]
    real, calls = loop._train_epoch, {"n": 0}

    def ctrl_c_in_epoch_two(*args: object, **kw: object) -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "_train_epoch", ctrl_c_in_epoch_two)
    assert run("cut")[0] == 130
    monkeypatch.setattr(loop, "_train_epoch", real)
    pending = list((tmp_path / "cut" / "digits" / "slim-head").glob("*/resume.pt"))
    assert len(pending) == 1
    code, out = run("cut", "--resume")
    assert code == 0
    resumed = json.loads(out)[1]
    assert resumed["row_id"] == pending[0].parent.name and not pending[0].exists()  # the interrupted run, finished
    assert resumed["best_epoch"] == whole["best_epoch"] and resumed["accuracy"] == whole["accuracy"]
    a, b = (checkpoints.load_model(Path(r["model_path"])).model.state_dict() for r in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
