"""Contract tests of the segmentation node pack (issue 3) with stubbed ComfyUI modules.

The pack is loaded the way ComfyUI loads it (root ``__init__.py`` as a package) but under a private name, never
as the bare module ``nodes`` (ComfyUI owns that name). ``folder_paths``, ``comfy.model_management`` and
``comfy.utils`` are the shared stand-ins of ``tests/_comfy_stub.py``, installed for the duration of this module. Models are the
library's tiny random presets saved in the released file layouts.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _comfy_stub import REPO, Interrupted, write_tiny_released_weights

import cartoonseg
from cartoonseg import Instances

PACK = "cartoonseg_pack_under_test"
OUR_IDS = {
    "CartoonSegModelLoader", "CartoonSegDetect", "CartoonSegRefine", "CartoonSegSegment",
    "CartoonSegInstanceSplit", "CartoonSegMaskToInstances", "CartoonSegToSEGS", "CartoonSegTrack",
    "CartoonSegAlphaMatte",
}
H, W = 48, 64
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """models/ with tiny random weights in the released layouts: cartoonseg/rtmdetl_e60.ckpt (mmengine .ckpt)
    and cartoonseg/refine_last.ckpt (flat state dict)."""
    return write_tiny_released_weights(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def models_dir(weights) -> Path:
    """ComfyUI's models folder for the shared stub fixtures (conftest.py)."""
    return weights


@pytest.fixture(scope="module")
def model(pack):
    loader = pack.NODE_CLASS_MAPPINGS["CartoonSegModelLoader"]()
    (m,) = loader.load("rtmdetl_e60.ckpt", "refine_last.ckpt", "auto", "auto", False, False)
    return m


def frames(b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, H, W, 3, generator=g)


def rect(x1, y1, x2, y2, h=H, w=W):
    m = torch.zeros(h, w)
    m[y1:y2, x1:x2] = 1.0
    return m


def synthetic_frames():
    f0 = Instances.from_masks(torch.stack([rect(0, 0, 10, 20), rect(30, 10, 50, 40), rect(52, 40, 60, 44)]),
                              scores=torch.tensor([0.9, 0.5, 0.7]))
    f1 = Instances.from_masks(torch.stack([rect(32, 10, 52, 40), rect(2, 0, 12, 20)]),
                              scores=torch.tensor([0.6, 0.8]))
    return [f0, f1]


# ---------------------------------------------------------------------------------------------- contract
def test_every_node_module_imports(pack):
    nodes_pkg = sys.modules[f"{pack.__name__}.nodes"]
    assert nodes_pkg.IMPORT_ERRORS == {}, "\n".join(nodes_pkg.IMPORT_ERRORS.values())
    assert len(nodes_pkg._MODULES) == 9


def test_registration_and_metadata(pack):
    mappings, names = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    assert OUR_IDS <= set(mappings)
    for node_id in OUR_IDS:
        cls = mappings[node_id]
        assert node_id in names and names[node_id].endswith("(CartoonSeg)")
        spec = cls.INPUT_TYPES()
        assert isinstance(spec, dict) and "required" in spec
        assert set(spec) <= {"required", "optional", "hidden"}
        assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
        assert cls.CATEGORY.startswith("CartoonSeg/")
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 20
        fn = getattr(cls(), cls.FUNCTION)
        params = inspect.signature(fn).parameters
        for section in ("required", "optional"):
            for name, value in spec.get(section, {}).items():
                assert name in params, f"{node_id}.{cls.FUNCTION} lacks parameter {name}"
                assert isinstance(value, tuple) and value, f"{node_id}.{name}"
                if isinstance(value[0], list):  # combo: default must be one of the values
                    opts = value[1] if len(value) > 1 else {}
                    assert opts.get("default", value[0][0]) in value[0]
        required_params = [p for p in params.values() if p.default is inspect.Parameter.empty]
        assert {p.name for p in required_params} <= set(spec["required"])


def test_every_node_follows_the_conventions(pack):
    """The pack's node conventions (README "Writing a node"), for every node of every area: id ``CartoonSeg...``;
    display name "<Title Case, at most 24 characters> (CartoonSeg)"; category ``CartoonSeg/<area>`` with every
    loader in ``CartoonSeg/loaders``; a DESCRIPTION; a tooltip on every input; one OUTPUT_TOOLTIPS entry per
    output."""
    import re

    problems = []
    for node_id, cls in sorted(pack.NODE_CLASS_MAPPINGS.items()):
        name = pack.NODE_DISPLAY_NAME_MAPPINGS.get(node_id, "")
        title = name[: -len(" (CartoonSeg)")] if name.endswith(" (CartoonSeg)") else None
        if not node_id.startswith("CartoonSeg"):
            problems.append(f"{node_id}: id must start with CartoonSeg")
        word = r"(?:[A-Z0-9][A-Za-z0-9-]*|to|of|and|from|by|in)"
        if title is None or len(title) > 24 or not re.fullmatch(rf"[A-Z0-9][A-Za-z0-9-]*( {word})*", title):
            problems.append(f"{node_id}: display name {name!r} is not '<Title Case, <= 24 chars> (CartoonSeg)'")
        is_loader = node_id.endswith("Loader")
        if not cls.CATEGORY.startswith("CartoonSeg/") or (cls.CATEGORY == "CartoonSeg/loaders") != is_loader:
            problems.append(f"{node_id}: category {cls.CATEGORY!r} (loaders go to CartoonSeg/loaders, others to "
                            "CartoonSeg/<area>)")
        if not isinstance(getattr(cls, "DESCRIPTION", None), str) or len(cls.DESCRIPTION) < 20:
            problems.append(f"{node_id}: no DESCRIPTION")
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for input_name, value in spec.get(section, {}).items():
                options = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
                if not options.get("tooltip"):
                    problems.append(f"{node_id}.{input_name}: no tooltip")
        tips = getattr(cls, "OUTPUT_TOOLTIPS", None)
        if not tips or len(tips) != len(cls.RETURN_TYPES) or not all(isinstance(t, str) and t for t in tips):
            problems.append(f"{node_id}: OUTPUT_TOOLTIPS must describe each of its {len(cls.RETURN_TYPES)} outputs")
    assert not problems, "\n".join(problems)


def test_return_types_follow_node_ids(pack):
    m = pack.NODE_CLASS_MAPPINGS
    seg_types = ("CARTOONSEG_INSTANCES", "MASK", "MASK", "IMAGE", "INT")
    for node_id in ("CartoonSegDetect", "CartoonSegRefine", "CartoonSegSegment"):
        assert m[node_id].RETURN_TYPES == seg_types
    assert m["CartoonSegModelLoader"].RETURN_TYPES == ("CARTOONSEG_MODEL",)
    assert m["CartoonSegToSEGS"].RETURN_TYPES == ("SEGS",)
    assert m["CartoonSegTrack"].RETURN_TYPES[0] == "CARTOONSEG_INSTANCES"
    assert m["CartoonSegMaskToInstances"].RETURN_TYPES[0] == "CARTOONSEG_INSTANCES"


