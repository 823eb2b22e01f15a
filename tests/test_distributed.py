"""torchrun on this CPU (gloo, 2 processes): the training is the same training, the rows are the
same rows, an error anywhere ends every process. Tiny models and data: seconds per launch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from compress.store.sqlite import Store
from tests.conftest import QUICK_CLI

WORKER = Path(__file__).with_name("dist_worker.py")
REPO = Path(__file__).resolve().parents[1]


def torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc-per-node N ...` as a user types it (the module's torchrun, this Python)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_processes_train_like_one_on_the_same_global_batch_and_repeat_bit_for_bit(tmp_path: Path) -> None:
    for name in ("a", "b"):
        done = torchrun(str(WORKER), str(tmp_path / f"{name}.pt"))
        assert done.returncode == 0, done.stderr[-2000:]
    single = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "one.pt")], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert single.returncode == 0, single.stderr[-2000:]
    a, b, one = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("a", "b", "one"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # two identical 2-process runs: the same bits
    for k in a:  # the gradient average is right: 2 x 8 images = 1 x 16 images, within float rounding
        torch.testing.assert_close(a[k], one[k], rtol=1e-5, atol=1e-6)
    assert (a["0.weight"] - _initial()["0.weight"]).abs().max() > 1e-3  # and training did change the weights


def _initial() -> dict[str, torch.Tensor]:
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).state_dict()


def test_an_error_on_rank_1_ends_both_processes_with_one_line(tmp_path: Path) -> None:
    start = time.perf_counter()
    done = torchrun(str(WORKER), str(tmp_path / "x.pt"), "fail", timeout=120)
    took = time.perf_counter() - start
    assert done.returncode != 0 and took < 60
    ours = [line for line in done.stderr.splitlines() if line.startswith("compress")]
    assert "compress [rank 1/2]: error: rank 1 failed on purpose" in ours
    assert len(ours) == 2 and "[rank 0/2]" in ours[1 - ours.index("compress [rank 1/2]: error: rank 1 failed on "
                                                                  "purpose")]
    assert "[rank0]: Traceback" not in done.stderr and "[rank1]: Traceback" not in done.stderr
    assert not (tmp_path / "x.pt").exists()


def test_batchnorm_trains_over_the_global_batch_so_2_processes_equal_1(tmp_path: Path) -> None:
    """BatchNorm, no dropout, 4 global batches per epoch, validation on: 2 processes end where 1 does, running
    statistics included (without GlobalBatchNorm each rank normalised its 4 images alone, and the 1-process run
    shuffled with another sampler: both made N matter)."""
    done = torchrun(str(WORKER), str(tmp_path / "two.pt"), "bn")
    assert done.returncode == 0, done.stderr[-2000:]
    single = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "one.pt"), "bn"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert single.returncode == 0, single.stderr[-2000:]
    two, one = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("two", "one"))
    assert "1.running_mean" in two and int(two["1.num_batches_tracked"]) == int(one["1.num_batches_tracked"]) > 0
    for k in one:
        torch.testing.assert_close(two[k].float(), one[k].float(), rtol=1e-4, atol=1e-5)
    assert (one["1.running_var"] - 1).abs().max() > 0.1  # the statistics did move from their start


def test_a_nan_on_rank_1_only_ends_every_rank_at_the_same_step_whatever_the_launcher(tmp_path: Path) -> None:
    """Two processes started by hand (no torchrun to kill the survivor): the ranks agree the loss is not finite
    and both stop with one line within seconds, rank 0 naming the other rank."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(29500 + os.getpid() % 1000), "WORLD_SIZE": "2"}
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "x.pt"), "nan"], text=True,
                              stderr=subprocess.PIPE, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
             for r in (0, 1)]
    errs = [p.communicate(timeout=90)[1] for p in procs]
    assert all(p.returncode == 2 for p in procs) and time.perf_counter() - start < 60, errs
    assert "became nan at batch 1" in errs[1] and "became non-finite on another rank at batch 1" in errs[0]
    assert not (tmp_path / "x.pt").exists()


