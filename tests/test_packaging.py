"""Packaging (issue 20 #12): ``pyproject.toml`` is the single source of the dependencies, the requirements files
follow it, every third-party import is declared (optional ones only through ``cartoonseg._optional.require`` with
the extra that lists them), and ``pip install .`` gives a ``python -m cartoonseg`` that works from any folder."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: import name -> distribution name, where they differ
DIST = {"cv2": "opencv-python-headless", "PIL": "pillow", "huggingface_hub": "huggingface_hub", "av": "av"}


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _reqs(items) -> dict[str, str]:
    """{distribution: full requirement} of requirement strings or requirement-file lines."""
    out = {}
    for line in items:
        line = line.split("#", 1)[0].strip()
        if line:
            out[_name(line)] = line.replace(" ", "")
    return out


def _file(name: str) -> dict[str, str]:
    return _reqs((REPO / name).read_text().splitlines())


def test_requirements_files_follow_pyproject():
    project = _project()
    core = _reqs(project["dependencies"])
    extras = {k: _reqs(v) for k, v in project["optional-dependencies"].items()}
    assert "torch" in core
    assert {"depth", "style", "inpaint", "diffusion", "video", "matting", "train", "all", "dev"} <= set(extras)
    runtime = _file("requirements.txt")
    # the ComfyUI pack: the core without torch (ComfyUI brings its own), plus the depth nodes' extra
    assert runtime == {k: v for k, v in {**core, **extras["depth"]}.items() if k != "torch"}
    # tests: dev plus every optional package not already in requirements.txt, with the same specifiers
    dev = _file("requirements-dev.txt")
    optional = {k: v for name, reqs in extras.items() if name not in ("dev", "all") for k, v in reqs.items()}
    assert dev == {**extras["dev"], **{k: v for k, v in optional.items() if k not in runtime}}
    # 'all' is every optional feature, with the same specifiers
    assert extras["all"] == optional
    for name, reqs in extras.items():  # one specifier per package across the extras
        for dist, spec in reqs.items():
            assert optional.get(dist, spec) == spec or name == "dev", (name, spec, optional.get(dist))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def _required(path: Path) -> set[tuple[str, str]]:
    """``(module, extra)`` of every ``require("module", extra="...")`` call in ``path``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "require":
            module = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            extra = next((k.value.value for k in node.keywords if k.arg == "extra"), None)
            out.add((module, extra))
    return out


def test_every_third_party_import_is_declared():
    """Imports in the library and the nodes are core dependencies; optional packages are only imported through
    ``require`` with an extra that lists them (so a missing one is one error line naming the extra)."""
    project = _project()
    core = set(_reqs(project["dependencies"]))
    extras = {k: set(_reqs(v)) for k, v in project["optional-dependencies"].items()}
    stdlib = set(sys.stdlib_module_names)
    comfy = {"comfy", "folder_paths", "nodes", "comfy_api", "server", "latent_preview"}
    problems = []
    for path in [*(REPO / "cartoonseg").rglob("*.py"), *(REPO / "nodes").glob("*.py")]:
        for module in _imports(path) - stdlib - comfy - {"cartoonseg"}:
            dist = DIST.get(module, module).lower().replace("_", "-")
            if dist not in core:
                problems.append(f"{path.relative_to(REPO)} imports {module} ({dist}), not a core dependency")
        for module, extra in _required(path):
            dist = DIST.get(module, module).lower().replace("_", "-")
            if extra not in extras or dist not in extras[extra]:
                problems.append(f"{path.relative_to(REPO)}: require({module!r}, extra={extra!r}) but that extra "
                                f"does not list {dist}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_pip_install_then_python_m_cartoonseg_from_anywhere(tmp_path):
    """``pip install .`` into a fresh virtual environment (system packages visible, no download: --no-deps and no
    build isolation), then ``python -m cartoonseg`` and the ``cartoonseg`` script from an unrelated folder use the
    installed package, not the repository."""
    venv = tmp_path / "venv"
    # no pip of its own: the venv's bundled setuptools would shadow the system's (which builds wheels); this
    # interpreter's pip installs into it (pip --python)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_NO_INDEX="1")
    # built from a copy of what the package is made of: setuptools builds in the source tree (build/, *.egg-info),
    # which would litter the checkout and carry stale modules of an earlier build into the wheel
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "cartoonseg", source / "cartoonseg", ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                        "--no-build-isolation", str(source)], capture_output=True, text=True, timeout=600, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import cartoonseg, sys; print(cartoonseg.__file__)"],
                           capture_output=True, text=True, timeout=300, env=env, cwd=elsewhere)
    assert where.returncode == 0 and str(venv) in where.stdout and str(REPO) not in where.stdout, where
    for cmd in ([str(python), "-m", "cartoonseg", "--help"], [str(venv / "bin" / "cartoonseg"), "segment", "--help"],
                [str(python), "-m", "cartoonseg", "kenburns", "--help"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=elsewhere)
        assert r.returncode == 0 and "usage:" in r.stdout, (cmd, r.stderr[-2000:])
    # a real command: convert tiny weights, written readable (mode 0644 under umask 022)
    code = ("import cartoonseg, torch; torch.manual_seed(0); "  # the released refiner layout: a flat state dict
            "torch.save(cartoonseg.build_refiner('tiny').state_dict(), 'r.ckpt')")
    subprocess.run([str(python), "-c", code], check=True, timeout=300, env=env, cwd=elsewhere)
    r = subprocess.run([str(python), "-m", "cartoonseg", "convert", "r.ckpt", "r.safetensors"], capture_output=True,
                       text=True, timeout=300, env=env, cwd=elsewhere, preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0 and "converted refiner" in r.stdout, r.stderr[-2000:]
    assert (elsewhere / "r.safetensors").stat().st_mode & 0o777 == 0o644


def _version(text: str) -> tuple[int, ...]:
    assert re.fullmatch(r"\d+(\.\d+){0,2}", text), text
    return tuple(int(p) for p in text.split("."))


def test_comfy_registry_metadata():
    """[tool.comfy] has what the Comfy Registry and ComfyUI-Manager read: a publisher, a display name, an icon URL
    (here a file of this repository, at its raw GitHub address) and the ComfyUI versions the pack supports: every
    version we test (0.3.64; the March 2024 ComfyUI has no version number) must satisfy `requires-comfyui`."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy, urls = data["tool"]["comfy"], data["project"]["urls"]
    assert re.fullmatch(r"[a-z][a-z0-9-]*", comfy["PublisherId"]), comfy["PublisherId"]
    assert comfy["DisplayName"].strip()
    repo_url = urls["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo_url), repo_url
    icon = comfy["Icon"]
    raw = repo_url.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    assert icon.startswith(raw) and icon.rsplit(".", 1)[-1] in {"svg", "png", "jpg", "gif"}, icon
    path = REPO / icon[len(raw):]
    assert path.is_file(), f"Icon {icon} names {path}, which is not in the repository"
    clauses = [c.strip() for c in comfy["requires-comfyui"].split(",")]
    for tested in ("0.3.64",):
        for clause in clauses:
            op, ver = re.fullmatch(r"(>=|<=|<|>|==)\s*([\d.]+)", clause).groups()
            a, b = _version(tested), _version(ver)
            assert {">=": a >= b, "<=": a <= b, "<": a < b, ">": a > b, "==": a == b}[op], (tested, clause)