def _library_modules() -> list:
    """Every module of the library (``__main__`` entry points aside), imported: the sweep must not depend on which
    ones earlier tests happened to import (it once passed alone and failed in the whole suite)."""
    import importlib
    import pkgutil

    import cartoonseg

    modules = [cartoonseg]
    for info in pkgutil.walk_packages(cartoonseg.__path__, "cartoonseg."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            modules.append(importlib.import_module(info.name))
    return modules


def _library_constants() -> dict:
    """Public module-level choice lists and prompt-like strings (with a ", ") of every library module:
    ``{value: where}``, each list as a frozenset (a reordered copy is still a copy)."""
    found = {}
    for module in sorted(_library_modules(), key=lambda m: m.__name__):
        name = module.__name__
        for attr, value in vars(module).items():
            if not attr.isupper() or attr.startswith("_"):
                continue
            if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
                value = tuple(value)  # e.g. RELEASED_WEIGHTS, DEPTH_MODELS: their keys are choices too
            if isinstance(value, (tuple, frozenset)) and len(value) > 1 and all(isinstance(v, str) for v in value):
                found.setdefault(frozenset(value), f"{name}.{attr}")
            elif isinstance(value, str) and ", " in value:
                found.setdefault(value, f"{name}.{attr}")
    return found


def test_node_choices_are_the_library_constants(pack):
    """One home per constant: nodes kept their own copies of library choice lists (the loaders' and the depth
    loader's precisions, Ken Burns' presets/easings/anchors/fills, the puppet presets and retarget modes, the prompt
    modes, matting methods, pooling modes and tracking metrics) and of the released file names, with comments
    claiming INPUT_TYPES must not import the library (every cartoonseg import runs cartoonseg/__init__ anyway).
    The widgets now hold the library's own objects; no node file has a literal list or string equal to one."""
    import ast

    from cartoonseg import depth, device, hub, kenburns, matting, puppet, segmenter, tracking
    from cartoonseg.inpaint import diffusion

    node = {m: sys.modules[f"{PACK}.nodes.{m}"] for m in ("loaders", "depth", "kenburns", "puppet", "segment",
                                                           "instances", "inpaint", "tagger")}
    assert node["loaders"].PRECISIONS is device.PRECISION_CHOICES is node["tagger"].PRECISIONS
    assert node["depth"].PRECISIONS is device.PRECISIONS and node["depth"].POOL_MODES is depth.POOL_MODES
    assert set(node["depth"].PUBLISHED.values()) == set(depth.DEPTH_MODELS)  # display names are the node's own
    assert node["loaders"].RELEASED_DETECTOR == hub.RELEASED_WEIGHTS["detector"].filename
    assert node["loaders"].RELEASED_REFINER == hub.RELEASED_WEIGHTS["refiner"].filename
    kb = node["kenburns"]
    assert (kb.PRESETS, kb.EASINGS, kb.ANCHORS) == (kenburns.PRESETS, kenburns.EASINGS, kenburns.ANCHORS)
    assert kb.PRESETS is kenburns.PRESETS and kb.EASINGS is kenburns.EASINGS and kb.ANCHORS is kenburns.ANCHORS
    assert kb.FILLS is kenburns.FILLS and kb.CHARACTER_REVEALS is kenburns.CHARACTER_REVEALS
    assert node["puppet"].PRESETS is puppet.PRESETS and node["puppet"].RETARGET is puppet.RETARGET_MODES
    assert node["segment"].PROMPT_MODES is segmenter.PROMPT_MODES and node["segment"].MATTING_METHODS is matting.METHODS
    assert node["instances"].TRACK_METRICS is tracking.METRICS
    devices = pack.NODE_CLASS_MAPPINGS["CartoonSegModelLoader"].INPUT_TYPES()["required"]["device"][0]
    assert node["loaders"].DEVICES is node["kenburns"].DEVICES is node["tagger"].DEVICES  # node-only, one home
    assert devices == list(node["loaders"].DEVICES)
    # the prompt suffix is written out nowhere in the nodes: the texts that show it are built from the library's
    spec = pack.NODE_CLASS_MAPPINGS["CartoonSegInpaintDiffusion"]
    assert diffusion.PROMPT_SUFFIX in spec.INPUT_TYPES()["required"]["tags"][1]["tooltip"]
    assert diffusion.PROMPT_SUFFIX in spec.DESCRIPTION
    assert "\\," in spec.INPUT_TYPES()["required"]["tags"][1]["tooltip"]  # the tag list grammar, as Diffusion Fill's

    library = _library_constants()
    assert frozenset(device.PRECISIONS) in library and diffusion.PROMPT_SUFFIX in library  # the sweep sees them
    for path in sorted((REPO / "nodes").glob("*.py")):
        text = path.read_text()
        assert "masterpiece, no_humans" not in text, f"{path.name} spells out cartoonseg.inpaint's PROMPT_SUFFIX"
        for item in ast.walk(ast.parse(text)):
            if not isinstance(item, (ast.Tuple, ast.List, ast.Set, ast.Constant)):
                continue
            try:
                value = ast.literal_eval(item)
            except ValueError:
                continue
            if isinstance(value, (tuple, list, set)) and len(value) > 1 and all(isinstance(v, str) for v in value):
                value = frozenset(value)
            if isinstance(value, (frozenset, str)) and value in library:
                raise AssertionError(f"nodes/{path.name}:{item.lineno}: {ast.unparse(item)} copies {library[value]}")


def test_import_registers_model_folder_and_keeps_user_paths(pack, comfy, weights):
    import folder_paths

    paths, exts = folder_paths.folder_names_and_paths["cartoonseg"]
    assert str(weights / "cartoonseg") in paths
    assert {".ckpt", ".safetensors"} <= exts
    # an extra_model_paths.yaml entry registered before the pack must survive registration
    user = str(weights / "shared_elsewhere")
    folder_paths.folder_names_and_paths["cartoonseg"] = ([user], set())
    try:
        pack.nodes._comfy.register_model_folder()
        paths, _ = folder_paths.folder_names_and_paths["cartoonseg"]
        assert paths[0] == user and str(weights / "cartoonseg") in paths
    finally:
        folder_paths.folder_names_and_paths["cartoonseg"] = ([str(weights / "cartoonseg")], exts)


def test_pack_loads_when_its_folder_is_named_cartoonseg(tmp_path):
    """A registry/git install may name the folder `cartoonseg`, the library's own name: ComfyUI then registers the
    pack root as sys.modules['cartoonseg']. The entry must still give the library to `import cartoonseg`."""
    link = tmp_path / "cartoonseg"
    link.symlink_to(REPO, target_is_directory=True)
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("cartoonseg", {str(link / "__init__.py")!r},
                                              submodule_search_locations=[{str(link)!r}])
m = importlib.util.module_from_spec(spec); sys.modules["cartoonseg"] = m; spec.loader.exec_module(m)
import cartoonseg
assert hasattr(cartoonseg, "Segmenter"), cartoonseg
assert "nodes" not in sys.modules, "the bare name `nodes` belongs to ComfyUI"
print(sorted(k for k in m.NODE_CLASS_MAPPINGS if k.startswith("CartoonSeg")))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert OUR_IDS <= set(json.loads(r.stdout.strip().replace("'", '"')))


@pytest.mark.parametrize("folder", ["ComfyUI-CartoonSeg", "cartoonseg"])
def test_pack_import_leaves_sys_path_alone(tmp_path, folder):
    """ComfyUI imports a custom node folder by file path under the folder's name. The pack must not add folders to
    sys.path (its top-level names would shadow other packs' modules, or theirs ours): `cartoonseg` is the pack's own
    copy, loaded from its folder, also where no cartoonseg is installed (this child's sys.path has no checkout)."""
    link = tmp_path / folder
    link.symlink_to(REPO, target_is_directory=True)
    code = f"""
import importlib.util, os, sys
before = list(sys.path)
spec = importlib.util.spec_from_file_location({folder!r}, {str(link / "__init__.py")!r})  # as ComfyUI's nodes.py
m = importlib.util.module_from_spec(spec); sys.modules[{folder!r}] = m; spec.loader.exec_module(m)
assert sys.path == before, sorted(set(sys.path) ^ set(before))
import cartoonseg
assert os.path.realpath(cartoonseg.__file__) == {str(REPO / "cartoonseg" / "__init__.py")!r}, cartoonseg.__file__
assert hasattr(cartoonseg, "Segmenter")
assert "nodes" not in sys.modules, "the bare name `nodes` belongs to ComfyUI"
assert not m.nodes.IMPORT_ERRORS if hasattr(m, "nodes") else not sys.modules["cartoonseg_comfy_nodes"].IMPORT_ERRORS
print(sorted(k for k in m.NODE_CLASS_MAPPINGS if k.startswith("CartoonSeg")))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert OUR_IDS <= set(json.loads(r.stdout.strip().replace("'", '"')))


# ---------------------------------------------------------------------------------------------- loader
def test_loader_lists_only_files_of_the_right_kind(nodes, weights, pack):
    """Each dropdown lists the released name and the local files whose header says they are that kind of network;
    depth/tagger weights, other checkpoints and unreadable files under models/cartoonseg are left out."""
    import os

    from safetensors.torch import save_file

    folder = weights / "cartoonseg"
    extra = [folder / "depth" / "Depth-Anything-V2-Small-hf" / "model.safetensors",
             folder / "tagger" / "wd-swinv2-tagger-v3" / "model.safetensors", folder / "noise.ckpt",
             folder / "my_refiner.safetensors", folder / "sd15.safetensors"]
    try:
        for path in extra[:2]:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"encoder.layer.0.weight": torch.zeros(2)}, str(path))
        (folder / "noise.ckpt").write_bytes(os.urandom(1024))
        cartoonseg.save_weights(cartoonseg.build_refiner("tiny"), folder / "my_refiner.safetensors")
        save_file({"model.diffusion_model.out.0.weight": torch.zeros(2)}, str(folder / "sd15.safetensors"))
        spec = nodes["CartoonSegModelLoader"].INPUT_TYPES()["required"]
        assert spec["detector"][0] == ["rtmdetl_e60.ckpt"]
        assert spec["refiner"][0] == ["none", "refine_last.ckpt", "my_refiner.safetensors"]
        loader = nodes["CartoonSegModelLoader"]()
        # a file of the wrong kind picked anyway (an old workflow): an error in the node user's words
        with pytest.raises(ValueError, match=r"refine_last.ckpt is an IS-Net mask refiner.*'refiner' box") as e:
            loader.load("refine_last.ckpt", "none", "cpu", "fp32", False, False)
        assert "load_refiner" not in str(e.value)
        with pytest.raises(ValueError, match="rtmdetl_e60.ckpt is an RTMDet-Ins detector.*'detector' box"):
            loader.load("rtmdetl_e60.ckpt", "rtmdetl_e60.ckpt", "cpu", "fp32", False, False)
        with pytest.raises(ValueError, match="sd15.safetensors holds weights of another model"):
            loader.load("sd15.safetensors", "none", "cpu", "fp32", False, False)
        with pytest.raises(cartoonseg.CheckpointError, match="noise.ckpt.*not a weights file"):
            loader.load("noise.ckpt", "none", "cpu", "fp32", False, False)
        # the header check is remembered per file version: no second read while the file is unchanged
        calls = []
        real = cartoonseg.checkpoint.peek_weights
        try:
            cartoonseg.checkpoint.peek_weights = lambda p: calls.append(p) or real(p)
            nodes["CartoonSegModelLoader"].INPUT_TYPES()
            assert calls == []
            cartoonseg.save_weights(cartoonseg.build_refiner("tiny"), folder / "my_refiner.safetensors")
            os.utime(folder / "my_refiner.safetensors", ns=(1, 1))
            nodes["CartoonSegModelLoader"].INPUT_TYPES()
            assert [os.path.basename(c) for c in calls] == ["my_refiner.safetensors"]
        finally:
            cartoonseg.checkpoint.peek_weights = real
    finally:
        for path in extra:
            path.unlink(missing_ok=True)


def test_loader_loads_released_layout(nodes, model, pack):
    assert isinstance(model, pack.nodes.loaders.CartoonSegModel)
    assert isinstance(model.detector, torch.nn.Module) and model.has_refiner
    # "auto": bf16 on a CPU with native bf16 (AVX512-BF16/AMX), fp32 on an AVX2-only one
    assert model.device.type == "cpu" and model.precision == cartoonseg.device.resolve_precision("auto", "cpu")
    assert model.detector_path.endswith("rtmdetl_e60.ckpt")
    (m2,) = nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "none", "cpu", "bf16", False, True)
    assert m2.refiner is None and m2.precision == "bf16" and m2.keep_loaded
    with pytest.raises(ValueError, match="precision"):
        nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "none", "cpu", "fp8", False, False)


def test_loader_optimize_fast_and_exact(nodes, model):
    """'fast' (default) folds the loaded networks in place (no second copy); 'exact' keeps the checkpoint's
    modules and runs the reference op order. Both segment the same frame to nearly the same masks."""
    import cartoonseg
    from cartoonseg.models.fuse import is_prepared

    opt = nodes["CartoonSegModelLoader"].INPUT_TYPES()["optional"]["optimize"]
    assert opt[0] == ["fast", "exact"] and opt[1]["default"] == "fast"
    assert model.optimize == "fast" and is_prepared(model.detector, True, True) and is_prepared(model.refiner, True, True)
    (exact,) = nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "refine_last.ckpt", "cpu", "fp32", False,
                                                     False, optimize="exact")
    assert exact.optimize == "exact" and not is_prepared(exact.refiner, True, False)
    # compared in fp32 both: the module's model is "auto", bf16 on a CPU with native bf16
    (fast,) = nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "refine_last.ckpt", "cpu", "fp32", False,
                                                    False)
    seg_fast, seg_exact = fast.segmenter(score_thr=0.0, max_instances=2, det_size=128, refine_size=64), \
        exact.segmenter(score_thr=0.0, max_instances=2, det_size=128, refine_size=64)
    assert seg_fast._infer(fast.refiner) is fast.refiner  # runs the prepared network itself
    assert not seg_exact.fuse and not seg_exact.channels_last
    image = (frames(1)[0].numpy() * 255).astype("uint8")
    a, b = seg_fast(image), seg_exact(image)
    assert isinstance(a, cartoonseg.Instances) and len(a) == len(b) == 2
    assert torch.allclose(a.boxes, b.boxes, atol=1e-3) and (a.masks - b.masks).abs().max() <= 1e-3
    with pytest.raises(ValueError, match="optimize"):
        nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "none", "cpu", "fp32", False, False, optimize="x")


def _empty_models_dir(monkeypatch, tmp_path):
    import folder_paths

    empty = tmp_path / "empty_models"
    empty.mkdir()
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "no_models"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "cartoonseg", ([str(empty)], {".ckpt"}))
    return empty


def test_loader_missing_weights_error_names_url_and_destination(nodes, monkeypatch, tmp_path):
    empty = _empty_models_dir(monkeypatch, tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    loader = nodes["CartoonSegModelLoader"]()
    url = "https://huggingface.co/dreMaz/AnimeInstanceSegmentation/resolve/main/rtmdetl_e60.ckpt"
    with pytest.raises(cartoonseg.WeightsUnavailableError) as e:
        loader.load("rtmdetl_e60.ckpt", "none", "cpu", "fp32", False, False)
    assert url in str(e.value) and str(empty / "rtmdetl_e60.ckpt") in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(cartoonseg.WeightsUnavailableError, match="HF_HUB_OFFLINE") as e:
        loader.load("rtmdetl_e60.ckpt", "none", "cpu", "fp32", True, False)
    assert url in str(e.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("CARTOONSEG_NO_DOWNLOAD", "1")
    with pytest.raises(cartoonseg.WeightsUnavailableError, match="disabled"):
        loader.load("rtmdetl_e60.ckpt", "none", "cpu", "fp32", True, False)


def test_loader_auto_download_from_fake_hub(nodes, monkeypatch, tmp_path, weights):
    """Auto-download goes through huggingface_hub into the first models/cartoonseg folder, sha256 checked."""
    import huggingface_hub

    from cartoonseg import hub

    empty = _empty_models_dir(monkeypatch, tmp_path)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CARTOONSEG_NO_DOWNLOAD"):
        monkeypatch.delenv(var, raising=False)
    src = weights / "cartoonseg" / "rtmdetl_e60.ckpt"
    calls = []

    def fake_download(repo_id, filename, revision="main", local_dir=None, **kw):
        calls.append((repo_id, filename, local_dir))
        dst = Path(local_dir) / filename
        dst.write_bytes(src.read_bytes())
        return str(dst)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setitem(hub.RELEASED_WEIGHTS, "detector", hub.WeightsSpec("rtmdetl_e60.ckpt", hub.sha256_of(src)))
    (m,) = nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "none", "cpu", "fp32", True, False)
    # huggingface_hub downloads into a private temp folder inside the models folder; the checked file is renamed
    assert [c[:2] for c in calls] == [("dreMaz/AnimeInstanceSegmentation", "rtmdetl_e60.ckpt")]
    assert Path(calls[0][2]).parent == empty and not Path(calls[0][2]).exists()
    assert Path(m.detector_path) == empty / "rtmdetl_e60.ckpt"
    # a corrupted download is rejected by the checksum
    (empty / "rtmdetl_e60.ckpt").unlink()
    monkeypatch.setitem(hub.RELEASED_WEIGHTS, "detector", hub.WeightsSpec("rtmdetl_e60.ckpt", "0" * 64))
    with pytest.raises(cartoonseg.WeightsUnavailableError, match="sha256"):
        nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "none", "cpu", "fp32", True, False)


def test_model_holder_on_comfy_model_management(pack, comfy, nodes):
    """The loader returns a holder: nothing is read until a node needs the networks; then ComfyUI's model
    management places them (load_models_gpu, full load) and lists them; ComfyUI's unload releases the weights and the
    next node reads them again; keep_loaded=False hands a GPU model back after the node, also on errors."""
    import comfy.model_management as mm

    holder_cls = pack.nodes._comfy.ModelHolder
    (m,) = nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "refine_last.ckpt", "cpu", "fp32", False, True)
    assert isinstance(m, holder_cls) and not m.loaded and m.loads == 0  # the loader read headers only
    mm.load_calls.clear()
    out = nodes["CartoonSegSegment"]().segment(m, frames(1), 0.0, 2, 128, 0.3, True, 64, "binary", False)
    check_segment_outputs(out, 1)
    assert m.loaded and m.loads == 1 and mm.load_calls and mm.load_calls[-1]["force_full_load"]
    assert any(lm.model is m.patcher for lm in mm.current_loaded_models)  # ComfyUI accounts for it
    assert type(m.patcher.model).__name__ == "CartoonSegNetworks" and m.patcher.model.net["detector"] is m.detector
    detector = m.detector
    mm.unload_all_models()  # "Unload Models" / POST /free
    assert not m.loaded and m.releases == 1 and m.patcher is None
    # the weights' memory is freed at once (tensors on the meta device), while ComfyUI's objects stay valid
    assert all(p.is_meta for p in detector.parameters())
    del detector
    nodes["CartoonSegDetect"]().detect(m, frames(1), 0.0, 1, 128, "binary", False)
    assert m.loaded and m.loads == 2  # read again on demand
    mm.unload_all_models()

    # keep_loaded=False with a compute device other than the offload device: handed back after every node ("meta"
    # stands for the offload device; the module has no tensors, so the moves show in the patcher's bookkeeping)
    net = torch.nn.Identity()
    h = holder_cls(lambda: net, name="identity", device="cpu", offload_device="meta", keep_loaded=False)
    listed = lambda: any(lm.model is h.patcher for lm in mm.current_loaded_models)  # noqa: E731
    with h.on_device() as payload:
        assert payload is net and h.patcher.model.device == torch.device("cpu") and listed()
    assert h.patcher.model.device == torch.device("meta") and not listed()
    assert h.loaded and h.releases == 0  # handed back, not released
    with pytest.raises(RuntimeError, match="boom"):
        with h.on_device():
            raise RuntimeError("boom")
    assert h.patcher.model.device == torch.device("meta") and not listed()
    h.keep_loaded = True
    with h.on_device():
        pass
    assert h.patcher.model.device == torch.device("cpu") and listed()
    mm.unload_all_models()
    assert not h.loaded and h.releases == 1

    # ComfyUI unloads while a node still computes with the weights (making room for another model): the node
    # finishes on them, the holder frees them when the block ends and reads them again next time
    lin = holder_cls(lambda: torch.nn.Linear(2, 2), name="linear", device="cpu", offload_device="cpu")
    with lin.on_device() as layer:
        mm.unload_all_models()
        assert not lin.loaded and lin.releases == 1 and not layer.weight.is_meta
        layer(torch.ones(1, 2))
    assert layer.weight.is_meta  # freed when the block ended
    with lin.on_device() as again:
        assert again is not layer and lin.loads == 2
    mm.unload_all_models()
    assert again.weight.is_meta  # released outside any node: freed at once
    # ... and once that node has ended, nothing of the holder keeps the weights ComfyUI counts as freed (before
    # any later read)
    import gc
    import weakref

    lin2 = holder_cls(lambda: torch.nn.Linear(2, 2), name="linear2", device="cpu", offload_device="cpu")
    with lin2.on_device() as layer2:
        mm.unload_all_models()
        kept = weakref.ref(layer2.weight)
    del layer2
    gc.collect()
    assert kept() is None and not lin2.loaded, "the holder kept weights ComfyUI released while a node used them"

    # a block inside another (one node using the holder twice) hands the device memory back only when the outer
    # block ends
    h = holder_cls(lambda: torch.nn.Identity(), name="nested", device="cpu", offload_device="meta", keep_loaded=False)
    with h.on_device():
        with h.on_device():
            pass
        assert h.patcher.model.device == torch.device("cpu") and listed()
    assert h.patcher.model.device == torch.device("meta") and not listed()


def test_model_unloaded_while_a_node_uses_it(pack, comfy, monkeypatch):
    """ComfyUI unloads a model while our node computes with it (another model's load_models_gpu makes room, e.g. a
    GPU with little VRAM): the weights stay on the compute device, usable, until the node's block ends (ComfyUI's
    unload would move them to the offload device, and the node's next layer would fail on mixed devices); then the
    holder frees them and empties the device cache through ComfyUI's soft_empty_cache, in that order."""
    import comfy.model_management as mm

    events = []
    real_empty = mm.soft_empty_cache
    monkeypatch.setattr(mm, "soft_empty_cache",
                        lambda *a, **k: (events.append("soft_empty_cache"), real_empty(*a, **k)))
    holder_cls = pack.nodes._comfy.ModelHolder
    lin = holder_cls(lambda: torch.nn.Linear(2, 2), name="linear", device="cpu", offload_device="cpu")
    x = torch.ones(1, 2)
    with lin.on_device() as layer:
        # the offload device ComfyUI moves unloaded weights to ("meta" stands for the CPU of a GPU machine: a move
        # there shows, and would break the node's next layer as a GPU->CPU move does)
        lin.patcher.offload_device = torch.device("meta")
        expected = layer(x)
        events.clear()
        mm.unload_all_models()
        assert not lin.loaded and lin.releases == 1
        assert not layer.weight.is_meta and layer.weight.device == torch.device("cpu"), "moved away mid-node"
        torch.testing.assert_close(layer(x), expected)  # the node goes on computing with them
        assert "soft_empty_cache" not in events  # nothing of ours to empty yet: the node still holds them
        events.append("block ends")
    assert layer.weight.is_meta and layer.bias.is_meta, "weights ComfyUI unloaded outlived the node's block"
    assert events == ["block ends", "soft_empty_cache"]
    # nested blocks: freed only when the outer block ends
    with lin.on_device() as layer2:
        with lin.on_device():
            mm.unload_all_models()
        assert not layer2.weight.is_meta
        layer2(x)
    assert layer2.weight.is_meta
    # the next node reads them again and computes as before
    with lin.on_device() as layer3:
        assert lin.loads == 3 and not layer3.weight.is_meta and layer3(x).shape == (1, 2)
    mm.unload_all_models()

    # ComfyUI's smart memory frees only part of a model (moves some layers to the offload device): not while a node
    # computes with it (the whole model is unloaded instead, freed when the block ends) ...
    two = holder_cls(lambda: torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)), name="two",
                     device="cpu", offload_device="cpu")
    with two.on_device() as seq:
        two.patcher.offload_device = torch.device("meta")
        mm.free_memory(1, torch.device("cpu"))
        assert not any(p.is_meta for p in seq.parameters()), "layers moved away mid-node"
        seq(x)
        assert not two.loaded and two.releases == 1
    assert all(p.is_meta for p in seq.parameters())
    # ... while between nodes a partial unload stays ComfyUI's choice (the next block moves every layer back)
    with two.on_device() as seq:
        two.patcher.offload_device = torch.device("meta")
    mm.free_memory(1, torch.device("cpu"))
    assert two.loaded and seq[0].weight.is_meta and not seq[1].weight.is_meta
    mm.unload_all_models()


