"""Hostile input, round three: script in the HTML report, a clean-up that deleted files it did not write,
tracebacks and silent nonsense. One test per case; each names the case it covers."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from markdown_it import MarkdownIt

from compress.cli.faults import one_line_errors
from compress.data import image_folders
from compress.data.datasets import DataBundle, DataConfig
from compress.data.split import _split_off, _stratified_subset, make_split
from compress.errors import CompressError, printable
from compress.experiments.baseline import stored_split
from compress.reporting import markdown, terminal
from compress.reporting.webpage import to_html
from compress.scaleout.collect import collect
from compress.sensitivity.scans import parse_per_layer_file
from compress.store.rows import encode
from compress.store.sqlite import Store
from compress.store.workspace import Workspace
from tests.conftest import QUICK_LATENCY
from tests.photos import photo_folder
from tests.helpers import cli as _cli
from tests.helpers import five as _five
from tests.helpers import narrow as _narrow
from tests.helpers import one_line as _one_line
from tests.helpers import tables as _tables

SCRIPT = "r\n\n<script>alert(1)</script>\n\n"
IMG = "/x/<img src=x onerror=alert(2)>|x.json"


def _hostile_rows() -> list:
    rows = _five()
    base = replace(rows[0], command=f"python -m compress run slim-head --data-root '{SCRIPT}'")
    pruned = replace(rows[3], baseline_row_id=base.row_id, command="python -m compress run pruning",
                     config={**rows[3].config, "compressor": {**rows[3].config["compressor"], "amount": 0.5,
                                                              "per_layer": IMG}})
    edited = replace(rows[1], compressor="<img src=x onerror=alert(3)>", baseline_row_id=base.row_id)
    return [base, *rows[1:3], pruned, *rows[4:], edited]


def test_script_and_markup_in_stored_strings_reach_the_html_page_as_text(tmp_path: Path) -> None:
    """Security: a newline-broken code span, an <img onerror> in a setting and an edited compressor name."""
    text = markdown.render("synthetic", _hostile_rows())
    page = to_html(text, tmp_path, "t")
    assert "<script" not in page and "<img src=x" not in page and "onerror=alert(2)" in page  # shown as text
    assert "<details>" in page and "</details>" in page  # the one element the report uses, built in code
    assert "<script" not in to_html("<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n", tmp_path, "t")
    github = MarkdownIt("commonmark", {"html": True}).enable("table")  # as GitHub reads the markdown itself
    raw = [t.content for t in github.parse(text) for t in [t, *(t.children or [])]
           if t.type in ("html_inline", "html_block")]
    assert raw and not any("script" in r or "onerror" in r for r in raw), raw  # only the report's <details>
    for table in _tables(text):  # the `|` of a setting is escaped: it adds no cell, no column shifts
        cells = [len(row) for row in _cells_per_row(github.parse("\n".join(table)))]
        assert len(set(cells)) == 1 and len(cells) == len(table) - 1, table[0]


def _cells_per_row(tokens: list) -> list[list[int]]:
    rows, cur = [], None
    for t in tokens:
        if t.type == "tr_open":
            cur = []
        elif t.type in ("td_open", "th_open") and cur is not None:
            cur.append(1)
        elif t.type == "tr_close" and cur is not None:
            rows.append(cur)
    return rows


def test_escape_sequences_in_names_are_shown_not_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Terminal escapes: a file named to retitle and clear the terminal is printed as escapes."""
    name = "\x1b]2;PWNED\x07\x1b[2J....png"
    assert printable(name) == "\\x1b]2;PWNED\\x07\\x1b[2J....png"
    with one_line_errors() as outcome:
        raise CompressError(f"{name} cannot be read")
    err = capsys.readouterr().err
    assert outcome.code == 2 and "\x1b" not in err and "\\x1b]2;PWNED" in err


def test_rich_markup_in_a_setting_is_text() -> None:
    """Rich markup: `[/x]` in a --per-layer path no longer raises MarkupError, `[bold]` no longer vanishes."""
    rows = _five()
    odd = replace(rows[3], config={**rows[3].config, "compressor": {**rows[3].config["compressor"],
                                                                    "per_layer": "[/x][bold]p.json"}})
    text = terminal.render([rows[0], odd], {rows[0].row_id: rows[0]}, 32, width=200)
    assert "[/x][bold]p.json" in text


