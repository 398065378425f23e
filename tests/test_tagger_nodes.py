"""Contract tests of the tagger nodes (issue 4) with stubbed ComfyUI modules.

The pack is loaded like ComfyUI loads it (root ``__init__.py`` as a package) under a private name, never as the bare
module ``nodes``. ``folder_paths``, ``comfy.model_management`` and ``comfy.utils`` are minimal stand-ins; the
tagger is the tiny SwinV2 preset with random weights in the Hugging Face folder layout; CLIP is a recording stub.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from _comfy_stub import REPO, ComfyStub, installed, loaded_pack
from safetensors.torch import save_file

from cartoonseg import Instances
from cartoonseg.tagger import NEGATIVE_PROMPT, build_swinv2

PACK = "cartoonseg_pack_tagger_under_test"
OUR_IDS = ("CartoonSegTaggerLoader", "CartoonSegTagInstances", "CartoonSegMergePrompts",
           "CartoonSegInstanceConditioning")
H, W = 40, 56
NAMES = (["general", "sensitive", "questionable", "explicit"] + ["1girl", "long_hair", "star_(symbol)", "猫耳"]
         + [f"general_{i}" for i in range(35)] + ["ah,_so"] + ["hatsune_miku", "rem_(re:zero)"]
         + [f"chara_{i}" for i in range(4)])
CATEGORIES = [9] * 4 + [0] * 40 + [4] * 6


def write_tagger(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architecture": "swinv2_base_window8_256", "num_classes": 50,
              "model_args": {"img_size": 448, "window_size": 14, "act_layer": "gelu_tanh", "embed_dim": 16,
                             "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8]}}
    (folder / "config.json").write_text(json.dumps(config))
    with open(folder / "selected_tags.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        writer.writerows([i, n, c, 0] for i, (n, c) in enumerate(zip(NAMES, CATEGORIES)))
    torch.manual_seed(0)
    save_file(build_swinv2("tiny").state_dict(), str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_tagger(root / "cartoonseg" / "tagger" / "tiny")
    with installed(ComfyStub(root)) as s:
        yield s


@pytest.fixture(scope="module")
def pack(state):
    with loaded_pack(PACK) as module:
        yield module


@pytest.fixture(scope="module")
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def tagger(nodes):
    (handle,) = nodes["CartoonSegTaggerLoader"]().load("tiny", "auto", "auto", False)
    return handle


def rect(x1, y1, x2, y2):
    m = torch.zeros(H, W)
    m[y1:y2, x1:x2] = 1.0
    return m


def frames():
    f0 = Instances.from_masks(torch.stack([rect(2, 2, 20, 30), rect(30, 5, 50, 38)]))
    f1 = Instances.from_masks(torch.stack([rect(10, 10, 30, 30)]))
    f1.ids = torch.tensor([7])
    return [f0, f1]


class FakeClip:
    """Records the texts; returns a [1,3,4] 'cond' whose values encode the call index."""

    def __init__(self, scheduled: bool = True) -> None:
        self.texts: list[str] = []
        if not scheduled:
            self.encode_from_tokens_scheduled = None
            del self.encode_from_tokens_scheduled

    def tokenize(self, text):
        self.texts.append(text)
        return {"text": text}

    def encode_from_tokens_scheduled(self, tokens):
        return [[torch.full((1, 3, 4), float(len(self.texts))), {"pooled_output": torch.zeros(1, 4)}]]

    def encode_from_tokens(self, tokens, return_pooled=False):
        return torch.full((1, 3, 4), float(len(self.texts))), torch.zeros(1, 4)


# ---------------------------------------------------------------------------------------------- contract
def test_registration_and_metadata(pack):
    mappings, names = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    for node_id in OUR_IDS:
        cls = mappings[node_id]
        assert node_id in names and cls.DESCRIPTION
        assert cls.CATEGORY == ("CartoonSeg/loaders" if node_id.endswith("Loader") else "CartoonSeg/tagger")
        spec = cls.INPUT_TYPES()
        inputs = {**spec["required"], **spec.get("optional", {})}
        params = list(inspect.signature(getattr(cls, cls.FUNCTION)).parameters)[1:]
        assert params == list(inputs), node_id
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert len(getattr(cls, "OUTPUT_IS_LIST", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    assert mappings["CartoonSegTaggerLoader"].RETURN_TYPES == ("CARTOONSEG_TAGGER",)
    assert mappings["CartoonSegInstanceConditioning"].RETURN_TYPES == ("CONDITIONING",)
    choices = mappings["CartoonSegTaggerLoader"].INPUT_TYPES()["required"]["tagger"][0]
    assert choices[0] == "SmilingWolf/wd-swinv2-tagger-v3" and "tiny" in choices


def test_tag_constants_have_one_home_in_the_library(pack):
    """nodes/tagger.py (and nodes/kenburns.py) kept literal copies of the default exclude list, the background
    suffix, the default repo, the precisions and the negative prompt, which drift from the library's; they now come
    from torch-model-free library modules (cartoonseg.tags, cartoonseg.inpaint.diffusion, cartoonseg.device)."""
    import ast

    from cartoonseg import tags
    from cartoonseg.device import PRECISION_CHOICES
    from cartoonseg.inpaint.diffusion import NEGATIVE_PROMPT as NEGATIVE, PROMPT_SUFFIX
    from cartoonseg.tagger import BACKGROUND_SUFFIX, DEFAULT_EXCLUDE, DEFAULT_TAGGER_REPO, join_tag_list

    module = sys.modules[PACK + ".nodes.tagger"]
    assert module.DEFAULT_EXCLUDE is DEFAULT_EXCLUDE is tags.DEFAULT_EXCLUDE
    assert module.BACKGROUND_SUFFIX is BACKGROUND_SUFFIX is PROMPT_SUFFIX
    assert module.DEFAULT_REPO is DEFAULT_TAGGER_REPO is tags.DEFAULT_TAGGER_REPO
    assert module.PRECISIONS is PRECISION_CHOICES
    required = pack.NODE_CLASS_MAPPINGS["CartoonSegTagInstances"].INPUT_TYPES()["required"]
    assert tags.parse_tag_list(required["exclude_tags"][1]["default"]) == list(DEFAULT_EXCLUDE)
    assert required["exclude_tags"][1]["default"] == join_tag_list(DEFAULT_EXCLUDE)
    merge = pack.NODE_CLASS_MAPPINGS["CartoonSegMergePrompts"].INPUT_TYPES()["required"]
    assert merge["background_suffix"][1]["default"] == PROMPT_SUFFIX
    assert required["general_threshold"][1]["default"] is tags.DEFAULT_GENERAL_THRESHOLD
    assert required["character_threshold"][1]["default"] is tags.DEFAULT_CHARACTER_THRESHOLD

    def norm(value):
        return tuple(tags.parse_tag_list(value)) if isinstance(value, str) else tuple(value)

    library = {norm(v) for v in (DEFAULT_EXCLUDE, PROMPT_SUFFIX, DEFAULT_TAGGER_REPO, PRECISION_CHOICES, NEGATIVE)}
    for name in ("tagger.py", "kenburns.py"):
        for node in ast.parse((REPO / "nodes" / name).read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.Tuple)):
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    continue
                if isinstance(value, str) or all(isinstance(v, str) for v in value):
                    assert norm(value) not in library, f"nodes/{name}: {ast.unparse(node)} copies a library constant"
    # the shared home imports only the standard library: the tagger, the inpainting and the nodes all import it
    # without an import cycle and without model code
    tree = ast.parse((REPO / "cartoonseg" / "tags.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m.split(".")[0] for m in imported} <= {"__future__", "re", "collections"}


def test_loader(tagger, nodes, state, monkeypatch):
    assert tagger.tagger.image_size == 448 and tagger.device.type == "cpu"
    loader = nodes["CartoonSegTaggerLoader"]()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as err:
        loader.load("SmilingWolf/wd-swinv2-tagger-v3", "cpu", "fp32", True)
    expected_dir = state.models_dir / "cartoonseg" / "tagger" / "wd-swinv2-tagger-v3"
    assert "huggingface.co/SmilingWolf/wd-swinv2-tagger-v3/resolve/main/" in str(err.value)
    assert str(expected_dir) in str(err.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")

    import huggingface_hub

    source = state.models_dir / "cartoonseg" / "tagger" / "tiny"

    def fake_download(repo_id, filename, revision="main", local_dir=None, **kwargs):
        shutil.copyfile(source / filename, Path(local_dir) / filename)
        return str(Path(local_dir) / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("CARTOONSEG_NO_DOWNLOAD", "1")
    with pytest.raises(RuntimeError, match="not allowed|disabled"):
        loader.load("SmilingWolf/wd-swinv2-tagger-v3", "cpu", "fp32", True)
    monkeypatch.delenv("CARTOONSEG_NO_DOWNLOAD")
    (handle,) = loader.load("SmilingWolf/wd-swinv2-tagger-v3", "cpu", "fp32", True)
    assert Path(handle.path) == expected_dir and (expected_dir / "model.safetensors").is_file()
    shutil.rmtree(expected_dir)


def test_tag_instances(nodes, tagger, state):
    node = nodes["CartoonSegTagInstances"]()
    image = torch.rand(2, H, W, 3, generator=torch.Generator().manual_seed(0))
    state.updates = 0
    out, tags, background = node.tag(tagger, image, frames(), 0.0, 0.0, False, False,
                                     "simple_background, Long Hair, STAR_(SYMBOL)", True)
    assert len(out) == 2 and [len(f) for f in out] == [2, 1] and state.updates == 2
    assert len(tags) == 3 and all(isinstance(t, str) and t for t in tags)
    assert "long_hair" not in out[0].extras["tags"][0] and "1girl" in out[0].extras["tags"][0]
    # matched like Merge Prompts' exclude list: any case, spaces and underscores alike (it used to be exact)
    assert "star_(symbol)" not in out[0].extras["tags"][0] and "star (symbol)" not in tags[0]
    assert "1girl" in tags[0] and "\\(" not in tags[0] and "猫耳" in tags[0]  # display form: no escaping
    assert set(out[1].extras["character_tags"][0]) == {n for n, c in zip(NAMES, CATEGORIES) if c == 4}
    assert len(out[1].extras["rating"][0]) == 4
    assert len(background.split("\n")) == 2 and "1girl" in background
    # raw and without character names, so Merge Prompts' own options decide the background prompt's form
    characters = {n for n, c in zip(NAMES, CATEGORIES) if c == 4}
    bg_tags = [t for line in background.split("\n") for t in line.split(", ") if t]
    assert "star_(symbol)" not in bg_tags and "1girl" in bg_tags and not characters & set(bg_tags)
    _, _, background = node.tag(tagger, image, frames(), 0.0, 0.0, False, False, "", True)
    # a comma inside a tag name survives the background line (it used to split into "ah" and "_so" in Merge Prompts)
    assert "ah\\,_so" in background.split("\n")[0].split(", ")
    merge = nodes["CartoonSegMergePrompts"]()
    raw = merge.merge(out, "", "{tags}", True, "", False, False, 0, "", "inst_", 0, background)[2]
    assert "ah,_so" in raw and "ah, _so" not in raw
    assert "ah,_so" not in merge.merge(out, "", "{tags}", True, "AH\\, SO", False, False, 0, "", "inst_", 0,
                                       background)[2]
    for underscores, expected in ((False, "star_\\(symbol\\)"), (True, "star \\(symbol\\)")):
        prompt = merge.merge(out, "", "{tags}", True, "", underscores, True, 0, "no_humans", "inst_", 0,
                             background)[2]
        assert expected in prompt.split(", ") and not any(c in prompt for c in characters)
    plate = torch.full((1, 20, 20, 3), 0.5)
    _, _, bg2 = node.tag(tagger, image[:1], frames(), 0.99, 0.99, True, True, "", False, plate)
    assert bg2 == "\n"  # background not tagged: one empty line per frame
    with pytest.raises(TypeError, match="CARTOONSEG_TAGGER"):
        node.tag("tagger", image, frames(), 0.35, 0.85, False, False, "", True)
    with pytest.raises(ValueError, match="instances has 2 frames but image has 3"):
        node.tag(tagger, torch.rand(3, H, W, 3), frames(), 0.35, 0.85, False, False, "", True)
    with pytest.raises(ValueError, match=f"instances are for a {W}x{H} image but the image is {W}x{H + 1}"):
        node.tag(tagger, torch.rand(1, H + 1, W, 3), frames(), 0.35, 0.85, False, False, "", True)


def test_tag_instances_pairs_frames_as_every_node_does(nodes, tagger):
    """One instances frame for a clip tags every frame of the clip (it used to tag the first frame only, counting
    frames by the instances); one picture for several instances frames tags each of them on that picture."""
    node = nodes["CartoonSegTagInstances"]()
    clip = torch.rand(3, H, W, 3, generator=torch.Generator().manual_seed(1))
    one = frames()[:1]
    out, tags, background = node.tag(tagger, clip, one, 0.0, 0.0, False, False, "", True)
    assert len(out) == 3 and [len(f) for f in out] == [2, 2, 2] and len(tags) == 6
    assert len(background.split("\n")) == 3
    for i in range(3):  # frame i is tagged on picture i, with the one frame's instances
        alone = node.tag(tagger, clip[i:i + 1], one, 0.0, 0.0, False, False, "", True)
        assert alone[0][0].extras["tags"] == out[i].extras["tags"] and alone[2] == background.split("\n")[i]
    out, _, background = node.tag(tagger, clip[:1], frames(), 0.0, 0.0, False, False, "", True)
    assert [len(f) for f in out] == [2, 1] and len(background.split("\n")) == 2
    plates = torch.full((2, H, W, 3), 0.5)
    with pytest.raises(ValueError, match="background has 2 frames but image has 3"):
        node.tag(tagger, clip, one, 0.0, 0.0, False, False, "", True, plates)


def tagged_frames():
    f0, f1 = frames()
    f0.extras["tags"] = [{"1girl": 0.9, "hatsune_miku": 0.95, "star_(symbol)": 0.5}, {"猫耳": 0.6}]
    f0.extras["character_tags"] = [{"hatsune_miku": 0.95}, {}]
    f1.extras["tags"] = [{}]
    return [f0, f1]


def test_merge_prompts(nodes):
    node = nodes["CartoonSegMergePrompts"]()
    out, prompts, background, negative, wildcard = node.merge(
        tagged_frames(), "pixar style", "{style}, {tags}", True, "", True, True, 0,
        "high quality, masterpiece, no_humans", "inst_", 0, "scenery, sky\nsky, tree")
    assert prompts == ["pixar style, 1girl, star \\(symbol\\)", "pixar style, 猫耳", "pixar style"]
    assert out[0].extras["prompt"] == prompts[:2] and out[1].extras["prompt"] == prompts[2:]
    assert background == "scenery, sky, tree, high quality, masterpiece, no_humans"
    assert negative == NEGATIVE_PROMPT
    assert wildcard == "[LAB]\n[inst_0] pixar style, 1girl, star \\(symbol\\)\n[inst_1] pixar style, 猫耳"
    _, prompts, background, _, wildcard = node.merge(
        tagged_frames(), "", "{tags}", False, "1girl", False, False, 1, "", "char.", 1)
    assert prompts == ["hatsune_miku", "猫耳", ""] and background == ""  # max_tags=1, characters kept
    assert wildcard == "[LAB]\n[char.7] "
    with pytest.raises(ValueError, match="frame 5"):
        node.merge(tagged_frames(), "", "{tags}", True, "", True, True, 0, "", "inst_", 5)
    with pytest.raises(ValueError, match="tags"):
        node.merge(frames(), "", "{tags}", True, "", True, True, 0, "", "inst_", 0)


@pytest.mark.parametrize("scheduled", [True, False])
def test_instance_conditioning_masks_follow_instances(nodes, scheduled):
    merged, *_ = nodes["CartoonSegMergePrompts"]().merge(
        tagged_frames(), "style", "{style}, {tags}", True, "", True, True, 0, "", "inst_", 0)
    merged[0].masks[1, 0, 0] = 0.7  # soft value above mask_thr still counts as the instance
    clip = FakeClip(scheduled)
    (cond,) = nodes["CartoonSegInstanceConditioning"]().encode(
        clip, merged, "scenery", 0.8, 0.5, "outside instances", "mask bounds", 0)
    assert clip.texts == ["style, 1girl, star \\(symbol\\)", "style, 猫耳", "scenery"]
    assert len(cond) == 3
    binary = merged[0].binary.float()
    for k in range(2):
        tensor, options = cond[k]
        assert tensor.shape == (1, 3, 4) and float(tensor[0, 0, 0]) == k + 1
        assert torch.equal(options["mask"], binary[k][None]) and options["mask"].shape == (1, H, W)
        assert options["mask_strength"] == 0.8 and options["set_area_to_bounds"] is True
        assert "pooled_output" in options
    bg_mask = cond[2][1]["mask"]
    assert torch.equal(bg_mask, (1 - binary.amax(0))[None]) and cond[2][1]["set_area_to_bounds"] is False
    assert cond[2][1]["mask_strength"] == 0.5
    assert float((bg_mask[0] * binary.amax(0)).sum()) == 0.0  # background never overlaps an instance
    # frame 1 (no prompts, fall back to tags -> empty) gives only the whole-image background
    clip = FakeClip(scheduled)
    (cond,) = nodes["CartoonSegInstanceConditioning"]().encode(
        clip, tagged_frames(), "", 1.0, 1.0, "whole image", "default", 1)
    assert clip.texts == [""] and len(cond) == 1 and torch.equal(cond[0][1]["mask"], torch.ones(1, H, W))


def test_pack_does_not_shadow_comfy_nodes(pack):
    assert "nodes" not in sys.modules or not getattr(sys.modules["nodes"], "__file__", "").startswith(str(REPO))
    assert os.path.isfile(REPO / "nodes" / "tagger.py")


def test_loader_is_changed_follows_the_folder_and_the_holder_refuses_changed_files(nodes, state, tmp_path):
    """IS_CHANGED (a classmethod called with the node's inputs) is keyed on the tagger folder's files, and a holder
    whose files changed since the loader ran refuses to read them."""
    folder = Path(state.models_dir) / "cartoonseg" / "tagger" / "changing"
    cls = nodes["CartoonSegTaggerLoader"]
    try:
        shutil.copytree(Path(state.models_dir) / "cartoonseg" / "tagger" / "tiny", folder)
        first = cls.IS_CHANGED(tagger="changing", device="cpu", precision="fp32", auto_download=False)
        assert first == cls.IS_CHANGED(tagger="changing", device="cpu", precision="fp32", auto_download=False)
        (holder,) = cls().load("changing", "cpu", "fp32", False)
        os.utime(folder / "selected_tags.csv", ns=(1, 1))
        assert cls.IS_CHANGED(tagger="changing", device="cpu", precision="fp32", auto_download=False) != first
        with pytest.raises(RuntimeError, match="selected_tags.csv changed on disk"):
            holder.tagger
    finally:
        shutil.rmtree(folder, ignore_errors=True)
