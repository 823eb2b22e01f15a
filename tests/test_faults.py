"""Faults: a killed writer corrupts nothing, training resumes exactly, memory errors read as one line."""

from __future__ import annotations

import copy
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compress import models, pipeline, report
from compress.session import Workspace
from compress.cli import main
from compress.results import Store
from compress.train import TrainConfig, fit

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from compress.atomic import write_json
    from tests.test_store import _row
    from compress.results import Store
    store, out = Store(Path(sys.argv[1])), Path(sys.argv[2])
    blob = {"payload": "x" * 2_000_000}  # big enough that a kill often lands mid-write
    i = 0
    while True:
        store.add(_row(i, 0))
        write_json(out / "row.json", {**blob, "i": i})
        i += 1
        if i == 3:
            print("writing", flush=True)
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_a_writer_mid_write_leaves_store_and_files_intact(tmp_path: Path, sig: int) -> None:
    db, out = tmp_path / "results.sqlite", tmp_path / "run"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(out)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    time.sleep(0.7)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    rows = Store(db).rows()
    assert len(rows) >= 3 and [r.row_id for r in rows] == [f"w0-{i}" for i in range(len(rows))]  # no gaps
    assert len(json.loads((out / "row.json").read_text())["payload"]) == 2_000_000  # whole, never half
    leftovers = [p.name for p in out.iterdir() if p.name != "row.json"]
    assert all(n.startswith(".row.json.") and n.endswith(".tmp") for n in leftovers)  # at most a temp file
    assert report.render("digits", rows).startswith("# compress report: digits")


def _tiny_training() -> tuple[torch.nn.Module, DataLoader, DataLoader]:
    torch.manual_seed(0)
    spec = models.ModelSpec(num_classes=3, conv_widths=(4,) * 13, head="gap", hidden=(), dropout=0.5)
    data = TensorDataset(torch.randn(24, 3, 32, 32), torch.randint(0, 3, (24,)))
    gen = torch.Generator().manual_seed(0)
    return models.build(spec), DataLoader(data, batch_size=8, shuffle=True, generator=gen), DataLoader(data,
                                                                                                       batch_size=8)


def test_resumed_training_ends_exactly_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=3, lr=1e-3)
    model, train, val = _tiny_training()
    fit(model, train, val, cfg, torch.device("cpu"))
    expected = copy.deepcopy(model.state_dict())

    ckpt = tmp_path / "resume.pt"
    _interrupt_in_epoch_two(cfg, ckpt)  # dies on the first batch of epoch 2: epoch 1's checkpoint is on disk
    assert ckpt.exists() and ckpt.with_suffix(".best.pt").exists()

    model, train, val = _tiny_training()  # a fresh process would start from scratch like this
    result = fit(model, train, val, cfg, torch.device("cpu"), checkpoint=ckpt, resume=True)
    assert len(result.history) == 3 and not ckpt.exists() and not ckpt.with_suffix(".best.pt").exists()
    for k, v in expected.items():
        assert torch.equal(v, model.state_dict()[k]), k


def _interrupt_in_epoch_two(cfg: TrainConfig, ckpt: Path) -> None:
    model, train, val = _tiny_training()
    calls = {"n": 0}

    def dies(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == len(train) + 1:
            raise KeyboardInterrupt
        return torch.nn.functional.cross_entropy(logits, y)

    with pytest.raises(KeyboardInterrupt):
        fit(model, train, val, cfg, torch.device("cpu"), loss_fn=dies, checkpoint=ckpt)


def test_resume_refuses_a_checkpoint_written_with_other_settings(tmp_path: Path) -> None:
    from compress.errors import CompressError

    ckpt = tmp_path / "resume.pt"
    _interrupt_in_epoch_two(TrainConfig(epochs=3), ckpt)
    model, train, val = _tiny_training()
    with pytest.raises(CompressError, match="resume with the same flags, or delete it"):
        fit(model, train, val, TrainConfig(epochs=5), torch.device("cpu"), checkpoint=ckpt, resume=True)


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