def test_the_cleanup_never_touches_files_it_did_not_write(tmp_path: Path) -> None:
    """Data loss: the start-up clean-up walked the whole workdir and deleted a user's files."""
    runs = tmp_path / "runs"
    theirs = [runs / "mydocs" / ".thesis.docx.99999.swp.tmp", runs / "mydocs" / "project" / ".env.4242.bak.tmp",
              runs / "mydocs" / "project" / "resume.best.pt", runs / "digits" / "notes" / ".x.json.99999.ab.tmp"]
    for p in theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"mine")
        old = time.time() - 86400
        os.utime(p, (old, old))
    ours = runs / "digits" / "pruning" / "20260101-x" / ".model.pt.999999999.abc123.tmp"  # a dead writer's
    ours.parent.mkdir(parents=True)
    ours.write_bytes(b"x")
    code, _, err = _cli(["measure", "--weights", str(_narrow(tmp_path / "n.pt")), "--workdir", str(runs),
                         *QUICK_LATENCY])
    assert code == 0, err
    assert all(p.exists() for p in theirs) and not ours.exists()


def test_temporaries_live_in_the_workdir_and_a_killed_runs_are_removed(tmp_path: Path) -> None:
    """Data loss: exports of killed runs filled the system's temp folder, never removed."""
    runs = tmp_path / "runs"
    dead = runs / "tmp" / "compress-reference-999999999-abcd"  # what SIGKILL mid-export leaves
    dead.mkdir(parents=True)
    (dead / "baseline.onnx").write_bytes(b"x" * 1000)
    before = set(Path(tempfile.gettempdir()).glob("compress-*"))
    code, _, err = _cli(["measure", "--weights", str(_narrow(tmp_path / "n.pt")), "--workdir", str(runs),
                         *QUICK_LATENCY, "--dataset", "digits", "--max-samples", "40"])
    assert code == 0, err
    assert not dead.exists() and "cleaned 1 leftover" in err
    assert set(Path(tempfile.gettempdir()).glob("compress-*")) == before  # nothing new outside the workdir
    assert (runs / "tmp").is_dir() and not any((runs / "tmp").iterdir())  # ours, and removed when done


@pytest.mark.parametrize("name", ["results.sqlite", "baselines", "splits"])
def test_a_data_folder_named_like_the_workdirs_own_entries_is_refused(name: str, tmp_path: Path) -> None:
    """Data loss: a dataset folder named results.sqlite took the store's place."""
    data = photo_folder(tmp_path / name, per_class=2, side=32)
    code, _, err = _cli(["run", "slim-head", "--data", str(data), "--workdir", str(tmp_path / "runs")])
    _one_line(code, err, f"the data folder's name '{name}' is one the workdir uses itself")
    assert not (tmp_path / "runs" / "baselines").exists()


def test_a_file_name_that_is_not_utf8_is_read(tmp_path: Path) -> None:
    """Traceback: a file with a non-UTF-8 name (listing.encode() raised)."""
    root = photo_folder(tmp_path / "photos", per_class=2, side=32)
    good = next((root / "healthy").iterdir())
    os.rename(good, os.path.join(os.fsencode(root / "healthy"), b"\xff\xfe.png"))
    classes, samples, fingerprint = image_folders.scan(root, 32, strict=False)
    assert len(samples) == 6 and len(fingerprint) == 16
    assert "\\udcff" in printable(next(p for p, _ in samples if "\udcff" in p))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("content,match", [
    ("[" * 60000 + "]" * 60000, "nested too deeply"),
    ('{"features.0": 0.2, "features.0": 0.9}', "the layer 'features.0' is named twice"),
    ('{"features.0": 1e309}', "amounts must be numbers in (0, 1)"),
])
def test_a_bad_per_layer_file_is_refused_before_any_work(content: str, match: str, tmp_path: Path) -> None:
    """Tracebacks and late checks: deep JSON (RecursionError), a duplicate key (last value won), huge numbers."""
    path = _write(tmp_path / "p.json", content)
    code, _, err = _cli(["run", "pruning", "--per-layer", str(path), "--workdir", str(tmp_path / "runs")])
    _one_line(code, err, match)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # before any work


