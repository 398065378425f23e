"""WD SwinV2 v3 tagger (issue 4): golden parity, loading rules, tag selection, per-instance tagging, prompts, CLI.

Golden data are read in place from ``../shared/reference`` (``wd_swinv2_v3_*``, ``wd_tagger_preprocess_golden*``);
tolerances are the ones documented in ``wd_swinv2_v3_tiny_golden.json`` (``suggested_tolerances``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cartoonseg import Instances
from cartoonseg.tagger import (
    BACKGROUND_SUFFIX,
    NEGATIVE_PROMPT,
    SWINV2_PRESETS,
    PromptOptions,
    TaggerUnavailableError,
    TagLabels,
    WDTagger,
    background_image,
    background_prompt,
    build_swinv2,
    config_from_timm,
    format_tag,
    format_tags,
    impact_wildcard,
    instance_crops,
    instance_label,
    instance_prompts,
    load_tagger,
    mcut_threshold,
    merge_prompt,
    parse_tag_list,
    prepare_image,
    preprocess,
    resolve_tagger_dir,
    tag_instances,
)
from cartoonseg.tagger import download as tagger_download
from cartoonseg.models.swinv2 import filter_timm_swinv2, load_swinv2_state_dict

TINY_KWARGS = {
    "img_size": 448, "window_size": 14, "act_layer": "gelu_tanh", "embed_dim": 16,
    "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8], "mlp_ratio": 4.0, "patch_size": 4,
    "drop_path_rate": 0.0, "pretrained_window_sizes": [0, 0, 0, 0],
}  # fmt: skip
GENERAL = ["1girl", "solo", "long_hair", "star_(symbol)", "^_^", "simple_background", "white_background",
           "猫耳", 'quote"tag', "comma,tag", "hatsune_miku_(cosplay)"] + [f"general_{i}" for i in range(25)]
CHARACTERS = ["hatsune_miku", "kagamine_rin", "rem_(re:zero)"] + [f"character_{i}" for i in range(7)]
RATINGS = ["general", "sensitive", "questionable", "explicit"]


def write_labels(path: Path) -> TagLabels:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["tag_id", "name", "category", "count"])
    for i, name in enumerate(RATINGS):
        writer.writerow([9999999 - i, name, 9, 0])
    for i, name in enumerate(GENERAL):
        writer.writerow([100 + i, name, 0, 1000 - i])
    for i, name in enumerate(CHARACTERS):
        writer.writerow([500 + i, name, 4, 100 - i])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return TagLabels.from_csv_text(buffer.getvalue())


def tiny_config_json(num_classes: int = 50) -> dict:
    return {"architecture": "swinv2_base_window8_256", "num_classes": num_classes, "num_features": 128,
            "global_pool": "avg", "model_args": dict(TINY_KWARGS)}


def make_tagger_dir(folder: Path, weights: Path | None = None, seed: int = 0) -> Path:
    """A tagger folder in the HF layout with the tiny architecture (golden weights when given)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(tiny_config_json()))
    write_labels(folder / "selected_tags.csv")
    if weights is not None:
        shutil.copyfile(weights, folder / "model.safetensors")
    else:
        torch.manual_seed(seed)
        save_file(build_swinv2("tiny").state_dict(), str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def golden(reference):
    return {
        "weights": reference / "wd_swinv2_v3_tiny_golden_weights.safetensors",
        "io": load_file(str(reference / "wd_swinv2_v3_tiny_golden_io.safetensors")),
        "meta": json.loads((reference / "wd_swinv2_v3_tiny_golden.json").read_text()),
        "keys": json.loads((reference / "wd_swinv2_v3_keys.json").read_text()),
    }


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory):
    folder = make_tagger_dir(tmp_path_factory.mktemp("tagger") / "tiny")
    return load_tagger(folder)


# ---------------------------------------------------------------------------------------------- architecture
def test_full_architecture_matches_timm_key_manifest(golden):
    manifest = golden["keys"]
    with torch.device("meta"):
        model = build_swinv2("wd-v3")
    state = model.state_dict()
    assert [[k, list(v.shape)] for k, v in state.items()] == [[k, list(s)] for k, s in manifest["state_dict"]]
    assert sum(v.numel() for v in state.values()) == manifest["num_parameters"] == 98_026_341
    buffers = {name for name, _ in model.named_buffers()}
    for name, shape, _ in manifest["non_persistent_buffers_not_in_checkpoint"]["buffers"]:
        assert name in buffers and name not in state
        assert list(dict(model.named_buffers())[name].shape) == list(shape)
    # the stage-3 blocks are single unshifted windows, every other odd block is shifted with a mask
    for info in manifest["geometry_per_block_at_448"]:
        stage, block = int(info["block"].split(".")[1]), int(info["block"].split(".")[3])
        module = model.layers[stage].blocks[block]
        assert module.window == info["window"][0] and module.shift == info["shift"][0]
        assert (module.attn_mask is not None) == info["has_attn_mask"]