def test_resume_under_torchrun_ends_with_the_bits_of_an_uninterrupted_run(tmp_path: Path) -> None:
    (tmp_path / "whole").mkdir(), (tmp_path / "cut").mkdir()
    assert torchrun(str(WORKER), str(tmp_path / "whole" / "w.pt"), "whole").returncode == 0
    cut = torchrun(str(WORKER), str(tmp_path / "cut" / "w.pt"), "cut")
    assert cut.returncode != 0 and (tmp_path / "cut" / "resume.pt").exists() and not (tmp_path / "cut" / "w.pt").exists()
    done = torchrun(str(WORKER), str(tmp_path / "cut" / "w.pt"), "resume")
    assert done.returncode == 0 and "resuming after epoch 1/3" in done.stderr
    whole, resumed = (torch.load(tmp_path / d / "w.pt", weights_only=True) for d in ("whole", "cut"))
    for k in whole:  # not always bit for bit: the resumed epoch starts a fresh DDP reducer; within float rounding
        torch.testing.assert_close(resumed[k], whole[k], rtol=1e-5, atol=1e-6)
    assert (whole["0.weight"] - _initial()["0.weight"]).abs().max() > 1e-3  # three steps did move the weights
    assert not (tmp_path / "cut" / "resume.pt").exists()  # finished: nothing left to resume


def test_torchrun_run_pruning_stores_exactly_the_rows_of_a_single_process_run(tmp_path: Path) -> None:
    quick = [*QUICK_CLI, "--max-samples", "48", "--latency-batches", "1"]
    done = torchrun("-m", "compress", "run", "pruning", "--amount", "0.3", "--epochs", "1", "--baseline-epochs", "1",
                    "--workdir", str(tmp_path / "ddp"), "--reports-dir", str(tmp_path / "reports"), "--json", *quick)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = Store(tmp_path / "ddp" / "results.sqlite").rows()
    assert sorted(r.compressor for r in rows) == ["baseline", "pruning"]  # no duplicates from rank 1, none missing
    pruned = next(r for r in rows if r.compressor == "pruning")
    assert pruned.distributed == {"world_size": 2, "backend": "gloo", "per_rank_batch": 8}
    assert pruned.finetune_epochs == 1 and pruned.accuracy is not None
    run_dir = Path(pruned.model_path).parent
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "model.pt", "predictions.npy", "row.json"]
    assert len(list((tmp_path / "ddp").rglob("*.pt"))) == 2  # the baseline and the pruned model; no resume files
    report = (tmp_path / "reports" / "digits.md").read_text()
    assert "| pruning" in report and "amount=0.3" in report
    assert done.stdout.count('"row_id"') == 2  # rank 0 alone printed the rows

    # (that a 1-process run of the same command stores rows of the same configuration hashes follows from
    # `distributed` being kept out of the config; tests/test_cli.py checks the 1-process rows themselves)
    assert all("distributed" not in r.config for r in rows)


def test_sweep_shards_collected_equal_the_whole_grid_and_collecting_twice_adds_nothing(tmp_path: Path) -> None:
    from compress import compressors
    from compress.cli.main import main

    quick = [*QUICK_CLI, "--max-samples", "48", "--latency-batches", "1"]
    base = tmp_path / "base"
    assert main(["baseline", "--epochs", "1", "--workdir", str(base), "--reports-dir", str(tmp_path / "r"), *quick]) == 0
    grid = ["--amount", "0.1,0.2,0.3", "--importance", "l1", "--epochs", "0"]
    for k in (1, 2):  # one array task each: its own workdir, the baseline copied in (trained once)
        shutil.copytree(base, tmp_path / f"w{k}", ignore=shutil.ignore_patterns("results.sqlite", "digits"))
        assert main(["sweep", "pruning", *grid, "--shard", f"{k}/2", "--workdir", str(tmp_path / f"w{k}"),
                     "--reports-dir", str(tmp_path / "r"), *quick]) == 0
        got = [r.config["compressor"]["amount"] for r in Store(tmp_path / f"w{k}" / "results.sqlite").rows()
               if r.compressor == "pruning"]
        assert got == [[0.1, 0.3], [0.2]][k - 1]  # point i goes to shard ((i-1) mod 2)+1: interleaved
    merged = tmp_path / "merged"
    shards = [str(tmp_path / f"w{k}") for k in (1, 2)]
    assert main(["collect", *shards, "--workdir", str(merged)]) == 0
    rows = Store(merged / "results.sqlite").rows()
    pruned = [r.config["compressor"] for r in rows if r.compressor == "pruning"]
    assert sorted(c.pop("amount") for c in pruned) == [0.1, 0.2, 0.3]  # each point of the grid once
    default = json.loads(json.dumps(asdict(compressors.get("pruning").config(importance="l1"))))
    default.pop("amount")
    assert all(c == default for c in pruned)
    assert {r.config_hash for r in rows if r.compressor == "baseline"} == \
        {r.config_hash for r in Store(base / "results.sqlite").rows()}  # the one baseline (measured by each shard)
    assert main(["collect", *shards, "--workdir", str(merged)]) == 0
    assert len(Store(merged / "results.sqlite").rows()) == len(rows)  # twice: nothing added
    assert main(["report", "--workdir", str(merged), "--reports-dir", str(tmp_path / "mr")]) == 0
    report = (tmp_path / "mr" / "digits.md").read_text()
    assert all(f"amount={a}" in report for a in (0.1, 0.2, 0.3))

    # a shard whose baseline was trained again (other weights) is refused, with the reason, and nothing else changes
    odd = tmp_path / "odd"
    shutil.copytree(tmp_path / "w1", odd)
    ckpt = next((odd / "baselines").glob("*/model.pt"))
    state = torch.load(ckpt, weights_only=True)
    first = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][first] += 1.0
    torch.save(state, ckpt)
    before = (merged / "results.sqlite").read_bytes()
    assert main(["collect", str(odd), "--workdir", str(merged)]) == 2
    assert (merged / "results.sqlite").read_bytes() == before