def test_a_fifo_or_a_missing_per_layer_file_is_refused_at_once(tmp_path: Path) -> None:
    """Checked too late: a FIFO hung until killed; a missing file was found after the baseline was measured."""
    fifo = tmp_path / "p.json"
    os.mkfifo(fifo)
    with pytest.raises(CompressError, match="is not a regular file"):
        parse_per_layer_file(fifo)
    code, _, err = _cli(["run", "pruning", "--per-layer", str(tmp_path / "gone.json"),
                         "--workdir", str(tmp_path / "runs")])
    _one_line(code, err, "gone.json: no such file")


def _bundle(targets: list[int], official_test: bool = False) -> DataBundle:
    ds = list(range(len(targets)))
    return DataBundle("t", ["a", "b"], 32, "fp", ds, ds, np.array(targets), official_test)  # type: ignore[arg-type]


@pytest.mark.parametrize("split,match", [
    ({"train": [0, 1, 999999], "val": [2], "test": [3]}, "holds an index outside"),
    ({"train": [0, 1, 2], "val": [4], "test": [2, 3]}, "both its test part and its train"),
])
def test_an_edited_stored_split_is_refused(split: dict, match: str, tmp_path: Path) -> None:
    """Traceback (index 999999) and silent leakage (test overlapping train) in a stored split."""
    ws, cfg, bundle = Workspace(tmp_path), DataConfig(), _bundle([0, 1] * 5)
    path = ws.split_path(cfg.key())
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"fingerprint": "fp", "classes": ["a", "b"], "split": split}))
    with pytest.raises(CompressError, match=match):
        stored_split(ws, cfg, bundle)