def test_release_keeps_the_callers_networks(pack, comfy):
    """A holder over networks the caller passed in (CartoonSegModel.from_networks: scripts, tests) does not own
    them: ComfyUI's unload lets go of them (offload device) but never destroys them, and the next node uses them
    again; a holder that read its weights frees them (meta)."""
    import comfy.model_management as mm

    loaders = pack.nodes.loaders
    det = cartoonseg.build_detector("tiny")
    holder = loaders.CartoonSegModel.from_networks(det, device="cpu", offload_device="cpu")
    with holder.on_device():
        pass
    mm.unload_all_models()
    assert holder.releases == 1 and not any(p.is_meta for p in det.parameters()), "the caller's detector destroyed"
    with holder.on_device():  # used again, not read: the same networks
        assert holder.detector is det
    with holder.on_device():  # unloaded while a node uses them: still the caller's after the block
        mm.unload_all_models()
    assert holder.releases == 2 and not any(p.is_meta for p in det.parameters())
    mm.unload_all_models()


def test_no_module_level_model_caches():
    """Models live only in the holders ComfyUI's cache keeps: no module-level dict/list holds a network."""
    import ast

    for path in (REPO / "nodes").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                names = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                         if isinstance(t, ast.Name)]
                assert not any("CACHE" in n.upper() for n in names), f"{path.name}: module-level cache {names}"


