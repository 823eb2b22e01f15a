"""The search loop (Optuna, constraint, best and Pareto) on a stand-in for the expensive steps, and its verdicts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from compress.errors import CompressError
from compress.experiments import search
from compress.experiments.search import SearchConfig
from compress.reporting import search_report
from compress.store import searches
from compress.store.searches import Tried
from compress.store.workspace import Workspace

_BEST = search.Search.best  # the real selection, kept before the class is replaced below


class _Cheap:
    """search.Search with the training replaced: pruning at amount a costs 100(1-a) MACs and loses 5 points past 0.6."""

    def __init__(self, session: Any, cfg: SearchConfig) -> None:
        self.cfg, self.session, self.tried, self.base_val, self.epoch_s = cfg, session, [], 0.99, 1.0
        self.ref = SimpleNamespace(row=SimpleNamespace(row_id="base", macs=100, size_bytes=100, num_classes=10),
                                   baseline=SimpleNamespace(path=Path("/nowhere/base/model.pt")))
        self.start = 0.0

    def left_s(self) -> float:
        return 1e9

    def best(self) -> Tried | None:
        return _BEST(self)  # type: ignore[arg-type]

    def trial(self, number: int, method: str, settings: dict[str, Any], int8: bool) -> Tried:
        amount = settings.get("amount", 0.0)
        t = Tried(number, method, settings, int8, "trained", int(100 * (1 - amount)))
        t.val_accuracy = self.base_val - (0.05 if amount > 0.6 else 0.0) - (0.05 if method != "pruning" else 0.0)
        t.value = float(t.macs)
        return t


def test_the_search_returns_the_cheapest_candidate_within_the_drop(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(search, "Search", _Cheap)
    session = SimpleNamespace(workspace=Workspace(tmp_path), data=SimpleNamespace(name="d"))
    out = search.run(session, SearchConfig(objective="macs", trials=25, max_drop=1.0), "cmd")  # type: ignore[arg-type]
    feasible = [t for t in out.tried if t.feasible(0.99, 1.0)]
    assert out.best is not None and out.best in feasible and out.best.value == min(t.value for t in feasible)
    assert out.best.method == "pruning" and out.best.settings["amount"] <= 0.6 and not out.best_untuned
    front = searches.pareto(out.tried)
    assert out.best in front and all(a.value <= b.value for a, b in zip(front, front[1:]))
    assert "best within 1 points (validation): pruning amount=" in search_report.winner_line(out, {})


@pytest.mark.parametrize("kw, message", [
    ({"objective": "speed"}, "--objective 'speed' is not one of ort-b32, torch-b32, size, macs"),
    ({"max_drop": -0.5}, "--max-drop must be a number of points >= 0"),
    ({"max_drop": float("nan")}, "--max-drop must be a number of points >= 0"),
    ({"budget_min": 0}, "--budget-min must be a positive number of minutes"),
    ({"epochs": 0}, "--epochs and --trials must be >= 1"),
])
def test_a_bad_search_setting_is_one_clear_error(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(CompressError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchConfig(**kw)


def test_pareto_keeps_only_what_nothing_beats_on_both() -> None:
    def t(n: int, value: float, acc: float) -> Tried:
        return Tried(n, "pruning", {}, False, "trained", 1, val_accuracy=acc, value=value)

    a, b, c, d = t(0, 10, 0.90), t(1, 20, 0.95), t(2, 25, 0.94), t(3, 30, 0.99)
    assert searches.pareto([c, d, a, b]) == [a, b, d]


def test_a_real_search_judges_on_validation_and_tests_only_the_winner(tmp_path: Path) -> None:
    """No stand-in: Search.trial compresses, fine-tunes, measures and stores each candidate; feasibility reads the
    validation split, the winner is the cheapest feasible one, and only the winner's test accuracy is reported."""
    import contextlib
    import io
    import json

    from compress.cli.main import main
    from compress.store.sqlite import Store
    from tests.conftest import QUICK_LATENCY
    from tests.helpers import narrow as _narrow

    out = io.StringIO()
    argv = ["search", "--objective", "macs", "--trials", "3", "--epochs", "1", "--max-drop", "100",
            "--baseline-weights", str(_narrow(tmp_path / "n.pt")), "--max-samples", "80",
            "--workdir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports"), "--json", *QUICK_LATENCY]
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    assert json.loads(out.getvalue())["best"] is not None
    outcome = searches.newest(Workspace(tmp_path / "runs").search_dir("digits"))
    assert outcome is not None
    trained = [t for t in outcome.tried if t.stage == "trained"]
    assert trained and all(t.val_accuracy is not None and t.row_id for t in trained)
    stored = {r.row_id: r for r in Store(tmp_path / "runs" / "results.sqlite").rows()}
    assert all(t.row_id in stored for t in trained)  # every trained candidate is a stored, measured row
    assert outcome.best is not None and outcome.best.value == min(t.value for t in trained)  # type: ignore[type-var]
    line = search_report.winner_line(outcome, stored)
    assert line.count("test top-1") == 1 and outcome.best.row_id in line  # the test split: the winner's alone


def test_objective_ort_needs_ort_in_runtimes(tmp_path: Path) -> None:
    """--objective ort-b32 without ort in --runtimes: one line (it once raised AttributeError on a renamed field)."""
    import contextlib
    import io

    from compress.cli.main import main
    from tests.helpers import narrow as _narrow

    err = io.StringIO()
    argv = ["search", "--objective", "ort-b32", "--runtimes", "torch", "--baseline-weights",
            str(_narrow(tmp_path / "n.pt")), "--max-samples", "80", "--workdir", str(tmp_path / "runs")]
    with contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 2 and "--objective ort-b32 needs ONNX Runtime timing: keep ort in --runtimes" in err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_the_old_objective_name_still_works_and_names_its_replacement(capsys: pytest.CaptureFixture[str]) -> None:
    assert SearchConfig(objective="cpu-b32").objective == "torch-b32"
    assert "--objective cpu-b32 is now spelled torch-b32" in capsys.readouterr().err