def test_config_from_timm_reproduces_presets(golden):
    assert config_from_timm(golden["keys"]["config_json_of_hf_repo"]) == SWINV2_PRESETS["wd-v3"]
    kwargs = golden["meta"]["constructor_kwargs"]
    tiny = config_from_timm({"architecture": "swinv2_base_window8_256", "num_classes": kwargs["num_classes"],
                             "model_args": {k: v for k, v in kwargs.items() if k not in ("num_classes", "in_chans")}})
    assert tiny == SWINV2_PRESETS["tiny"]
    v2 = config_from_timm({"architecture": "swinv2_base_window8_256", "num_classes": 9083,
                           "model_args": {"img_size": 448, "window_size": 14}})
    assert v2.act == "gelu" and v2.num_classes == 9083  # timm's default act (the v2 tagger)
    with pytest.raises(ValueError, match="architecture"):
        config_from_timm({"architecture": "vit_base_patch16_224", "num_classes": 3})
    with pytest.raises(ValueError, match="pretrained_window_sizes"):
        config_from_timm({"architecture": "swinv2_base_window8_256", "num_classes": 3,
                          "model_args": {"pretrained_window_sizes": [12, 12, 12, 6]}})
    with pytest.raises(ValueError, match="not supported"):
        config_from_timm({"architecture": "swinv2_base_window8_256", "num_classes": 3, "model_args": {"foo": 1}})


# ---------------------------------------------------------------------------------------------- golden parity
def _golden_model(golden, dtype=torch.float32):
    model = build_swinv2("tiny").eval()
    load_swinv2_state_dict(model, filter_timm_swinv2(load_file(str(golden["weights"]))))
    return model.to(dtype)


def test_golden_tiny_fp32_intermediates_and_logits(golden):
    io_, tol = golden["io"], golden["meta"]["suggested_tolerances"]["fp32_reimpl_vs_golden"]
    model = _golden_model(golden)
    errors = {}
    with torch.no_grad():
        x = model.patch_embed(io_["input"])
        errors["patch_embed_out_nhwc"] = (x - io_["patch_embed_out_nhwc"]).abs().max().item()
        for i, stage in enumerate(model.layers):
            x = stage(x)
            errors[f"stage{i}_out_nhwc"] = (x - io_[f"stage{i}_out_nhwc"]).abs().max().item()
        x = model.norm(x)
        errors["final_norm_out_nhwc"] = (x - io_["final_norm_out_nhwc"]).abs().max().item()
        pooled = x.mean(dim=(1, 2))
        errors["pre_logits_pooled"] = (pooled - io_["pre_logits_pooled"]).abs().max().item()
        logits = model(io_["input"])
        attn = model.layers[0].blocks[0].attn
        assert torch.equal(attn.relative_position_index, io_["dbg.layers.0.blocks.0.relative_position_index"])
        torch.testing.assert_close(attn.relative_coords_table, io_["dbg.layers.0.blocks.0.relative_coords_table"])
        torch.testing.assert_close(attn.position_bias(), io_["dbg.layers.0.blocks.0.rel_pos_bias_16sigmoid"])
        torch.testing.assert_close(model.layers[3].blocks[1].attn.position_bias(),
                                   io_["dbg.layers.3.blocks.1.rel_pos_bias_16sigmoid"])
        assert torch.equal(model.layers[2].blocks[1].attn_mask, io_["dbg.layers.2.blocks.1.attn_mask"])
    print("tagger golden fp32 max errors:", errors)
    assert max(errors.values()) < tol["intermediates_atol"], errors
    assert (logits - io_["logits"]).abs().max().item() < tol["logits_atol"]
    assert (logits.sigmoid() - io_["sigmoid"]).abs().max().item() < tol["sigmoid_atol"]


def test_golden_tiny_fp64_matches_reference(golden):
    io_ = golden["io"]
    model = _golden_model(golden, torch.float64)
    with torch.no_grad():
        logits = model(io_["input"].double())
    atol = golden["meta"]["suggested_tolerances"]["fp64_reimpl_vs_fp64_reference"]["atol"]
    assert (logits - io_["logits_fp64_reference"]).abs().max().item() < atol
    assert (logits.sigmoid() - io_["sigmoid_fp64_reference"]).abs().max().item() < atol


def test_golden_through_load_tagger_and_uint8_input(golden, tmp_path):
    """The public path: folder -> load_tagger -> RGB uint8 image -> preprocessing -> sigmoid."""
    io_ = golden["io"]
    tagger = load_tagger(make_tagger_dir(tmp_path / "golden", golden["weights"]))
    assert isinstance(tagger, WDTagger) and tagger.image_size == 448
    torch.testing.assert_close(tagger.logits(io_["input"]), io_["logits"], atol=1e-4, rtol=0)
    rgb = io_["input_uint8_bgr_nhwc"].flip(-1)  # the golden images are stored BGR; the public API takes RGB
    probs = tagger.probs([rgb[0], rgb[1].numpy()])
    assert (probs - io_["sigmoid"]).abs().max().item() < 2e-5
    result = tagger.select(probs[0], general_threshold=0.5, character_threshold=0.5)
    expected = {tagger.labels.names[i] for i in range(4, 50) if io_["sigmoid"][0, i] > 0.5}
    assert set(result.tags) == expected
    assert list(result.rating) == RATINGS


def test_golden_tiny_bf16_within_documented_tolerance(golden):
    io_ = golden["io"]
    model = _golden_model(golden, torch.bfloat16)
    with torch.no_grad():
        sigmoid = model(io_["input"][:1].bfloat16()).float().sigmoid()
    atol = golden["meta"]["suggested_tolerances"]["bf16_sigmoid_atol"]
    assert (sigmoid - io_["sigmoid"][:1]).abs().max().item() < atol