# ---------------------------------------------------------------------------------------------- segmentation
def check_segment_outputs(out, b, expect_binary=True):
    inst, masks, combined, preview, count = out
    assert isinstance(inst, list) and len(inst) == b and all(isinstance(f, Instances) for f in inst)
    n = sum(len(f) for f in inst)
    assert count == n and isinstance(count, int)
    for f in inst:
        assert f.image_size == (H, W) and f.masks.dtype == torch.float32 and f.device.type == "cpu"
    assert masks.dtype == torch.float32 and masks.shape == (max(n, 1), H, W)
    assert combined.dtype == torch.float32 and combined.shape == (b, H, W)
    assert preview.dtype == torch.float32 and preview.shape == (b, H, W, 3)
    assert 0.0 <= float(preview.min()) and float(preview.max()) <= 1.0
    if expect_binary:
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
    return inst


def test_segment_batch(nodes, model, comfy):
    image = frames(2)
    out = nodes["CartoonSegSegment"]().segment(model, image, 0.0, 3, 128, 0.3, True, 64, "binary", False)
    inst = check_segment_outputs(out, 2)
    assert all(len(f) == 3 for f in inst)
    assert all(f.mask_thr == pytest.approx(0.3) for f in inst)
    assert comfy.updates == 2 * (1 + 3)  # progress per frame (detection) and per refined instance
    # instances of frame 1 come after those of frame 0 in the MASK batch
    assert torch.equal(out[1][3:], inst[1].binary.float())
    assert torch.equal(out[2][0], inst[0].binary.float().amax(0))


def test_segment_soft_masks_and_tracking(nodes, model):
    image = frames(1).expand(3, -1, -1, -1).contiguous()  # a "video" of three identical frames
    out = nodes["CartoonSegSegment"]().segment(model, image, 0.0, 2, 128, 0.3, False, 64, "soft", True)
    inst = check_segment_outputs(out, 3, expect_binary=False)
    assert torch.allclose(out[1][:2], inst[0].masks)
    # identical frames: the tracker keeps the ids of frame 0
    assert inst[1].ids.tolist() == inst[0].ids.tolist() == inst[2].ids.tolist()