@pytest.mark.parametrize("error,match", [
    (PermissionError(13, "Permission denied", "/runs/digits/pruning/x/row.json"), "cannot write /runs/digits"),
    (FileNotFoundError(2, "No such file or directory", "/photos/a/1.png"), "/photos/a/1.png is gone"),
])
def test_an_unwritable_run_folder_or_vanished_data_is_one_line(error: OSError, match: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Tracebacks: a run folder made immutable (chattr +i), the data folder moved away mid-training."""
    with one_line_errors() as outcome:
        raise error
    err = capsys.readouterr().err.strip().splitlines()
    assert outcome.code == 2 and len(err) == 1 and match in err[0]
    assert "--resume" in err[0] or "writable" in err[0]


def test_test_data_that_is_the_training_data_is_refused(tmp_path: Path) -> None:
    """Silent wrong result: --test-data the same folder as --data lifted the leakage note."""
    data = photo_folder(tmp_path / "photos", per_class=2, side=32)
    for test in (data, data / "healthy"):
        with pytest.raises(CompressError, match="overlap"):
            DataConfig(data=str(data), test_data=str(test))


def test_a_small_class_is_tested_and_kept_in_a_subset() -> None:
    """Silent wrong result: 2 images beside 500 got no test image ("100%"); --max-samples dropped a class."""
    targets = np.array([0] * 500 + [1] * 2)
    keep, test = _split_off(np.arange(502), targets, 0.2, seed=0)
    assert (targets[test] == 1).sum() == 1 and (targets[keep] == 1).sum() == 1
    subset = _stratified_subset(np.arange(502), targets, 20, np.random.default_rng(0))
    assert len(subset) == 20 and (targets[subset] == 1).sum() == 2
    balanced = np.repeat(np.arange(10), 50)  # balanced data splits exactly as before
    keep_b, test_b = _split_off(np.arange(500), balanced, 0.2, seed=0)
    assert len(test_b) == 100 and all((balanced[test_b] == c).sum() == 10 for c in range(10))


def test_a_class_folder_linking_back_into_the_data_is_refused(tmp_path: Path) -> None:
    """Silent wrong result: `zz -> .` put every image under a second label, in train and test."""
    root = photo_folder(tmp_path / "photos", per_class=2, side=32)
    (root / "zz").symlink_to(".")
    with pytest.raises(CompressError, match="the class folder zz links to"):
        image_folders.scan(root, 32, strict=False)


def test_a_train_test_layout_is_not_taken_for_two_classes(tmp_path: Path) -> None:
    """Silent wrong result: kaggle/{train,test}/{cat,dog} trained a "train vs test" classifier."""
    root = tmp_path / "kaggle"
    for part in ("train", "test"):
        photo_folder(root / part, classes=("cat", "dog"), per_class=2, side=32)
    with pytest.raises(CompressError, match=f"pass --data {root / 'train'} --test-data {root / 'test'}"):
        image_folders.scan(root, 32, strict=False)


def test_collect_checks_each_row_against_its_record_and_the_registry(tmp_path: Path) -> None:
    """Silent wrong results: an edited accuracy, an edited compressor name, a row whose model file is gone."""
    from tests.helpers import store_row as _row

    shard = tmp_path / "shard"
    model = shard / "m.pt"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    base = replace(_row(0, 0), model_path=str(model), correct=encode(np.array([True])), accuracy=1.0)
    good = replace(base, row_id="good", compressor="pruning", baseline_row_id=base.row_id, config_hash="g")
    edited = replace(good, row_id="edited", correct=encode(np.array([False])), accuracy=0.99)
    renamed = replace(good, row_id="renamed", compressor="<img src=x onerror=alert(1)>")
    gone = replace(good, row_id="gone", model_path=str(shard / "gone.pt"))
    store = Store(shard / "results.sqlite")
    for r in (base, good, edited, renamed, gone):
        store.add(r)
    got = collect(Workspace(tmp_path / "merged"), [shard], ["pruning", "slim-head"])
    assert sorted(got.added) == sorted([base.row_id, "good"])
    reasons = " ".join(got.refused)
    assert "edited refused: its accuracy 99.00% is not what its per-image record gives (0.00%" in reasons
    assert "renamed refused: its compressor '<img src=x onerror=alert(1)>' is not one" in reasons
    assert "gone refused: its model file" in reasons and len(got.refused) == 3


def test_messages_say_what_is_true(capsys: pytest.CaptureFixture[str]) -> None:
    """Wording: 'pass --device cpu' while on the CPU; 'free more than 0.0 MB'; 'only 1 images'."""
    with one_line_errors():
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")
    err = capsys.readouterr().err
    assert "ran out of memory" in err and "--device cpu" not in err
    with pytest.raises(CompressError, match=r"^2 image\(s\) are too few to split into train, validation and test"):
        make_split(_bundle([0, 1]), DataConfig())


def test_a_state_dict_that_is_not_vgg16_says_what_it_lacks(tmp_path: Path) -> None:
    """Wording: 'expected features.0.weight ... found features.0.weight' for a dict whose tensor is not 4-D."""
    import torch

    path = tmp_path / "odd.pth"
    torch.save({"features.0.weight": torch.zeros(3), "classifier.0.weight": torch.zeros(2, 2)}, path)
    code, _, err = _cli(["measure", "--weights", str(path), "--workdir", str(tmp_path / "runs"), *QUICK_LATENCY])
    _one_line(code, err, "it has no 4-D convolution weights features.<i>.weight")
    assert "features.0.weight (3,)" in err


@pytest.mark.parametrize("flag, replacement", [("--no-latency-ort", "--runtimes without ort"),
                                               ("--latency-ort", "--runtimes with ort in it"),
                                               ("--no-latency-gpu", "--runtimes without cuda"),
                                               ("--latency-gpu", "--runtimes with cuda in it")])
def test_removed_flags_fail_naming_their_replacement(flag: str, replacement: str) -> None:
    """People's scripts still pass the flags --runtimes replaced: one line naming it, not 'unrecognized'."""
    code, _, err = _cli(["run", "slim-head", flag])
    _one_line(code, err, f"{flag} was removed: use {replacement}")


def test_only_rank_0_touches_the_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun every rank runs the start-up checks; rank 1 must not create, check or clean the workdir
    (which may be on a network file system, as the store must not be)."""
    import argparse

    from compress.cli import setup
    from compress.scaleout import dist

    ns = argparse.Namespace(command="run", workdir=tmp_path / "runs", reports_dir=tmp_path / "reports")
    monkeypatch.setattr(dist, "current", lambda: dist.World(rank=1, size=2, backend="gloo"))
    setup.prepare(ns)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()
    monkeypatch.setattr(dist, "current", lambda: dist.World())
    setup.prepare(ns)
    assert (tmp_path / "runs" / "results.sqlite").exists() or (tmp_path / "runs").is_dir()