def test_erf_gelu_and_rgb_order_are_detected(golden):
    """The golden is sensitive to the two classic mistakes, so the parity tests above can fail."""
    io_ = golden["io"]
    model = _golden_model(golden)
    with torch.no_grad():
        rgb_err = (model(io_["input"][:1].flip(1)) - io_["logits"][:1]).abs().max().item()
        for module in model.modules():
            if isinstance(module, torch.nn.GELU):
                module.approximate = "none"
        erf_err = (model(io_["input"][:1]) - io_["logits"][:1]).abs().max().item()
    assert rgb_err > 0.1 and erf_err > 2e-4


# ---------------------------------------------------------------------------------------------- loading
def test_strict_loading_reports_key_diff(golden):
    state = load_file(str(golden["weights"]))
    model = build_swinv2("tiny")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    wrapped["state_dict"]["module.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(196, 196)
    load_swinv2_state_dict(model, filter_timm_swinv2(wrapped))  # prefix and rebuilt buffers are handled
    broken = dict(state)
    del broken["head.fc.bias"]
    broken["extra.weight"] = torch.zeros(1)
    broken["norm.weight"] = torch.zeros(7)
    with pytest.raises(RuntimeError, match=r"1 missing \[head.fc.bias\].*1 unexpected \[extra.weight\].*norm.weight"):
        load_swinv2_state_dict(model, broken)
    with pytest.raises(RuntimeError, match="missing"):
        load_swinv2_state_dict(build_swinv2(dataclasses.replace(SWINV2_PRESETS["tiny"], depths=(2, 2, 4, 2))), state)


def test_label_file_with_a_byte_order_mark(tmp_path):
    """Spreadsheet programs save CSV with a UTF-8 BOM; the header's first column used to read '\\ufeffname'."""
    from cartoonseg.tagger import load_labels

    path = tmp_path / "selected_tags.csv"
    path.write_bytes("name,category\n1girl,0\ngeneral,9\n".encode("utf-8-sig"))
    labels = load_labels(path)
    assert labels.names == ("1girl", "general") and labels.categories == (0, 9)



def test_label_file_with_a_repeated_name_is_refused(tmp_path):
    """Two outputs with one name used to load; their {name: prob} entries then kept only one probability, the lower
    one (the sort put it last), with no message. Real label files have unique names."""
    from cartoonseg.tagger import load_labels

    path = tmp_path / "selected_tags.csv"
    path.write_text("tag_id,name,category,count\n1,general,9,0\n2,1girl,0,9\n3,solo,0,8\n4,1girl,4,7\n",
                    encoding="utf-8")
    with pytest.raises(ValueError, match=r"'1girl' \(lines 3, 5\)") as error:
        load_labels(path)
    assert str(path) in str(error.value) and "solo" not in str(error.value)
    # a rating and a tag of the same name land in different dicts (TagResult.rating vs .general): allowed
    labels = TagLabels.from_csv_text("name,category\ngeneral,9\ngeneral,0\n")
    assert labels.names == ("general", "general")

def test_load_tagger_rejects_bad_folders(tmp_path):
    folder = make_tagger_dir(tmp_path / "t")
    cfg = tiny_config_json(num_classes=51)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_classes=51.*50 tags"):
        load_tagger(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_tagger(folder)
    (folder / "config.json").write_text(json.dumps(tiny_config_json()))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="cannot read tagger weights"):
        load_tagger(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_tagger(folder)
    with pytest.raises(ValueError, match="precision"):
        load_tagger(folder, precision="int8")


def test_resolve_tagger_dir_downloads_from_fake_hub(tmp_path, monkeypatch):
    hub = make_tagger_dir(tmp_path / "hub")
    calls = []

    def fake_download(repo_id, filename, revision="main", local_dir=None, **kwargs):
        calls.append((repo_id, filename, revision))
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(hub / filename, Path(local_dir) / filename)
        return str(Path(local_dir) / filename)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    work = tmp_path / "work"  # files of the same names in the working directory must not stand in for them
    work.mkdir()
    (work / "config.json").write_text("{}")
    (work / "model.safetensors").write_bytes(b"unrelated")
    monkeypatch.chdir(work)
    folder = resolve_tagger_dir("SmilingWolf/wd-swinv2-tagger-v3", download_dir=tmp_path / "dl")
    assert folder == tmp_path / "dl" / "wd-swinv2-tagger-v3"
    assert sorted(c[1] for c in calls) == ["config.json", "model.safetensors", "selected_tags.csv"]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(c[1] for c in calls)
    assert load_tagger("SmilingWolf/wd-swinv2-tagger-v3", download_dir=tmp_path / "dl").image_size == 448
    assert len(calls) == 3  # present files are not fetched again

    # sha256 is checked when known
    monkeypatch.setitem(tagger_download.KNOWN_SHA256, ("Owner/other", "selected_tags.csv"), "0" * 64)
    with pytest.raises(TaggerUnavailableError, match="sha256"):
        resolve_tagger_dir("Owner/other", download_dir=tmp_path / "dl2")

    # offline: no call, the error names the URL and the expected path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(calls)
    with pytest.raises(TaggerUnavailableError) as err:
        resolve_tagger_dir("SmilingWolf/wd-swinv2-tagger-v3", download_dir=tmp_path / "offline")
    message = str(err.value)
    assert "https://huggingface.co/SmilingWolf/wd-swinv2-tagger-v3/resolve/main/" in message
    assert str(tmp_path / "offline" / "wd-swinv2-tagger-v3") in message
    assert len(calls) == before
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(TaggerUnavailableError):
        resolve_tagger_dir("SmilingWolf/wd-swinv2-tagger-v3", download_dir=tmp_path / "no", allow_download=False)
    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_tagger_dir("not a repo id", download_dir=tmp_path)


# ---------------------------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("case,png", [("down", "down_1000x700_rgba"), ("up", "up_300x200_rgba")])
def test_preprocess_golden(reference, case, png):
    golden = load_file(str(reference / "wd_tagger_preprocess_golden.safetensors"))
    image = Image.open(reference / f"wd_tagger_preprocess_golden_{png}.png")
    bgr = prepare_image(image)
    u8_err = (torch.from_numpy(bgr).int() - golden[f"{case}.space_onnx_input_nhwc_bgr_0_255"][0].int()).abs().max()
    x = preprocess(image)
    f_err = (x - golden[f"{case}.timm_input_nchw_bgr_norm"]).abs().max()
    print(f"preprocess {case}: uint8 max err {int(u8_err)}, float max err {float(f_err)}")
    assert int(u8_err) == 0 and float(f_err) == 0.0
    rgba = np.asarray(image)
    assert torch.equal(preprocess(rgba), x)  # numpy RGBA path
    assert torch.equal(preprocess(torch.from_numpy(rgba)), x)  # torch uint8 path


def test_preprocess_input_kinds():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    x = preprocess(rgb)
    assert x.shape == (1, 3, 448, 448) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(preprocess(torch.from_numpy(rgb).float() / 255), x)  # ComfyUI float frame
    grey = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    assert torch.equal(preprocess(grey), preprocess(np.repeat(grey[:, :, None], 3, 2)))
    nan = np.full((8, 8, 3), np.nan, dtype=np.float32)
    assert torch.equal(preprocess(nan), preprocess(np.zeros((8, 8, 3), np.uint8)))
    padded = prepare_image(np.zeros((10, 20, 3), np.uint8), size=20)  # no resize at model size, white pad rows
    assert (padded[:5] == 255).all() and (padded[5:15] == 0).all() and (padded[15:] == 255).all()
    transparent = np.zeros((4, 4, 4), np.uint8)
    assert (prepare_image(transparent, size=4) == 255).all()  # alpha 0 -> white
    with pytest.raises(ValueError, match="empty"):
        preprocess(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        preprocess(np.zeros((5, 5, 2), np.uint8))
    with pytest.raises(TypeError):
        preprocess(np.zeros((5, 5, 3), np.int32))
    with pytest.raises(TypeError):
        preprocess("image.png")


# ---------------------------------------------------------------------------------------------- selection
def _probs(tagger: WDTagger, values: dict[str, float]) -> torch.Tensor:
    p = torch.zeros(len(tagger.labels))
    for name, v in values.items():
        p[tagger.labels.names.index(name)] = v
    return p


def test_tag_selection_thresholds_ratings_and_sorting(tiny_tagger):
    p = _probs(tiny_tagger, {"general": 0.7, "sensitive": 0.2, "1girl": 0.9, "solo": 0.35, "long_hair": 0.36,
                             "猫耳": 0.6, "hatsune_miku": 0.86, "kagamine_rin": 0.84, "rem_(re:zero)": 0.5})
    r = tiny_tagger.select(p)
    assert list(r.general) == ["1girl", "猫耳", "long_hair"]  # strict '>', sorted by probability
    assert list(r.character) == ["hatsune_miku"]
    assert r.rating == pytest.approx({"general": 0.7, "sensitive": 0.2, "questionable": 0.0, "explicit": 0.0})
    assert r.rating_label == "general" and "general" not in r.general  # ratings never mix with tags
    assert list(r.tags) == ["1girl", "hatsune_miku", "猫耳", "long_hair"]
    r = tiny_tagger.select(p, 0.5, 0.4, exclude=["1girl"])
    assert list(r.general) == ["猫耳"] and list(r.character) == ["hatsune_miku", "kagamine_rin", "rem_(re:zero)"]
    empty = tiny_tagger.select(torch.zeros(50))
    assert empty.general == {} and empty.character == {} and len(empty.rating) == 4
    with pytest.raises(ValueError, match="general_threshold"):
        tiny_tagger.select(p, general_threshold=1.5)
    with pytest.raises(ValueError, match=r"\[50\]"):
        tiny_tagger.select(torch.zeros(49))


def test_exclude_given_as_one_string(tiny_tagger):
    """A comma-separated string of names is a list of names, not of characters (it used to drop nothing)."""
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    result = tiny_tagger.tag(rgb, 0.0, 0.0, exclude="1girl, hatsune_miku")
    assert "1girl" not in result.general and "hatsune_miku" not in result.character and "solo" in result.general
    image, inst = _scene()
    tagged, background = tag_instances(tiny_tagger, image, inst, general_threshold=0.0, exclude="long_hair,solo")
    assert not {"long_hair", "solo"} & (set(tagged.extras["tags"][0]) | set(background.general))
    assert "1girl" in tagged.extras["tags"][0]


@pytest.mark.parametrize("spelling", ["long_hair", "Long Hair", "LONG_HAIR", " long hair "])
def test_exclude_matches_names_like_merge_prompts(tiny_tagger, spelling):
    """The tagger's exclude list matched names exactly (so 'Long Hair' or 'LONG_HAIR' dropped nothing) while Merge
    Prompts ignored case and took spaces for underscores; both now compare through tagger.prompts.tag_key."""
    from cartoonseg.tagger import exclude_keys, tag_key
    from cartoonseg.tagger.prompts import select_tags

    p = _probs(tiny_tagger, {"1girl": 0.9, "long_hair": 0.8, "star_(symbol)": 0.7, "^_^": 0.6, "solo": 0.5})
    exclude = [spelling, "STAR \\(Symbol\\)", "^_^"]
    kept = ["1girl", "solo"]
    assert list(tiny_tagger.select(p, exclude=exclude).general) == kept
    assert list(tiny_tagger.select(p, exclude=", ".join(exclude)).general) == kept
    everything = tiny_tagger.select(p).general
    assert select_tags(everything, options=PromptOptions(exclude=tuple(exclude))) == kept
    assert select_tags(everything, options=PromptOptions(exclude=", ".join(exclude))) == kept
    assert tag_key(spelling) == tag_key("long_hair") == tag_key(tag_key("long_hair")) == "long hair"
    assert tag_key("^_^") == "^_^" != tag_key("^ ^") and tag_key("X_X") == "x_x"  # kaomoji keep their underscore
    assert exclude_keys("a, B_b\n") == exclude_keys(["A", "b b"]) == {"a", "b b"}
    image, inst = _scene()
    tagged, background = tag_instances(tiny_tagger, image, inst, general_threshold=0.0, exclude=spelling.upper())
    assert "long_hair" not in tagged.extras["tags"][0] and "long_hair" not in background.general
    assert "1girl" in tagged.extras["tags"][0]


def test_inpaint_background_prompt_matches_tags_like_the_tagger():
    """cartoonseg.inpaint.diffusion.background_prompt (the Ken Burns / Diffusion Fill prompt) dropped repeated and
    character tags by the raw name, so "Sky" after "sky", "long hair" after "long_hair", "1Girl" or "No Humans"
    (the suffix's no_humans) all reached the prompt, unlike in Merge Prompts; it now compares through the one
    tag_key (cartoonseg.tags, re-exported by cartoonseg.tagger)."""
    from cartoonseg import tags
    from cartoonseg.inpaint.diffusion import background_prompt as inpaint_prompt
    from cartoonseg.tagger import prompts

    assert prompts.tag_key is tags.tag_key and prompts.KAOMOJIS is tags.KAOMOJIS
    line = "sky, Sky, long_hair, Long Hair, 1Girl, SOLO, No Humans, star \\(symbol\\), star_(symbol), ^_^, ^ ^"
    assert inpaint_prompt(line, suffix="") == "sky, long_hair, No Humans, star \\(symbol\\), ^_^, ^ ^"
    assert inpaint_prompt(line) == "sky, long_hair, star \\(symbol\\), ^_^, ^ ^, high quality, masterpiece, no_humans"
    assert inpaint_prompt(line, suffix="", drop_people_tags=False).startswith("sky, long_hair, 1Girl, SOLO, No ")
    # the tagger's prompt keeps the same names (it also formats them: underscores to spaces)
    kept = background_prompt(parse_tag_list(line), suffix="", options=PromptOptions(drop_character_tags=False))
    assert [tags.tag_key(t) for t in parse_tag_list(kept)][:2] == ["sky", "long hair"]


def test_background_prompts_share_one_duplicate_rule():
    """Merge Prompts' background prompt (cartoonseg.tagger.background_prompt) dropped repeated tags but kept the
    ones its suffix already has ("no humans, ..., no_humans", "masterpiece, ..., masterpiece"), unlike the
    inpainting one (cartoonseg.inpaint.background_prompt); both now leave out repeats and the suffix's tags by one
    rule (cartoonseg.tags.unique_tags, names compared by tag_key). Merge Prompts' also kept people tags (1girl),
    which its own negative prompt forbids; both now drop them (cartoonseg.inpaint.PEOPLE_TAGS)."""
    from cartoonseg.inpaint.diffusion import background_prompt as inpaint_prompt
    from cartoonseg.tags import unique_tags

    line = "sky, No Humans, Masterpiece, high_quality, cloud, Sky, 1girl"
    assert background_prompt(parse_tag_list(line)) == "sky, cloud, high quality, masterpiece, no_humans"
    assert background_prompt(line, suffix="4k, no_humans", style="anime") == (
        "anime, sky, Masterpiece, high quality, cloud, 4k, no_humans")
    assert background_prompt(line, suffix="4k", drop_people_tags=False).endswith("cloud, 1girl, 4k")
    # the same names survive in both prompts, whatever the suffix and whether people tags are dropped (formatting
    # left as the inpainting one writes it)
    raw = PromptOptions(drop_character_tags=False, underscores_to_spaces=False)
    for suffix in ("", BACKGROUND_SUFFIX, "Cloud, 4k"):
        for people in (True, False):
            assert background_prompt(line, options=raw, suffix=suffix, drop_people_tags=people) == inpaint_prompt(
                line, suffix=suffix, drop_people_tags=people), (suffix, people)
    assert unique_tags(["a_b", " A B", "", "c", "C", "d"], drop=["d", "x"]) == ["a_b", "c"]


def test_mcut(tiny_tagger):
    assert mcut_threshold(torch.tensor([0.9, 0.85, 0.3, 0.2])) == pytest.approx(0.575)
    with pytest.raises(ValueError):
        mcut_threshold(torch.tensor([0.5]))
    p = _probs(tiny_tagger, {"1girl": 0.95, "solo": 0.9, "long_hair": 0.2, "hatsune_miku": 0.12})
    r = tiny_tagger.select(p, general_threshold=0.99, general_mcut=True, character_mcut=True)
    assert list(r.general) == ["1girl", "solo"]
    # character MCut threshold is 0.06 here but floored at 0.15, so the 0.12 character is not selected
    assert r.character == {}
    p[tiny_tagger.labels.names.index("hatsune_miku")] = 0.5
    assert list(tiny_tagger.select(p, character_mcut=True).character) == ["hatsune_miku"]


# ---------------------------------------------------------------------------------------------- instances
def _scene(h=60, w=80):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 200, (h, w, 3), dtype=np.uint8)
    masks = torch.zeros(3, h, w)
    masks[0, 10:30, 5:25] = 0.9
    masks[1, 20:55, 40:78] = 0.8
    masks[1, 20:25, 40:45] = 0.2  # below mask_thr: outside the instance
    boxes = torch.tensor([[5.0, 10.0, 25.0, 30.0], [39.6, 19.2, 90.0, 55.0], [70.0, 5.0, 70.0, 9.0]])
    inst = Instances(boxes=boxes, scores=torch.tensor([0.9, 0.8, 0.7]), masks=masks, mask_thr=0.5)
    return image, inst


def test_instance_crops_paint_outside_white():
    image, inst = _scene()
    crops = instance_crops(image, inst)
    assert crops[2] is None  # zero-width box
    assert crops[0].shape == (20, 20, 3) and np.array_equal(crops[0], image[10:30, 5:25])
    assert crops[1].shape == (36, 41, 3)  # floor/ceil of the box, clamped to the image
    assert (crops[1][1:6, 1:6] == 255).all()  # soft mask below threshold -> white
    assert (crops[1][0] == 255).all()  # row 19 is outside the mask
    assert np.array_equal(crops[1][10:20, 10:20], image[29:39, 49:59])
    bg = background_image(image, inst)
    assert (bg[10:30, 5:25] == 255).all() and np.array_equal(bg[:10], image[:10])
    with pytest.raises(ValueError, match="masks are"):
        instance_crops(image[:30], inst)


def test_tag_instances_fills_extras(tiny_tagger):
    image, inst = _scene()
    inst.extras["depth"] = [0.1, 0.2, 0.3]
    tagged, background = tag_instances(tiny_tagger, image, inst, general_threshold=0.0, character_threshold=0.0)
    assert set(tagged.extras) == {"depth", "tags", "character_tags", "rating"} and len(tagged) == 3
    assert tagged.extras["depth"] == [0.1, 0.2, 0.3]
    assert tagged.extras["tags"][2] == {} and tagged.extras["rating"][2] == {}  # empty instance -> empty tags
    plate = np.full((30, 30, 3), 128, np.uint8)
    crop, bg, plate_r = tiny_tagger.tag_batch(
        [instance_crops(image, inst)[1], background_image(image, inst), plate], 0.0, 0.0,
        exclude=("simple_background", "white_background"))
    assert tagged.extras["tags"][1] == pytest.approx(crop.tags)
    assert tagged.extras["character_tags"][1] == pytest.approx(crop.character)
    assert "simple_background" not in tagged.extras["tags"][0] and "1girl" in tagged.extras["tags"][0]
    assert set(tagged.extras["character_tags"][0]) == set(CHARACTERS)
    assert background is not None and background.tags == pytest.approx(bg.tags)
    _, bg2 = tag_instances(tiny_tagger, image, inst[[2]], background=plate, general_threshold=0.0)
    assert bg2.general == pytest.approx(plate_r.general)
    none_inst, none_bg = tag_instances(tiny_tagger, image, Instances.empty(60, 80), tag_background=False)
    assert none_inst.extras["tags"] == [] and none_bg is None
    # subsetting keeps tags aligned
    assert tagged[[1]].extras["tags"][0] == tagged.extras["tags"][1]


# ---------------------------------------------------------------------------------------------- prompts
def test_prompt_formatting():
    tags = {"1girl": 0.99, "hatsune_miku": 0.97, "long_hair": 0.9, "star_(symbol)": 0.8, "^_^": 0.7, "猫耳": 0.6}
    assert merge_prompt("3d pixar style", tags, ["hatsune_miku"]) == (
        "3d pixar style, 1girl, long hair, star \\(symbol\\), ^_^, 猫耳")
    keep = PromptOptions(drop_character_tags=False, underscores_to_spaces=False, escape_parentheses=False,
                         max_tags=3, template="{tags} BREAK {style}")
    assert merge_prompt("style", tags, ["hatsune_miku"], keep) == "1girl, hatsune_miku, long_hair BREAK style"
    assert merge_prompt("", tags, [], PromptOptions(max_tags=1)) == "1girl"
    assert merge_prompt("style only", {}) == "style only"
    assert merge_prompt("", {}) == ""
    # a custom separator goes with an empty part (it used to dangle: "style |", "| 1girl")
    bar = PromptOptions(template="masterpiece, {style} | {tags}")
    assert merge_prompt("anime", {}, [], bar) == "masterpiece, anime"
    assert merge_prompt("", {"1girl": 1.0}, [], bar) == "masterpiece, 1girl"
    assert merge_prompt("anime", {"1girl": 1.0}, [], bar) == "masterpiece, anime | 1girl"
    assert merge_prompt("", {"1girl": 1.0}, [], PromptOptions(template="{tags} BREAK {style}")) == "1girl"
    assert merge_prompt("a {x|y} style", {"1girl": 1.0}) == "a {x|y} style, 1girl"  # other braces untouched
    # both parts empty: the template's own text stays, without a dangling separator or space ("photo of , 4k")
    empty = {"style": "", "tags": {}}
    for template, expected in (("photo of {style}, {tags}, 4k", "photo of, 4k"), ("{style} | {tags} | 4k", "4k"),
                               ("{style} BREAK {tags} BREAK 4k", "4k"), ("photo of {style} and {tags}, 4k",
                                                                         "photo of, 4k"),
                               ("{style} {tags},", ""), ("a{style}b", "ab"), ("a {style} b", "a b")):
        assert merge_prompt(empty["style"], empty["tags"], [], PromptOptions(template=template)) == expected, template
    four_k = PromptOptions(template="photo of {style}, {tags}, 4k")
    assert merge_prompt("anime", {}, [], four_k) == "photo of anime, 4k"
    assert merge_prompt("", {"1girl": 1.0}, [], four_k) == "photo of 1girl, 4k"
    assert merge_prompt("anime,", {"1girl": 1.0}) == "anime, 1girl"  # a trailing comma typed in the style
    # inside the prompt a part's own text is never trimmed, only the template's (a tag may hold commas; the old
    # clean-up turned "a, ,_,, b" into "a, _, b")
    raw = PromptOptions(underscores_to_spaces=False, template="x, {style}, {tags}")
    assert merge_prompt("", {"a": 0.9, ",_,": 0.8, "b": 0.7}, [], raw) == "x, a, ,_,, b"
    excl = PromptOptions(exclude=("Long Hair", "star_(symbol)", "^_^"))
    assert format_tags(tags, ["hatsune_miku"], excl) == "1girl, 猫耳"
    assert format_tags(["b", "a", "b"]) == "b, a"  # lists keep order, duplicates removed
    assert format_tag("hatsune_miku_(cosplay)") == "hatsune miku \\(cosplay\\)"
    assert format_tag("already \\(escaped\\)") == "already \\(escaped\\)"
    assert format_tag(">_<") == ">_<"
    assert parse_tag_list("a, b_c\n\\(d\\) ,, ") == ["a", "b_c", "(d)"]
    assert PromptOptions(exclude="x, y").exclude == ("x", "y")
    with pytest.raises(ValueError, match="max_tags"):
        PromptOptions(max_tags=-1)
    # wrong types are refused up front (they used to pass and fail deep inside, when slicing or joining)
    for bad in (dict(max_tags=1.5), dict(max_tags="3"), dict(separator=None), dict(template=None)):
        with pytest.raises(TypeError, match=next(iter(bad))):
            PromptOptions(**bad)
    assert PromptOptions(max_tags=np.int64(2)).max_tags == 2


def test_tag_lists_keep_commas_inside_names():
    """Tag lists split on commas, so a name holding one (real CSV allows it) fell apart between Tag Instances and
    Merge Prompts; join_tag_list writes it as "\\," and parse_tag_list reads that back."""
    from cartoonseg.tagger import join_tag_list

    names = ["comma,tag", "ah, so", "\\m/", ":\\", "a\\", "star_(symbol)", "^_^", "x\\,y", "\\(", ",_,", "plain"]
    for separator in (", ", ",", "\n"):
        assert parse_tag_list(join_tag_list(names, separator)) == names
    assert join_tag_list(["ah, so", "b"]) == "ah\\, so, b" and parse_tag_list("ah\\, so, b") == ["ah, so", "b"]
    assert parse_tag_list("\\m/, star \\(symbol\\)") == ["\\m/", "star (symbol)"]  # other backslashes kept
    with pytest.raises(ValueError, match="separator"):
        join_tag_list(names, " ")
    # the whole path: background tags as a list string, then formatted and excluded by name
    line = join_tag_list({"comma,tag": 0.9, "long_hair": 0.8})
    assert background_prompt(parse_tag_list(line), suffix="") == "comma,tag, long hair"
    assert background_prompt(line, options=PromptOptions(exclude="Comma\\,Tag"), suffix="") == "long hair"


def test_background_negative_and_wildcard():
    # no_humans is the suffix's: left out before max_tags counts (it used to appear twice, as "no humans" too)
    assert background_prompt({"scenery": 0.9, "no_humans": 0.8, "sky": 0.7}, options=PromptOptions(max_tags=2)) == (
        "scenery, sky, high quality, masterpiece, no_humans")
    assert background_prompt({}) == "high quality, masterpiece, no_humans"
    assert NEGATIVE_PROMPT == "human, single, person, girl, 1girl, boy, 1boy, creature, animal, alien, robot, body"
    assert instance_label(7) == "inst_7" and instance_label(3, "char-") == "char_3"
    wildcard = impact_wildcard(["inst_0", "inst_4"], ["1girl, [red] hair", ""], common="style")
    assert wildcard == "[LAB]\n[inst_0] style, 1girl, \\(red\\) hair\n[inst_4] style"
    with pytest.raises(ValueError, match="label"):
        impact_wildcard(["bad[label]"], ["x"])
    with pytest.raises(ValueError, match="2 labels but 1 prompts"):
        impact_wildcard(["a", "b"], ["x"])


def test_instance_prompts_from_extras():
    _, inst = _scene()
    with pytest.raises(ValueError, match="tags"):
        instance_prompts(inst, "style")
    inst.extras["tags"] = [{"1girl": 0.9, "rem_(re:zero)": 0.95}, {}, {"cat": 0.5}]
    inst.extras["character_tags"] = [{"rem_(re:zero)": 0.95}, {}, {}]
    out, prompts = instance_prompts(inst, "watercolor")
    assert prompts == ["watercolor, 1girl", "watercolor", "watercolor, cat"]
    assert out.extras["prompt"] == prompts and "prompt" not in inst.extras


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_tags_whole_image_as_json(tmp_path, capsys):
    from cartoonseg.tagger.cli import main

    folder = make_tagger_dir(tmp_path / "t")
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA").save(path)
    assert main([str(path), "--tagger", str(folder), "--general-threshold", "0", "--character-threshold", "0.99"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["image"] == str(path)
    assert set(out[0]) == {"image", "general", "character", "rating"} and len(out[0]["rating"]) == 4
    assert len(out[0]["general"]) == len(GENERAL)


def test_cli_exclude(tmp_path, capsys):
    """--exclude (there was none: the CLI could not drop tags) matches names as the library and the nodes do."""
    from cartoonseg.tagger.cli import main

    folder = make_tagger_dir(tmp_path / "t")
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    assert main([str(path), "--tagger", str(folder), "--general-threshold", "0", "--exclude", "1GIRL, Long Hair"]) == 0
    general = json.loads(capsys.readouterr().out)[0]["general"]
    assert not {"1girl", "long_hair"} & set(general) and "solo" in general and len(general) == len(GENERAL) - 2


def test_cli_json_is_whole_on_an_ascii_stdout(tmp_path, monkeypatch):
    """Under LC_ALL=C / PYTHONIOENCODING=ascii the non-ASCII tag names (and paths) used to stop json.dump halfway:
    half a JSON array on stdout, then an encoding error. Now the same JSON comes out with \\u escapes."""
    from cartoonseg.tagger.cli import main

    folder = make_tagger_dir(tmp_path / "t")
    path = tmp_path / "画像.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="ascii", errors="strict", newline="\n")
    monkeypatch.setattr("sys.stdout", stdout)
    assert main([str(path), "--tagger", str(folder), "--general-threshold", "0", "-q"]) == 0
    stdout.flush()
    out = json.loads(raw.getvalue().decode("ascii"))
    assert out[0]["image"] == str(path) and "猫耳" in out[0]["general"]


@pytest.mark.parametrize("option", ["--general-threshold", "--character-threshold"])
def test_cli_refuses_a_bad_threshold_before_loading_the_tagger(tmp_path, capsys, monkeypatch, option):
    from cartoonseg.tagger import tagging
    from cartoonseg.tagger.cli import main

    def must_not_load(*args, **kwargs):
        raise AssertionError("the tagger was loaded (maybe downloaded) before the options were checked")

    monkeypatch.setattr(tagging, "load_tagger", must_not_load)
    assert main(["img.png", "--tagger", "SmilingWolf/wd-swinv2-tagger-v3", option, "nan"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"error: {option} must lie in [0,1]")


def test_cli_tags_instances_with_tiny_detector(tmp_path, capsys):
    import cartoonseg
    from cartoonseg.tagger.cli import main

    torch.manual_seed(0)
    detector = cartoonseg.save_weights(cartoonseg.build_detector("tiny"), tmp_path / "det.safetensors")
    folder = make_tagger_dir(tmp_path / "t")
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    args = [str(path), "--tagger", str(folder), "--detector", str(detector), "--refiner", "none",
            "--score-thr", "0.0", "--max-instances", "2", "--general-threshold", "0", "--indent", "0", "--no-download"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert out["image"] == str(path) and set(out) == {"image", "instances", "background"}
    assert 1 <= len(out["instances"]) <= 2  # score_thr 0 keeps the random detector's boxes
    first = out["instances"][0]
    assert set(first) == {"index", "id", "box", "score", "tags", "character", "rating"} and len(first["box"]) == 4
    assert set(out["background"]) == {"general", "character", "rating"}


def test_cli_checks_its_images_before_loading_the_tagger(tmp_path, capsys, spy_calls):
    """An unreadable image (or a batch of only unreadable ones) failed after the tagger loaded (a repo id may
    download ~400 MB); in a batch the unreadable ones are now skipped, with the same warning, before it loads."""
    from cartoonseg.tagger import tagging
    from cartoonseg.tagger.cli import main

    loads = spy_calls(tagging, "load_tagger")
    folder = make_tagger_dir(tmp_path / "t")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-200])
    assert main([str(junk), "--tagger", str(folder)]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read image")
    assert main([str(truncated), "--tagger", str(folder)]) == 2
    assert "truncated" in capsys.readouterr().err and loads == []
    assert main([str(junk), str(truncated), "--tagger", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("warning: skipping") == 2 and "error: 2 of 2 inputs could not be read" in err and loads == []
    assert main([str(junk), str(good), "--tagger", str(folder), "--general-threshold", "0"]) == 2  # skipped: status 2
    captured = capsys.readouterr()
    assert len(loads) == 1 and [e["image"] for e in json.loads(captured.out)] == [str(good)]
    assert captured.err.count("warning: skipping") == 1