def test_detect_and_empty_result(nodes, model):
    image = frames(2)
    out = nodes["CartoonSegDetect"]().detect(model, image, 0.0, 2, 128, "binary", False)
    inst = check_segment_outputs(out, 2)
    assert all(len(f) == 2 and f.mask_thr == 0.5 for f in inst)
    # nothing passes score 1.0: zero masks of the frame size, preview = the input
    for node, args in (("CartoonSegDetect", (1.0, 5, 128, "binary", False)),
                       ("CartoonSegSegment", (1.0, 5, 128, 0.3, True, 64, "binary", False))):
        cls = nodes[node]
        out = getattr(cls(), cls.FUNCTION)(model, image, *args)
        check_segment_outputs(out, 2)
        assert out[4] == 0 and out[1].shape == (1, H, W) and float(out[1].abs().sum()) == 0.0
        assert float(out[2].abs().sum()) == 0.0
        assert torch.allclose(out[3], image, atol=1 / 255)


def test_inputs_are_normalised(nodes, model):
    rgba = torch.cat([frames(1), torch.ones(1, H, W, 1)], dim=-1)
    grey = frames(1)[..., :1]
    for image in (rgba, grey, frames(1)[0]):
        out = nodes["CartoonSegDetect"]().detect(model, image, 0.0, 1, 128, "binary", False)
        check_segment_outputs(out, 1)
    nan = frames(1)
    nan[0, 0, 0, 0] = float("nan")
    check_segment_outputs(nodes["CartoonSegDetect"]().detect(model, nan, 0.0, 1, 128, "binary", False), 1)
    with pytest.raises(ValueError, match="empty"):
        nodes["CartoonSegDetect"]().detect(model, torch.zeros(0, H, W, 3), 0.3, 1, 128, "binary", False)
    with pytest.raises(TypeError, match="CARTOONSEG_MODEL"):
        nodes["CartoonSegDetect"]().detect("model", frames(1), 0.3, 1, 128, "binary", False)


def test_cancel_stops_between_frames_and_offloads(nodes, comfy, monkeypatch):
    # a model of its own: the meta offload device below strands its weights (the module's model must stay usable)
    (model,) = nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "refine_last.ckpt", "cpu", "fp32", False,
                                                     False)
    nodes["CartoonSegSegment"]().segment(model, frames(1), 0.0, 1, 128, 0.3, False, 64, "binary", False)  # loaded
    calls = []
    real = cartoonseg.Segmenter.__call__

    def spy(self, image, **kwargs):
        calls.append(1)
        return real(self, image, **kwargs)

    monkeypatch.setattr(cartoonseg.Segmenter, "__call__", spy)
    handed_back = []
    monkeypatch.setattr(model, "offload_device", torch.device("meta"))  # makes the hand-back happen
    monkeypatch.setattr(model, "hand_back", lambda: handed_back.append(1))
    comfy.cancel_after = 1
    with pytest.raises(Interrupted):
        nodes["CartoonSegSegment"]().segment(model, frames(4), 0.0, 1, 128, 0.3, False, 64, "binary", False)
    assert len(calls) == 1  # frames 2-4 never ran
    assert handed_back == [1]  # the device memory was handed back despite the interruption


def test_refine_from_masks_boxes_and_instances(nodes, model):
    node = nodes["CartoonSegRefine"]()
    one = frames(1)
    prompts = torch.stack([rect(0, 0, 20, 30), rect(30, 10, 60, 40), torch.zeros(H, W)])
    out = node.refine(model, one, 0.3, 64, "binary", masks=prompts)
    inst = check_segment_outputs(out, 1)
    assert len(inst[0]) == 2  # the empty mask is not a prompt
    # masks of another resolution are resized to the frame
    out = node.refine(model, one, 0.3, 64, "binary", masks=prompts[:2, ::2, ::2])
    assert len(out[0][0]) == 2
    two = frames(2)
    out = node.refine(model, two, 0.3, 64, "soft", masks=prompts[:2])  # one mask per frame
    assert [len(f) for f in check_segment_outputs(out, 2, expect_binary=False)] == [1, 1]
    with pytest.raises(ValueError, match="3 masks for 2 frames"):
        node.refine(model, two, 0.3, 64, "binary", masks=prompts)
    out = node.refine(model, two, 0.3, 64, "binary", masks=prompts[1:2])  # one mask: the prompt of every frame
    assert [len(f) for f in check_segment_outputs(out, 2)] == [1, 1]
    boxes = [[{"x": 2, "y": 3, "width": 20, "height": 30}, {"x": 30, "y": 5, "width": 10, "height": 10}], []]
    out = node.refine(model, two, 0.3, 64, "binary", bboxes=boxes, prompt_mode="rectangle")
    assert [len(f) for f in check_segment_outputs(out, 2)] == [2, 0]
    assert out[0][0].boxes[0].tolist() == [2.0, 3.0, 22.0, 33.0]
    out = node.refine(model, two, 0.3, 64, "binary", bboxes=[[0, 0, 10, 10]])  # flat xyxy list -> every frame
    assert [len(f) for f in out[0]] == [1, 1]
    for one in ([0, 0, 10, 10], (0.0, 0.0, 10.0, 10.0), torch.tensor([0.0, 0.0, 10.0, 10.0])):  # a single box
        out = node.refine(model, two, 0.3, 64, "binary", bboxes=one)
        assert [f.boxes.tolist() for f in out[0]] == [[[0.0, 0.0, 10.0, 10.0]]] * 2 or [len(f) for f in out[0]] == [1, 1]
    det = nodes["CartoonSegDetect"]().detect(model, two, 0.0, 2, 128, "binary", False)[0]
    det = [f.replace(ids=f.ids + 10) for f in det]
    out = node.refine(model, two, 0.3, 64, "binary", instances=det)
    inst = check_segment_outputs(out, 2)
    assert [f.ids.tolist() for f in inst] == [f.ids.tolist() for f in det]
    assert all(f.mask_thr == pytest.approx(0.3) for f in inst)
    with pytest.raises(ValueError, match="exactly one"):
        node.refine(model, two, 0.3, 64, "binary")
    with pytest.raises(ValueError, match="exactly one"):
        node.refine(model, two, 0.3, 64, "binary", masks=prompts, bboxes=boxes)
    with pytest.raises(ValueError, match="x, y, width, height"):
        node.refine(model, two, 0.3, 64, "binary", bboxes=[{"x": 1}])


def test_refine_pairs_image_and_instances_frames_as_every_node_does(nodes, model):
    """One instances frame for a clip refines it in every frame, one picture for several instances frames refines
    each on that picture (both used to be refused: Refine wanted one instances frame per image frame while Style
    Edit and Puppet Rig took one for all); other counts are refused naming both inputs."""
    node = nodes["CartoonSegRefine"]()
    clip = frames(3, seed=1)
    det = nodes["CartoonSegDetect"]().detect(model, clip[:1], 0.0, 2, 128, "binary", False)[0]
    assert len(det[0])
    out = node.refine(model, clip, 0.3, 64, "soft", instances=det)
    inst = check_segment_outputs(out, 3, expect_binary=False)
    for i in range(3):  # frame i: the one frame's prompts refined on picture i
        alone = node.refine(model, clip[i:i + 1], 0.3, 64, "soft", instances=det)[0][0]
        assert torch.equal(inst[i].masks, alone.masks) and inst[i].ids.tolist() == det[0].ids.tolist()
    two = nodes["CartoonSegDetect"]().detect(model, clip[:2], 0.0, 2, 128, "binary", False)[0]
    out = node.refine(model, clip[:1], 0.3, 64, "soft", instances=two)
    assert torch.equal(check_segment_outputs(out, 2, expect_binary=False)[1].masks,
                       node.refine(model, clip[:1], 0.3, 64, "soft", instances=two[1:])[0][0].masks)
    with pytest.raises(ValueError, match="instances has 2 frames but image has 3"):
        node.refine(model, clip, 0.3, 64, "binary", instances=two)
    with pytest.raises(ValueError, match=f"instances are for a {W}x{H} image but the image is {W}x{H - 8}"):
        node.refine(model, clip[:2, :-8], 0.3, 64, "binary", instances=two)


def test_refine_pairs_image_and_per_frame_box_lists_as_instances(nodes, model):
    """A one-frame image with L per-frame box lists (e.g. boxes found on a clip, refined on one picture) was refused
    ("per-frame lists for 1 frames") although image + instances pair so; it gives L frames now, frame i the one
    picture refined with list i, for nested lists and [L,N,4] tensors alike. A [1,N,4] tensor serves every frame;
    other counts are refused naming both and what to wire."""
    node = nodes["CartoonSegRefine"]()
    one, clip = frames(1), frames(3, seed=1)
    lists = [[{"x": 2, "y": 3, "width": 20, "height": 30}], [[30, 5, 40, 15], [1, 1, 9, 9]]]
    out = node.refine(model, one, 0.3, 64, "soft", bboxes=lists, prompt_mode="rectangle")
    inst = check_segment_outputs(out, 2, expect_binary=False)
    assert [f.boxes.tolist() for f in inst] == [[[2.0, 3.0, 22.0, 33.0]],
                                                [[30.0, 5.0, 40.0, 15.0], [1.0, 1.0, 9.0, 9.0]]]
    for i in range(2):
        alone = node.refine(model, one, 0.3, 64, "soft", bboxes=lists[i], prompt_mode="rectangle")[0][0]
        assert torch.equal(inst[i].masks, alone.masks)
    t = torch.tensor([[[2.0, 3.0, 22.0, 33.0]], [[30.0, 5.0, 40.0, 15.0]]])
    assert [len(f) for f in node.refine(model, one, 0.3, 64, "binary", bboxes=t, prompt_mode="rectangle")[0]] == [1, 1]
    out = node.refine(model, clip, 0.3, 64, "binary", bboxes=t[:1], prompt_mode="rectangle")  # [1,N,4]: every frame
    assert [f.boxes.tolist() for f in check_segment_outputs(out, 3)] == [[[2.0, 3.0, 22.0, 33.0]]] * 3
    with pytest.raises(ValueError, match="2 per-frame box lists but image has 3 frames; give one list per image"):
        node.refine(model, clip, 0.3, 64, "binary", bboxes=lists)
    with pytest.raises(ValueError, match=r"bboxes tensor must be .* got \(2, 1, 4\)"):
        node.refine(model, clip, 0.3, 64, "binary", bboxes=t)


