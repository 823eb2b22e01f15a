"""Adding a compressor is one new file: discovery, the CLI, `run all`, the benchmarks and the contract test follow."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest

from compress import compressors
from compress.cli.main import main
from compress.compressors import _registry
from tests.helpers import check_contract, contract_names

TOY = '''
from dataclasses import dataclass, field, replace

from compress.compressors._registry import register
from compress.models.vgg import set_head


@dataclass(frozen=True)
class ToyConfig:
    width: int = field(default=16, metadata={"help": "the one hidden layer's width"})


@register("toy-head", ToyConfig)
def toy_head(model, spec, config, ctx):
    """One narrow hidden layer instead of 4096-4096 (a compressor written by a test)."""
    new_spec = replace(spec, hidden=(config.width,))
    set_head(model, new_spec)
    return model, new_spec
'''


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The toy module in a folder of its own, on the package's path; the registry restored afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_head.py").write_text(TOY)
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    monkeypatch.setattr(compressors, "__path__", [*compressors.__path__, str(folder)])
    yield "toy-head"
    sys.modules.pop("compress.compressors.toy_head", None)


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def test_a_new_module_is_a_new_compressor_everywhere(toy: str, tmp_path: Path) -> None:
    assert toy not in compressors.names()
    assert "toy_head" in compressors.discover()  # what the package does at import time
    assert toy in [item["name"] for item in json.loads(_cli("list", "--json"))]
    plan = json.loads(_cli("run", "all", "--dry-run", "--json", "--workdir", str(tmp_path / "runs")))
    assert [s["compressor"] for s in plan["steps"]][-1] == toy  # default order: after the built-in ones
    assert plan["steps"][-1]["trains"] == "3 epochs"  # the registry's default fine-tuning budget
    from benchmarks.test_latency import variant_names

    assert toy in variant_names()
    assert toy in contract_names()
    check_contract(toy)
    assert "--width" in _help("run", toy)


def _help(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*argv, "--help"])
    return out.getvalue()


def test_dry_run_plans_every_registered_compressor_and_runs_nothing(tmp_path: Path) -> None:
    plan = json.loads(_cli("run", "all", "--dry-run", "--json", "--workdir", str(tmp_path / "runs"),
                           "--amounts", "0.2,0.4"))
    # every compressor but precision, which declares no run-all step (fp16 VGG16 on a CPU takes minutes to time)
    assert {s["compressor"] for s in plan["steps"]} == set(compressors.names()) - {"precision"}
    assert compressors.get("precision").planned(compressors.PlanOptions()) == []
    assert not any(s["from"] for s in plan["steps"])  # no default-amount pruning step: nothing to compose
    assert [s["label"] for s in plan["steps"] if s["compressor"] == "pruning"] == [
        "pruning 0.2 l1", "pruning 0.4 l1", "pruning 0.2 random", "pruning 0.4 random"]
    assert not plan["baseline"]["cached"] and not (tmp_path / "runs").exists()  # nothing trained or written
    text = _cli("run", "all", "--dry-run", "--workdir", str(tmp_path / "runs"))
    assert text.index("pruning 0.3 l1 then int8") > text.index("quantization (int8, ONNX Runtime)")
    assert "not cached: trains 14 epochs first" in text and "no estimate" in text


def test_register_refuses_an_unknown_declaration() -> None:
    with pytest.raises(TypeError, match="unknown declaration"):
        compressors.register("x", object, finetune_epoch=3)


def test_finetune_budget_is_decided_in_one_place() -> None:
    pruning, quant, dw = (compressors.get(n) for n in ("pruning", "quantization", "depthwise"))
    assert pruning.finetune_config().epochs == 6 and pruning.finetune_config(epochs=2).epochs == 2
    assert dw.finetune_config().lr == 1e-3 and dw.finetune_config(lr=None).lr == 1e-3
    assert quant.finetune_config(epochs=5).epochs == 0  # nothing to fine-tune: int8 is measured as it is
