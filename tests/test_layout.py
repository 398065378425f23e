"""Repository rules that code review alone would miss: import directions, forbidden dependencies, no exec/eval,
no unsafe torch.load."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN_EVERYWHERE = {"mmcv", "mmdet", "mmengine", "cupy", "onnxruntime", "torchvision"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _py_files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _py_files("cartoonseg"), ids=lambda p: str(p.relative_to(REPO)))
def test_library_never_imports_comfy_nodes_or_train(path):
    bad = _imports(path) & {"comfy", "comfy_extras", "folder_paths", "nodes", "train", "server", "execution"}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "path", _py_files("cartoonseg") + _py_files("nodes") + _py_files("train"), ids=lambda p: str(p.relative_to(REPO))
)
def test_no_forbidden_runtime_dependencies(path):
    bad = _imports(path) & FORBIDDEN_EVERYWHERE
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _py_files("nodes"), ids=lambda p: str(p.relative_to(REPO)))
def test_nodes_never_import_train(path):
    assert "train" not in _imports(path)


@pytest.mark.parametrize(
    "path", _py_files("cartoonseg") + _py_files("nodes") + _py_files("train"), ids=lambda p: str(p.relative_to(REPO))
)
def test_no_exec_eval_or_unsafe_torch_load(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval"):
            pytest.fail(f"{path.relative_to(REPO)}:{node.lineno} calls {node.func.id}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            base = node.func.value
            if isinstance(base, ast.Name) and base.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = "weights_only" in kw and isinstance(kw["weights_only"], ast.Constant) and kw["weights_only"].value
                assert ok, f"{path.relative_to(REPO)}:{node.lineno} torch.load without weights_only=True"


def test_requirements_do_not_pin_torch():
    for name in ("requirements.txt",):
        lines = [l.split("#")[0].strip() for l in (REPO / name).read_text().splitlines()]
        assert not any(l.split("=")[0].split(">")[0].split("<")[0].strip() in ("torch", "torchvision") for l in lines if l)


APPLICATION_AREAS = ("tagger", "depth", "inpaint", "kenburns", "style", "puppet", "annotate")


@pytest.mark.parametrize("area", APPLICATION_AREAS)
def test_every_application_area_has_the_same_shape(area):
    """ARCHITECTURE.md: ``cartoonseg/<area>/`` with ``cli.py`` (on the shared error policy of ``_cli.py``) and
    ``__main__.py``, registered on ``python -m cartoonseg``."""
    folder = REPO / "cartoonseg" / area
    for name in ("__init__.py", "cli.py", "__main__.py"):
        assert (folder / name).is_file(), f"cartoonseg/{area}/{name} is missing"
    cli = ast.parse((folder / "cli.py").read_text())
    relative = {n.module for n in ast.walk(cli) if isinstance(n, ast.ImportFrom) and n.level == 2}
    assert "_cli" in relative, f"cartoonseg/{area}/cli.py does not use the shared error policy of cartoonseg/_cli.py"
    assert any(isinstance(n, ast.FunctionDef) and n.name == "add_parsers" for n in cli.body)
    assert f".{area}.cli import add_parsers" in (REPO / "cartoonseg" / "__main__.py").read_text()


def _library_import_graph() -> dict[str, set[str]]:
    """``module -> library modules it imports`` for ``cartoonseg``, imports inside functions included (``from . import
    x`` names the submodule ``x`` where one exists, otherwise the package)."""
    files = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for p in _py_files("cartoonseg")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]) if node.level else node.module
                base = base.rstrip(".")
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names)
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def test_library_import_graph_has_no_cycles():
    """Library modules form layers: no module reaches itself through imports, not even through imports inside
    functions (which only hide a circle from the interpreter)."""
    graph = _library_import_graph()
    assert "cartoonseg.io" in graph and "cartoonseg.outputs" in graph["cartoonseg.io"]  # the walk sees real edges
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [module, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def _logic_lines(fn: ast.FunctionDef) -> int:
    """Lines that start a statement, docstrings and the ``def`` line not counted."""
    lines = {n.lineno for n in ast.walk(fn) if isinstance(n, ast.stmt)
             and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))}
    return len(lines) - 1


@pytest.mark.parametrize("path", _py_files("nodes"), ids=lambda p: str(p.relative_to(REPO)))
def test_node_methods_are_thin(path):
    """A node's methods validate ComfyUI inputs and call the library: at most 30 lines of logic each (the
    declarative INPUT_TYPES is not logic)."""
    tree = ast.parse(path.read_text())
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name != "INPUT_TYPES"):
            assert _logic_lines(fn) <= 30, f"{path.name}: {cls.name}.{fn.name} has {_logic_lines(fn)} lines of logic"