def test_refine_box_prompt_modes_and_grey_option(nodes, model):
    node = nodes["CartoonSegRefine"]()
    one = frames(1)
    boxes = [[2, 3, 40, 45]]
    kern = node.refine(model, one, 0.3, 64, "soft", bboxes=boxes)  # prompt_mode "kernel" by default
    rect = node.refine(model, one, 0.3, 64, "soft", bboxes=boxes, prompt_mode="rectangle")
    assert kern[0][0].extras["prompt_box"] == [[2.0, 3.0, 40.0, 45.0]] and not rect[0][0].extras
    assert rect[0][0].boxes.tolist() == [[2.0, 3.0, 40.0, 45.0]]
    seg = model.segmenter(use_refiner=True, mask_thr=0.3, refine_size=64)
    for mode, out in (("kernel", kern), ("rectangle", rect)):
        ref = seg.refine(one[0], torch.tensor(boxes, dtype=torch.float32), prompt_mode=mode)
        assert torch.equal(out[1], ref.masks)
    # grey: the same as segmenting the grey frame
    from cartoonseg.transforms import grey_rgb

    grey = torch.from_numpy(grey_rgb((one[0].numpy() * 255 + 0.5).astype("uint8"))).float()[None] / 255
    segment = nodes["CartoonSegSegment"]()
    a = segment.segment(model, one, 0.0, 2, 128, 0.3, True, 64, "soft", False, grey=True)
    b = segment.segment(model, grey, 0.0, 2, 128, 0.3, True, 64, "soft", False)
    assert torch.equal(a[1], b[1])
    d = nodes["CartoonSegDetect"]().detect(model, one, 0.0, 2, 128, "soft", False, grey=True)
    assert torch.equal(d[1], nodes["CartoonSegDetect"]().detect(model, grey, 0.0, 2, 128, "soft", False)[1])


def test_alpha_matte_node_gives_consistent_mattes_and_rgba_cutouts(nodes, model):
    two = frames(2)
    seg = nodes["CartoonSegSegment"]().segment(model, two, 0.0, 2, 128, 0.3, True, 64, "soft", False)
    inst, alphas, cut, count = nodes["CartoonSegAlphaMatte"]().matte(two, seg[0], 0, "cf")
    assert count == seg[4] == alphas.shape[0] == cut.shape[0] and cut.shape[1:] == (H, W, 4)
    assert alphas.shape[1:] == (H, W) and float(alphas.min()) >= 0 and float(alphas.max()) <= 1
    assert torch.allclose(cut[..., 3], alphas, atol=1 / 255)
    for f in inst:
        assert f.alphas is not None and float(f.alphas.sum(0).max()) <= 1 + 1e-6
    with pytest.raises(ValueError, match="instances has 2 frames but image has 3"):
        nodes["CartoonSegAlphaMatte"]().matte(frames(3), seg[0], 0, "cf")


def test_alpha_matte_node_pairs_image_and_instances_frames_as_every_node_does(nodes, model):
    """One instances frame for a clip is matted on every frame (it used to be refused: Alpha Mattes wanted one
    instances frame per image frame while Style Edit and Puppet Rig took one for all), one picture for several
    instances frames is matted for each of them."""
    node = nodes["CartoonSegAlphaMatte"]()
    clip = frames(3, seed=1)
    seg = nodes["CartoonSegSegment"]().segment(model, clip, 0.0, 2, 128, 0.3, True, 64, "soft", False)[0]
    assert len(seg[0])
    inst, alphas, cut, count = node.matte(clip, seg[:1], 0, "cf")
    assert len(inst) == 3 and count == 3 * len(seg[0]) == alphas.shape[0] == cut.shape[0]
    for i in range(3):  # frame i: the one frame's instances matted on picture i
        alone = node.matte(clip[i:i + 1], seg[:1], 0, "cf")
        assert torch.equal(inst[i].alphas, alone[0][0].alphas)
        assert torch.equal(cut[i * len(seg[0]):(i + 1) * len(seg[0])], alone[2])
    inst, _, _, count = node.matte(clip[:1], seg, 0, "cf")
    assert [len(f) for f in inst] == [len(f) for f in seg]
    assert torch.equal(inst[2].alphas, node.matte(clip[:1], seg[2:], 0, "cf")[0][0].alphas)
    with pytest.raises(ValueError, match=f"instances are for a {W}x{H} image but the image is {W}x{H - 8}"):
        node.matte(clip[:, :-8], seg[:1], 0, "cf")


def test_images_with_one_or_two_channels(pack, nodes, model):
    _comfy = pack.nodes._comfy
    batch = torch.rand(1, H, W, 2)  # grey + alpha: alpha dropped, grey replicated
    out = _comfy.check_image(batch)
    assert out.shape == (1, H, W, 3) and torch.equal(out[..., 1], batch[..., 0])
    assert _comfy.image_to_uint8(batch[0]).shape == (H, W, 3)
    seg = nodes["CartoonSegSegment"]()
    a = seg.segment(model, batch, 0.0, 2, 128, 0.3, True, 64, "soft", False)
    b = seg.segment(model, batch[..., :1], 0.0, 2, 128, 0.3, True, 64, "soft", False)
    assert torch.equal(a[1], b[1])


def test_refine_needs_a_refiner(nodes):
    (no_ref,) = nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "none", "cpu", "fp32", False, False)
    with pytest.raises(ValueError, match="needs a refiner"):
        nodes["CartoonSegRefine"]().refine(no_ref, frames(1), 0.3, 64, "binary", masks=rect(0, 0, 5, 5)[None])
    # the one-node segmenter falls back to detector masks
    out = nodes["CartoonSegSegment"]().segment(no_ref, frames(1), 0.0, 2, 128, 0.3, True, 64, "binary", False)
    assert out[0][0].mask_thr == 0.5


# ---------------------------------------------------------------------------------------------- instances
def test_instance_split_orders_and_selection(nodes):
    split = nodes["CartoonSegInstanceSplit"]()
    fr = synthetic_frames()
    img = frames(2)

    def run(order="index", select="all", by="position", frame=-1, **kw):
        args = dict(crop_padding=0, crop_size=0, crop_fill="image", dilate=0, mask_output="binary")
        args.update(kw)
        return split.split(fr, order, select, by, frame, args["crop_padding"], args["crop_size"], args["crop_fill"],
                           args["dilate"], args["mask_output"], image=kw.get("image", img))

    masks, crops, crop_masks, union, background, bboxes, chosen, count = run()
    assert count == 5 and masks.shape == (5, H, W) and union.shape == (2, H, W)
    assert torch.equal(background, 1 - union)
    assert len(bboxes) == 2 and bboxes[0][0] == {"x": 0, "y": 0, "width": 10, "height": 20, "score": 0.9,
                                                 "label": "inst_0", "id": 0}
    assert crops.shape[0] == 5 and crops.shape[1:] == (30, 20, 3) and crop_masks.shape == (5, 30, 20)
    # crop of instance 0 (10x20 at the origin) = the image pixels, padded bottom/right with zeros
    assert torch.allclose(crops[0, :20, :10], img[0, :20, :10])
    assert float(crops[0, 20:].abs().sum()) == 0.0

    def first_box(out):
        return out[5][0][0]["x"] if out[5][0] else None

    assert first_box(run("score", "0", frame=0)) == 0  # 0.9
    assert first_box(run("area", "0", frame=0)) == 30
    assert first_box(run("left-to-right", "-1", frame=0)) == 52
    assert first_box(run("top-to-bottom", "1", frame=0)) == 30
    out = run("index", "0,2", frame=0)
    assert out[7] == 2 and [b["id"] for b in out[5][0]] == [0, 2]
    out = run("index", "1-5", frame=1)  # out-of-range positions are skipped
    assert out[7] == 1 and out[1].shape[0] == 1 and out[3].shape == (1, H, W)
    out = run("index", "7")  # nothing selected: zero masks of frame size, never an empty batch
    assert out[7] == 0 and out[0].shape == (1, H, W) and out[1].shape == (1, H, W, 3)
    assert float(out[0].abs().sum()) == 0.0 and float(out[4].min()) == 1.0
    with pytest.raises(ValueError, match="cannot parse"):
        run("index", "a,b")
    with pytest.raises(ValueError, match="out of range"):
        run(frame=5)