def _forge(store: Store, row_id: str, payload: dict) -> None:
    import sqlite3

    with sqlite3.connect(store.path) as con:
        con.execute("INSERT INTO rows VALUES (?, ?, ?, ?, ?)", (row_id, payload["dataset"], payload["compressor"],
                                                                payload["created"], json.dumps(payload)))


def test_collect_refuses_forged_rows_and_names_each(tmp_path: Path) -> None:
    """Hostile input: collect accepted an accuracy edited to 0.99 once the per-image record was emptied (the
    report showed 99.00), 7.5 (750.00) the same way, and a NaN accuracy with its record intact (a comparison with
    NaN is never "greater"); a row without `params` then broke `report` for the merged workdir."""
    from dataclasses import replace

    import numpy as np

    from compress.reporting import markdown
    from compress.scaleout.collect import collect
    from compress.store.rows import encode
    from compress.store.workspace import Workspace
    from tests.helpers import store_row as _row

    shard = tmp_path / "shard"
    model = shard / "m.pt"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    base = replace(_row(0, 0), model_path=str(model), correct=encode(np.array([True, False])), accuracy=0.5,
                   test_images=2)
    good = replace(base, row_id="good", compressor="pruning", baseline_row_id=base.row_id, config_hash="g")
    store = Store(shard / "results.sqlite")
    store.add(base)
    store.add(good)
    forged = {"emptied": {"accuracy": 0.99, "correct": ""}, "none": {"accuracy": 0.99, "correct": None},
              "huge": {"accuracy": 7.5, "correct": None}, "nan": {"accuracy": float("nan")},
              "noparams": {"params": None}, "strparams": {"params": "134M"}}
    for row_id, change in forged.items():
        payload = {**store.payload(replace(good, row_id=row_id, config_hash=row_id)), **change}
        _forge(store, row_id, {k: v for k, v in payload.items() if v is not None or k not in ("params",)})
    merged = Workspace(tmp_path / "merged")
    got = collect(merged, [shard], ["pruning"])
    assert sorted(got.added) == sorted([base.row_id, "good"])
    reasons = "\n".join(got.refused)
    assert len(got.refused) == len(forged), reasons
    assert "emptied refused: its accuracy 99.00% cannot be checked: its per-image record (correct) is empty" in reasons
    assert "none refused: its accuracy 99.00% cannot be checked" in reasons
    assert "huge refused: it cannot be read as a row (accuracy is 7.5, not a fraction from 0 to 1)" in reasons
    assert "nan refused: it cannot be read as a row (accuracy is nan, not a finite number)" in reasons
    assert "noparams refused" in reasons and "strparams refused: it cannot be read as a row (params is str" in reasons
    rows = merged.store.rows()
    assert {r.row_id for r in rows} == {base.row_id, "good"}
    text = (markdown.write_report("digits", rows, tmp_path / "reports")).read_text()
    assert "99.00" not in text and "750.00" not in text
