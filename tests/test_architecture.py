"""The house keeps its shape: layers import downward, no import circle, no private names across modules, small
modules and short signatures. Read from the source (ast), so it runs in a second and cannot drift from the code.

docs/development.md draws the same layers; a change to LAYERS below is a change to that page.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "compress"

# Higher imports lower, never the reverse; equal levels in different packages do not import each other.
# The top-level modules sit between the layers: session (a value built by the CLI, read by the experiments),
# log (progress lines, rank 0 only), configs and errors (imported by anyone).
LAYERS = {
    "cli": 10,
    "experiments": 9, "reporting": 9,
    "session": 8.5,
    "compressors": 8,
    "sensitivity": 7,
    "int8": 6.5,
    "measuring": 6,
    "training": 5,
    "models": 4, "data": 4,
    "log": 3.5,
    "scaleout": 3,
    "store": 2,
    "deploy": 1.5,  # copied into every bundle: imports nothing of compress (and no torch)
    "configs": 1, "errors": 1,
}
MAX_LINES = 300
MAX_PARAMS = 6  # beyond this, a value object (self and cls not counted)
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under `if TYPE_CHECKING:` (annotations only: no import at run time)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in ast.walk(node):
                lines.add(getattr(inner, "lineno", -1))
    return lines


def _imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported compress module, names taken from it, line) for every import in module `name`, lazy ones too."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compress"):
            for alias in node.names:  # `from compress.x import y`: y may be a module of its own
                sub = f"{node.module}.{alias.name}"
                out.append((sub, [], node.lineno) if sub in MODULES else (node.module, [alias.name], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("compress.")]
    return out


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "compress"


def test_every_module_belongs_to_a_layer() -> None:
    strays = [m for m in MODULES if m not in ("compress", "compress.__main__") and _layer(m) not in LAYERS]
    assert not strays, f"modules outside the layers (add them to LAYERS and docs/development.md): {strays}"


def test_layers_import_downward() -> None:
    wrong = []
    for name in MODULES:
        if name in ("compress", "compress.__main__"):
            continue
        src = _layer(name)
        for target, _, line in _imports(name):
            dst = _layer(target)
            if target == "compress" or dst == src or dst not in LAYERS:
                continue
            if LAYERS[dst] >= LAYERS[src]:
                wrong.append(f"{name}:{line} imports {target} ({src} -> {dst})")
    assert not wrong, "imports that run up or across the layers:\n" + "\n".join(wrong)


def test_no_import_circle() -> None:
    graph = {name: {t for t, _, _ in _imports(name) if t in MODULES and t != name} for name in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(MODULES):
        if name not in state and (circle := visit(name)):
            pytest.fail("import circle: " + " -> ".join(circle))


def test_no_private_names_across_modules() -> None:
    """`from x import _y` only within x's own package (a package may use its private helper modules)."""
    wrong = []
    for name in MODULES:
        own = name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]
        for target, names, line in _imports(name):
            private = [n for n in names if n.startswith("_")]
            hidden = [p for p in target.split(".") if p.startswith("_")]
            inside = target.startswith(own + ".") or target == own
            if (private and target != name) or (hidden and not inside):
                wrong.append(f"{name}:{line} takes {private or target} from {target}")
    assert not wrong, "\n".join(wrong)


def test_modules_stay_small() -> None:
    big = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them along what they hold): {big}"


def test_signatures_stay_short() -> None:
    """Over MAX_PARAMS parameters wants a value object; over MAX_FUNCTION_LINES lines wants helpers."""
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args
            count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
            count -= bool(args.args and args.args[0].arg in ("self", "cls"))
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if count > MAX_PARAMS or lines > MAX_FUNCTION_LINES:
                long.append(f"{name}.{node.name}: {count} parameters, {lines} lines")
    assert not long, "\n".join(long)