def test_tracking_in_detect_shows_progress_per_frame(nodes, model, comfy):
    """track_ids runs after the frames are detected; it advances the node's bar (and checks Cancel) per frame too."""
    comfy.reset()
    nodes["CartoonSegDetect"]().detect(model, frames(3), 0.0, 2, 128, "binary", False)
    plain = comfy.updates
    comfy.reset()
    nodes["CartoonSegDetect"]().detect(model, frames(3), 0.0, 2, 128, "binary", True)
    assert plain == 3 and comfy.updates == plain + 3


def test_instance_split_by_tracked_id_follows_character(nodes):
    tracked, n_tracks = nodes["CartoonSegTrack"]().track(synthetic_frames(), 0.3, 5, "mask")
    assert n_tracks == 3
    assert [f.ids.tolist() for f in tracked] == [[0, 1, 2], [1, 0]]
    out = nodes["CartoonSegInstanceSplit"]().split(tracked, "index", "1", "id", -1, 0, 0, "image", 0, "binary")
    union = out[3]
    assert out[7] == 2 and union.shape == (2, H, W)
    assert torch.equal(union[0], rect(30, 10, 50, 40)) and torch.equal(union[1], rect(32, 10, 52, 40))


def test_instance_split_crops_fill_resize_dilate(nodes):
    fr = synthetic_frames()
    img = frames(2)
    split = nodes["CartoonSegInstanceSplit"]()
    out = split.split(fr, "index", "0", "position", 0, 4, 32, "white", 3, "binary", image=img)
    crops, crop_masks, union = out[1], out[2], out[3]
    assert crops.shape == (1, 32, 32, 3) and crop_masks.shape == (1, 32, 32)
    assert float(crops[0][crop_masks[0] == 0].min()) == 1.0  # white outside the instance
    assert torch.equal(union[0], rect(0, 0, 13, 23))  # 10x20 box grown by 3 px (clipped at the border)
    out = split.split(fr, "index", "0", "position", 0, 0, 0, "black", -2, "binary")  # no image: mask crops
    assert out[1].shape == (1, 20, 10, 3) and float(out[1].min()) == 1.0
    assert torch.equal(out[3][0], rect(0, 0, 8, 18))  # eroded by 2 px, the image border counts as outside


def test_mask_to_instances(nodes):
    node = nodes["CartoonSegMaskToInstances"]()
    two_blobs = rect(0, 0, 10, 10) + rect(30, 30, 40, 40)
    masks = torch.stack([two_blobs, torch.zeros(H, W), rect(50, 0, 52, 2)])
    inst, count = node.convert(masks, "instances of one image", 0.5, False, 16)
    assert count == 1 and len(inst) == 1 and inst[0].image_size == (H, W)  # empty and 4-px masks dropped
    inst, count = node.convert(masks, "instances of one image", 0.5, True, 16)
    assert count == 2 and inst[0].boxes.tolist() == [[0, 0, 10, 10], [30, 30, 40, 40]]
    inst, count = node.convert(masks, "instances of one image", 0.5, True, 1, image=frames(2))
    assert len(inst) == 2 and count == 6  # the same instances for both frames
    inst, count = node.convert(masks[:2], "one per frame", 0.5, False, 1, image=frames(2))
    assert [len(f) for f in inst] == [1, 0]
    small = masks[:, ::2, ::2]
    inst, _ = node.convert(small, "one per frame", 0.5, False, 1, image=frames(3))
    assert len(inst) == 3 and inst[0].image_size == (H, W)
    with pytest.raises(ValueError, match="one mask per frame"):
        node.convert(masks[:2], "one per frame", 0.5, False, 1, image=frames(3))
    inst, _ = node.convert(rect(0, 0, 5, 5), "instances of one image", 0.5, False, 1)  # [H,W] mask accepted
    assert len(inst[0]) == 1


def test_to_segs_matches_impact_layout(nodes):
    fr = synthetic_frames()
    img = frames(2)
    (segs,) = nodes["CartoonSegToSEGS"]().to_segs(fr, 0, 2.0, 5, "inst_", "binary", image=img)
    (h, w), items = segs
    assert (h, w) == (H, W) and len(items) == 2  # the 8x4 instance is below drop_size 5
    seg = items[0]
    assert type(seg)._fields == ("cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label",
                                 "control_net_wrapper")
    assert seg.control_net_wrapper is None
    assert seg.bbox == (0, 0, 10, 20) and seg.label == "inst_0" and seg.confidence == pytest.approx(0.9)
    # crop 20x40 centred on (5,10) is shifted inside the image: [0,0,20,40]
    assert seg.crop_region == [0, 0, 20, 40]
    x1, y1, x2, y2 = seg.crop_region
    assert seg.cropped_mask.dtype.name == "float32" and seg.cropped_mask.shape == (y2 - y1, x2 - x1)
    assert float(seg.cropped_mask[:20, :10].min()) == 1.0 and float(seg.cropped_mask[:, 10:].max()) == 0.0
    assert tuple(seg.cropped_image.shape) == (1, y2 - y1, x2 - x1, 3)
    assert items[1].crop_region == [20, 0, 60, 48]  # 40x60 wanted, cut to the image height
    assert seg._replace(label="x").label == "x"  # Impact edits SEGs with _replace
    (segs,) = nodes["CartoonSegToSEGS"]().to_segs(fr, 1, 1.0, 1, "char #", "binary")
    assert [s.label for s in segs[1]] == ["char__0", "char__1"] and segs[1][0].cropped_image is None
    with pytest.raises(ValueError, match="out of range"):
        nodes["CartoonSegToSEGS"]().to_segs(fr, 2, 3.0, 10, "inst_", "binary")


def test_impact_crop_region_semantics(pack):
    f = pack.nodes.instances.impact_crop_region
    assert f(100, 100, (40, 40, 60, 60), 3.0) == [20, 20, 80, 80]
    assert f(100, 100, (0, 0, 10, 10), 3.0) == [0, 0, 30, 30]  # shifted right/down, size kept
    assert f(100, 100, (90, 90, 100, 100), 3.0) == [70, 70, 100, 100]
    assert f(50, 40, (0, 0, 50, 40), 2.0) == [0, 0, 50, 40]  # larger than the image: the whole image
    # Impact's truncation would cut the box's last column: the crop always holds the whole box
    assert f(64, 48, (20, 10, 35, 40), 1.05) == [19, 9, 35, 40]
    for factor in (1.0, 1.05, 1.1, 1.3):
        for box in ((3, 10, 6, 20), (20.5, 10.2, 35.7, 40.9), (0, 0, 64, 48), (60, 40, 64, 48)):
            x1, y1, x2, y2 = f(64, 48, box, factor)
            assert 0 <= x1 <= box[0] and 0 <= y1 <= box[1] and box[2] <= x2 <= 64 and box[3] <= y2 <= 48


def test_workflow_files_use_known_nodes(pack):
    core = {"LoadImage", "PreviewImage", "SaveImage", "MaskToImage", "ImageToMask", "Note", "Reroute",
            "PrimitiveNode", "GrowMask", "InvertMask", "ImageBatch", "RepeatImageBatch"}
    files = sorted((REPO / "workflows").glob("*.json"))
    assert files, "workflows/ must ship at least one workflow"
    assert (REPO / "workflows" / "cartoon_segmentation.json").is_file()
    for path in files:
        wf = json.loads(path.read_text())
        assert isinstance(wf.get("nodes"), list) and "links" in wf, f"{path.name} is not a UI-format workflow"
        for node in wf["nodes"]:
            t = node["type"]
            if t in pack.NODE_CLASS_MAPPINGS:
                # the classic frontend's widget slots: one per widget input, plus a control_after_generate slot
                # after seed-like INTs; forceInput widgets are sockets
                spec = pack.NODE_CLASS_MAPPINGS[t].INPUT_TYPES()
                slots = 0
                for section in ("required", "optional"):
                    for name, v in spec.get(section, {}).items():
                        opts = v[1] if len(v) > 1 and isinstance(v[1], dict) else {}
                        if opts.get("forceInput") or not (isinstance(v[0], list) or v[0] in WIDGET_TYPES):
                            continue
                        slots += 1
                        if v[0] == "INT" and (name in ("seed", "noise_seed") or opts.get("control_after_generate")):
                            slots += 1
                assert len(node.get("widgets_values", [])) == slots, f"{path.name}: {t} widgets"
            else:  # other packs' nodes are not allowed; core node names are checked by the real-ComfyUI test
                assert not t.startswith("CartoonSeg"), f"{path.name} uses {t}, which the pack does not register"
                if path.name == "cartoon_segmentation.json":
                    assert t in core, f"{path.name} uses {t}, neither ours nor a core node"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_run_on_comfys_device_then_offload(nodes, monkeypatch, device):
    """'auto' picks ComfyUI's device (and fp16 on a GPU), the networks run there and wait on the CPU after. The CPU
    case runs everywhere, so the spy on the Segmenter call (how the node calls it) cannot rot unseen."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "get_torch_device", lambda: torch.device(device))
    (m,) = nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "refine_last.ckpt", "auto", "auto", False, False)
    assert m.device.type == device and (device == "cpu" or m.precision == "fp16")
    assert next(m.detector.parameters()).device.type == "cpu"  # idle on the offload device
    seen = []
    real = cartoonseg.Segmenter.__call__

    def spy(self, image, **kwargs):
        seen.append(self.device.type)
        return real(self, image, **kwargs)

    monkeypatch.setattr(cartoonseg.Segmenter, "__call__", spy)
    out = nodes["CartoonSegSegment"]().segment(m, frames(2), 0.0, 3, 128, 0.3, True, 64, "binary", False)
    check_segment_outputs(out, 2)
    assert seen == [device, device]
    assert next(m.detector.parameters()).device.type == "cpu" and next(m.refiner.parameters()).device.type == "cpu"
    mm.unload_all_models()


def test_segment_and_refine_defaults_follow_the_refiners_saved_settings(nodes, pack, tmp_path):
    """The widgets' defaults mean "the refiner's own": a fine-tuned refiner saved with refine_size 256 / mask_thr 0.6
    runs at 256 / 0.6 in the nodes as in the library and CLI (None); explicit values still win, and without the
    refiner Segment leaves the threshold to the detector."""
    path = tmp_path / "tuned_refiner.safetensors"
    cartoonseg.save_weights(cartoonseg.build_refiner("tiny", refine_size=256, mask_thr=0.6), path)
    loaders = pack.nodes.loaders
    holder = loaders.CartoonSegModel.from_networks(
        cartoonseg.load_detector(loaders.resolve_model_file("rtmdetl_e60.ckpt", "detector", False)),
        cartoonseg.load_refiner(str(path)), device="cpu", offload_device="cpu")
    made = []  # every Segmenter the nodes build
    segmenter = holder.segmenter
    holder.segmenter = lambda **kw: made.append(segmenter(**kw)) or made[-1]

    def defaults(node_id, *names):
        spec = {**nodes[node_id].INPUT_TYPES()["required"], **nodes[node_id].INPUT_TYPES().get("optional", {})}
        return [spec[n][1]["default"] for n in names]

    thr, size = defaults("CartoonSegSegment", "mask_threshold", "refine_size")
    out = nodes["CartoonSegSegment"]().segment(holder, frames(1), 0.0, 2, 128, thr, True, size, "binary", False)
    assert (made[-1].refine_size, made[-1].mask_thr) == (256, pytest.approx(0.6))
    assert all(f.mask_thr == pytest.approx(0.6) for f in out[0])
    thr, size = defaults("CartoonSegRefine", "mask_threshold", "refine_size")
    out = nodes["CartoonSegRefine"]().refine(holder, frames(1), thr, size, "binary", masks=rect(4, 4, 30, 30)[None])
    assert (made[-1].refine_size, made[-1].mask_thr) == (256, pytest.approx(0.6))
    assert out[0][0].mask_thr == pytest.approx(0.6)
    empty = nodes["CartoonSegRefine"]().refine(holder, frames(1), thr, size, "binary", masks=torch.zeros(1, H, W))
    assert len(empty[0][0]) == 0 and empty[0][0].mask_thr == pytest.approx(0.6)
    nodes["CartoonSegRefine"]().refine(holder, frames(1), 0.45, 96, "binary", masks=rect(4, 4, 30, 30)[None])
    assert (made[-1].refine_size, made[-1].mask_thr) == (96, pytest.approx(0.45))
    out = nodes["CartoonSegSegment"]().segment(holder, frames(1), 0.0, 2, 128, 0.45, False, size, "binary", False)
    assert made[-1].refiner is None and all(f.mask_thr == pytest.approx(0.5) for f in out[0])


def test_refine_bboxes_links_from_bounding_box_and_bbox_outputs(nodes, model):
    """Refine's bboxes input takes both box types: the union "BOUNDING_BOX,BBOX" (what the frontends and the 2025
    executor's validate_node_input split on commas) that also passes the 2024 executor's `received != declared`
    check. Convert Boxes' BBOX value (xyxy lists per frame) then refines like its BOUNDING_BOX value."""
    declared = nodes["CartoonSegRefine"].INPUT_TYPES()["optional"]["bboxes"][0]
    assert json.loads(json.dumps(declared)) == "BOUNDING_BOX,BBOX"

    def linkable_2024(received: str) -> bool:  # ComfyUI 2024 execution.validate_inputs
        return not received != declared

    def linkable_2025(received: str) -> bool:  # ComfyUI 0.3.64 comfy_execution.validation.validate_node_input
        if not received != declared:
            return True
        return bool({t.strip() for t in received.split(",")} & {t.strip() for t in str(declared).split(",")})

    produced = set(nodes["CartoonSegConvertBoxes"].RETURN_TYPES) | set(nodes["CartoonSegInstanceSplit"].RETURN_TYPES)
    for received in ("BOUNDING_BOX", "BBOX"):
        assert received in produced and linkable_2024(received) and linkable_2025(received), received
    for received in ("IMAGE", "MASK", "BOX", "CARTOONSEG_INSTANCES"):
        assert not linkable_2024(received) and not linkable_2025(received), received

    inst = synthetic_frames()
    bbox, bounding_box = nodes["CartoonSegConvertBoxes"]().convert(inst, "xyxy", -1)[:2]
    node = nodes["CartoonSegRefine"]()
    a = node.refine(model, frames(2), 0.3, 64, "soft", bboxes=bbox, prompt_mode="rectangle")
    b = node.refine(model, frames(2), 0.3, 64, "soft", bboxes=bounding_box, prompt_mode="rectangle")
    assert [len(f) for f in a[0]] == [len(f) for f in inst] and torch.equal(a[1], b[1])


def test_model_loader_is_changed_follows_its_files_and_the_holder_refuses_a_changed_file(nodes, weights):
    """ComfyUI calls IS_CHANGED on the class with the node's inputs (2024: map_node_over_list(class_def, ...,
    "IS_CHANGED"); 2025: the same through _async_map_node_over_list): it is keyed on the resolved files' path, size
    and mtime, so a replaced weights file re-runs the loader. A holder whose file changed since the loader checked
    it refuses to read it (one line, saying to queue again) instead of reading unchecked weights."""
    path = weights / "cartoonseg" / "my_refiner.safetensors"
    cls = nodes["CartoonSegModelLoader"]
    assert isinstance(inspect.getattr_static(cls, "IS_CHANGED"), classmethod)
    args = dict(detector="rtmdetl_e60.ckpt", refiner="my_refiner.safetensors", device="cpu", precision="fp32",
                auto_download=False, keep_loaded=False, optimize="fast")
    try:
        cartoonseg.save_weights(cartoonseg.build_refiner("tiny"), path)
        first = cls.IS_CHANGED(**args)
        assert first == cls.IS_CHANGED(**args) and "my_refiner.safetensors" in first
        assert cls.IS_CHANGED(**{**args, "refiner": "none"}) != first
        (holder,) = cls().load(**args)
        cartoonseg.save_weights(cartoonseg.build_refiner("tiny", mask_thr=0.6), path)
        os.utime(path, ns=(1, 1))
        assert cls.IS_CHANGED(**args) != first
        with pytest.raises(RuntimeError, match=r"my_refiner.safetensors changed on disk .*queue the workflow again"):
            holder.refiner
        (fresh,) = cls().load(**args)  # the re-run loader checks and reads the new file
        assert fresh.refiner.config.mask_thr == pytest.approx(0.6)
        fresh.release()
        os.utime(path, ns=(2, 2))
        with pytest.raises(RuntimeError, match="changed on disk"):  # a re-read after ComfyUI unloaded it
            fresh.detector
        path.unlink()
        assert cls.IS_CHANGED(**args).startswith("unresolved")  # never raises; the loader reports the error
    finally:
        path.unlink(missing_ok=True)


def test_alpha_matte_node_names_the_frame_of_an_instance_that_keeps_its_soft_mask(nodes):
    """An instance with nothing to solve from (a 5-px figure: no certain interior beyond the band) keeps its soft
    mask with a warning; the node names the frame, so the same instance index in two frames is not one warning."""
    from cartoonseg import Instances

    image = torch.full((2, 40, 40, 3), 0.8)
    m = torch.zeros(1, 40, 40)
    m[0, 10:30, 18:23] = 1.0
    image[1, 10:30, 18:23] = torch.tensor([0.8, 0.1, 0.1])
    frames_in = [Instances.from_masks(torch.zeros(0, 40, 40)), Instances.from_masks(m)]
    with pytest.warns(UserWarning, match="matting frame 1: instance 0 keeps its soft mask"):
        _, alphas, _, count = nodes["CartoonSegAlphaMatte"]().matte(image, frames_in, 0, "cf")
    assert count == 1 and torch.equal(alphas[0], m[0])