def test_top_level_stays_a_handful() -> None:
    top = [p.name for p in ROOT.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= 6, f"compress/ holds {len(top)} modules at its top level: {top}"


INT8_LIBRARIES = ("nncf", "onnxruntime.quantization")
INT8_DEBUG_API = "onnxruntime.quantization.qdq_loss_debug"  # the int8 scan reads each layer's error through it


def _external_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def int8_outside(modules: dict[str, Path]) -> list[str]:
    """Modules outside compress.int8 that import an int8 library: int8 is made in one package."""
    return [f"{name} imports {lib}" for name, path in modules.items() if not name.startswith("compress.int8")
            for lib in _external_imports(path)
            if lib != INT8_DEBUG_API and any(lib == x or lib.startswith(x + ".") for x in INT8_LIBRARIES)]


def workdir_paths_outside(modules: dict[str, Path]) -> list[str]:
    """Paths joined onto a workdir's `root` outside store/workspace.py: every path under it is a Workspace method."""
    out = []
    for name, path in modules.items():
        if name in ("compress.store.workspace", "compress.store.sqlite"):  # sqlite: a row's stored relative path
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and \
                    isinstance(node.left, ast.Attribute) and node.left.attr == "root":
                out.append(f"{name}:{node.lineno}")
    return out


def test_int8_is_made_in_one_package() -> None:
    assert int8_outside(MODULES) == []


def test_every_workdir_path_comes_from_the_workspace() -> None:
    assert workdir_paths_outside(MODULES) == []


def test_the_rules_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above read real imports: an upward import planted in a copy of a module is found."""
    store = MODULES["compress.store.rows"]
    planted = tmp_path / "rows.py"
    planted.write_text(store.read_text() + "\nfrom compress.reporting import cells  # planted\n")
    monkeypatch.setitem(MODULES, "compress.store.rows", planted)
    with pytest.raises(AssertionError, match="compress.store.rows.*imports compress.reporting.cells"):
        test_layers_import_downward()


DEPLOY_MAY_IMPORT = {"numpy", "PIL", "onnxruntime", "openvino", "__future__"}


def deploy_imports_outside(modules: dict[str, Path]) -> list[str]:
    """What compress/deploy imports beyond the standard library, numpy, Pillow and the two runtimes: it runs on a
    machine without PyTorch, from a bundle that holds no other part of compress."""
    bad = []
    for name, path in modules.items():
        if not name.startswith("compress.deploy"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:  # `from . import x`: inside the package
                continue
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for top in (n.split(".")[0] for n in names):
                if top not in DEPLOY_MAY_IMPORT and top not in sys.stdlib_module_names:
                    bad.append(f"{name} imports {top}")
    return bad


def test_the_deploy_package_runs_without_torch_or_compress() -> None:
    assert deploy_imports_outside(MODULES) == []


def test_the_int8_and_workdir_rules_can_fail(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("import nncf\nfrom onnxruntime.quantization import quantize_static\n"
                       "from onnxruntime.quantization.qdq_loss_debug import collect_activations\n"
                       "def f(ws):\n    return ws.root / 'mine' / 'run_all.json'\n")
    found = int8_outside({"compress.measuring.planted": planted})
    assert found == ["compress.measuring.planted imports nncf",
                     "compress.measuring.planted imports onnxruntime.quantization"]
    assert workdir_paths_outside({"compress.experiments.planted": planted}) == ["compress.experiments.planted:5"]
    planted.write_text("import torch\nfrom compress.errors import CompressError\nfrom . import bundle\nimport json\n")
    assert deploy_imports_outside({"compress.deploy.planted": planted}) == ["compress.deploy.planted imports torch",
                                                                            "compress.deploy.planted imports compress"]


def test_no_test_module_imports_another() -> None:
    """Shared builders live in tests/helpers.py (or conftest): a test module importing another's private helpers
    ties concepts together that the files keep apart."""
    tests = Path(__file__).resolve().parent
    found = [f"{p.name}:{node.lineno}" for p in sorted(tests.glob("test_*.py"))
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.test_")]
    assert found == []
