"""PatchMatch / Telea inpainting and background masks (cartoonseg.inpaint) on synthetic scenes with known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cartoonseg import Instances
from cartoonseg.inpaint import PatchMatchConfig, background_mask, inpaint, patchmatch_inpaint, telea_inpaint
from cartoonseg.inpaint.cli import main as cli_main

CHAR = np.array([255, 0, 255], np.uint8)  # the "character" colour that must never leak into the fill


def textured_background(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Diagonal stripes on a checkerboard with mild noise: texture that smooth fills cannot reproduce."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    bg = np.zeros((h, w, 3), np.float32)
    bg[..., 0] = 40 + 150 * (((x + y) // 4) % 2)
    bg[..., 1] = 90 + 90 * (((x // 8) + (y // 8)) % 2)
    bg[..., 2] = 200 - 120 * y / h
    bg += rng.normal(0, 4, bg.shape)
    return np.clip(bg, 0, 255).astype(np.uint8)


def scene(h: int = 72, w: int = 96):
    """(truth background, image with two magenta characters, character masks [2,H,W] bool)."""
    bg = textured_background(h, w)
    y, x = np.mgrid[0:h, 0:w]
    m1 = ((y - 36) / 20.0) ** 2 + ((x - 30) / 12.0) ** 2 <= 1
    m2 = (y >= 40) & (x >= 60) & (x < 80)  # touches the bottom border
    img = bg.copy()
    img[m1 | m2] = CHAR
    return bg, img, np.stack([m1, m2])


def test_patchmatch_fills_with_texture_and_keeps_known_pixels():
    bg, img, masks = scene()
    hole = background_mask(torch.from_numpy(masks), dilate=1).numpy() > 0.5
    out = patchmatch_inpaint(img, hole, patch_size=3, seed=0)
    assert out.dtype == np.uint8 and out.shape == img.shape
    # known pixels untouched, bit for bit
    assert np.array_equal(out[~hole], img[~hole])
    # no character colour anywhere in the fill
    dist_to_char = np.abs(out[hole].astype(int) - CHAR.astype(int)).sum(1)
    assert dist_to_char.min() > 120
    # texture, not smear: the fill keeps most of the background's contrast, unlike Telea
    truth_std = bg[hole].astype(float).std(0).mean()
    pm_std = out[hole].astype(float).std(0).mean()
    tel = telea_inpaint(img, hole)
    tel_std = tel[hole].astype(float).std(0).mean()
    assert pm_std > 0.7 * truth_std
    assert pm_std > tel_std
    # and the fill resembles the background statistics (per-channel mean within a few levels)
    assert np.abs(out[hole].astype(float).mean(0) - bg[hole].astype(float).mean(0)).max() < 25


def test_patchmatch_colour_only_from_known_region():
    """A hole over a region whose colour exists nowhere else: the fill may only use the known colours."""
    h, w = 48, 48
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = 200  # all green
    img[16:32, 16:32] = (255, 0, 0)  # red square = the character
    hole = np.zeros((h, w), bool)
    hole[16:32, 16:32] = True
    out = patchmatch_inpaint(img, hole)
    assert np.array_equal(out[hole], np.broadcast_to(np.array([0, 200, 0], np.uint8), (int(hole.sum()), 3)))


def test_patchmatch_is_deterministic_and_seeded():
    _, img, masks = scene(48, 64)
    hole = masks.any(0)
    a = patchmatch_inpaint(img, hole, seed=3)
    b = patchmatch_inpaint(img, hole, seed=3)
    c = patchmatch_inpaint(img, hole, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_patchmatch_input_kinds_and_layouts():
    _, img, masks = scene(40, 56)
    hole = masks.any(0)
    t = torch.from_numpy(img).float() / 255.0
    out_t = patchmatch_inpaint(t, torch.from_numpy(hole).float())
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.shape == t.shape
    assert torch.equal(out_t[~torch.from_numpy(hole)], t[~torch.from_numpy(hole)])
    out_u8 = patchmatch_inpaint(torch.from_numpy(img), torch.from_numpy(hole.astype(np.uint8) * 255))
    assert out_u8.dtype == torch.uint8
    grey = patchmatch_inpaint(img[..., 0], hole)
    assert grey.shape == img.shape  # grey is expanded to RGB
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 7, np.uint8)], -1)
    assert patchmatch_inpaint(rgba, hole).shape == img.shape
    # empty mask: unchanged copy
    assert np.array_equal(patchmatch_inpaint(img, np.zeros_like(hole)), img)


@pytest.mark.parametrize("fill", ["patchmatch", "telea", "fallback", "patchmatch_inpaint", "telea_inpaint"])
@pytest.mark.parametrize("as_torch", [False, True])
def test_float_inputs_keep_their_known_pixels_bit_for_bit(fill, as_torch):
    """Float values that are not multiples of 1/255 (any ComfyUI IMAGE after a resize or a blend) come back
    bit-identical outside the mask: the fill is not allowed to scale them to 0..255 and back (an ulp of drift)."""
    rng = np.random.default_rng(1)
    img = rng.random((40, 48, 3), dtype=np.float32)
    hole = np.zeros((40, 48), bool)
    hole[12:26, 15:30] = True
    if fill == "fallback":  # one known column holds no complete 3x3 patch: the documented Telea fallback
        hole[:] = True
        hole[:, 20] = False
    x, m = (torch.from_numpy(img), torch.from_numpy(hole)) if as_torch else (img, hole)
    if fill == "patchmatch_inpaint":
        out = patchmatch_inpaint(x, m)
    elif fill == "telea_inpaint":
        out = telea_inpaint(x, m)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the fallback's documented warning
            out = inpaint(x, m, method="telea" if fill == "telea" else "patchmatch")
    out = out.numpy() if as_torch else out
    assert out.dtype == np.float32 and out.shape == img.shape
    assert np.array_equal(out[~hole].view(np.uint32), img[~hole].view(np.uint32))
    assert not np.array_equal(out[hole], img[hole])  # the hole was filled


def test_patchmatch_small_images_and_border_holes():
    img = textured_background(7, 9)
    hole = np.zeros((7, 9), bool)
    hole[3, 4] = True
    out = patchmatch_inpaint(img, hole)
    assert np.array_equal(out[~hole], img[~hole])
    hole = np.zeros((7, 9), bool)
    hole[:, 0] = True  # a whole border column
    assert patchmatch_inpaint(img, hole).shape == img.shape
    big = textured_background(64, 64)
    corner = np.zeros((64, 64), bool)
    corner[:30, :30] = True
    out = patchmatch_inpaint(big, corner, config=PatchMatchConfig(em_iters_coarse=3))
    assert np.array_equal(out[~corner], big[~corner])


def test_patchmatch_bad_inputs():
    img = textured_background(20, 20)
    with pytest.raises(ValueError, match="covers the image"):
        patchmatch_inpaint(img, np.ones((20, 20), bool))
    with pytest.raises(ValueError, match="does not match"):
        patchmatch_inpaint(img, np.zeros((10, 20), bool))
    with pytest.raises(ValueError, match="patch_size"):
        patchmatch_inpaint(img, np.zeros((20, 20), bool), patch_size=4)
    with pytest.raises(ValueError, match="empty"):
        patchmatch_inpaint(np.zeros((0, 5, 3), np.uint8), np.zeros((0, 5), bool))
    with pytest.raises(TypeError):
        patchmatch_inpaint([[1, 2]], np.zeros((1, 2), bool))
    with pytest.raises(ValueError, match="unknown inpaint method"):
        inpaint(img, np.zeros((20, 20), bool), method="lama")


def test_telea_and_dispatch():
    _bg, img, masks = scene(40, 56)
    hole = masks.any(0)
    out = inpaint(img, hole, method="telea", radius=3)
    assert np.array_equal(out[~hole], img[~hole])
    assert np.abs(out[hole].astype(int) - CHAR.astype(int)).sum(1).min() > 120
    with pytest.raises(ValueError, match="whole image"):
        telea_inpaint(img, np.ones(hole.shape, bool))


def test_background_mask_union_indices_dilate_feather():
    m = torch.zeros(3, 20, 20)
    m[0, 2:5, 2:5] = 0.9
    m[1, 10:12, 10:12] = 0.6
    m[2, 15:18, 0:3] = 0.2  # below the instance threshold
    inst = Instances.from_masks(m, mask_thr=0.5)
    union = background_mask(inst)
    assert int(union.sum()) == 9 + 4 and union.dtype == torch.float32
    only_second = background_mask(inst, indices=[1])
    assert int(only_second.sum()) == 4
    assert int(background_mask(inst, indices=[]).sum()) == 0
    grown = background_mask(inst, indices=[1], dilate=2)
    assert grown[10:12, 10:12].all() and int(grown.sum()) > 4 and grown[7, 7] == 0
    soft = background_mask(inst, indices=[1], feather=2.0)
    assert torch.all(soft[10:12, 10:12] == 1) and 0 < float(soft[9, 11]) < 1 and soft[0, 0] == 0
    assert int(background_mask(m, threshold=0.1).sum()) == 9 + 4 + 9
    assert torch.equal(background_mask(inst, indices=[5, 1, -1]), background_mask(inst, indices=[1, 2]))
    assert int(background_mask(inst, indices=[5]).sum()) == 0  # positions a frame lacks are skipped
    with pytest.raises(ValueError):
        background_mask(inst, dilate=-1)


def test_background_mask_reads_selections_as_select_instances():
    """One meaning of a selection: background_mask keeps what select_instances keeps (positions a frame lacks
    skipped, -1 = last), on frames of any instance count, and grows the union with the original's ellipse."""
    import cv2

    from cartoonseg.ops import select_instances

    m = torch.zeros(3, 40, 40)
    m[0, 5:15, 5:15] = 1
    m[1, 20:30, 22:26] = 1
    m[2, 30:33, 2:9] = 1
    frames = [Instances.from_masks(m), Instances.from_masks(m[:1]), Instances.empty(40, 40)]
    for chosen in ([1], [-1], [0, 2], [2, 0, 7, -9], [], None):
        for f in frames:
            picked = select_instances(f, "index", chosen)
            union = picked.binary.any(0) if len(picked) else torch.zeros(40, 40, dtype=torch.bool)
            for dilate in (0, 1, 5):
                kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
                expected = torch.from_numpy(cv2.dilate(union.numpy().astype(np.uint8), kernel).astype(np.float32))
                assert torch.equal(background_mask(f, indices=chosen, dilate=dilate), expected), (chosen, len(f), dilate)


def test_cli_inpaint(tmp_path):
    from PIL import Image

    _, img, masks = scene(40, 56)
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(masks.any(0).astype(np.uint8) * 255).save(tmp_path / "mask.png")
    for method in ("patchmatch", "telea"):
        out = tmp_path / f"out_{method}.png"
        rc = cli_main(["inpaint", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "--out", str(out),
                       "--method", method, "--patch-size", "3", "--seed", "1"])
        assert rc == 0
        res = np.asarray(Image.open(out))
        hole = masks.any(0)
        assert np.array_equal(res[~hole], img[~hole])
        assert np.abs(res[hole].astype(int) - CHAR.astype(int)).sum(1).min() > 120
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "small_mask.png")
    assert cli_main(["inpaint", str(tmp_path / "img.png"), str(tmp_path / "small_mask.png"), "--out", str(tmp_path / "x.png")]) == 2


def test_patch_sizes_are_checked_before_any_fallback_and_the_summary_names_what_ran(tmp_path, capsys):
    """Every documented patch size (odd, 3..15) runs; a bad one is refused even where PatchMatch would fall back to
    Telea; the CLI's summary names the fill that ran, not the one asked for."""
    import warnings

    from PIL import Image

    from cartoonseg.inpaint import fill_method

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    hole = np.zeros((48, 64), bool)
    hole[10:25, 20:45] = True
    for size in (3, 13, 15):
        out = inpaint(img, hole, patch_size=size)
        assert np.array_equal(out[~hole], img[~hole])
    thin = np.ones((48, 64), bool)
    thin[:, :1] = False  # no complete 3x3 patch outside
    assert fill_method(thin) == "telea" and fill_method(np.ones((4, 4), bool)) == "flat" and fill_method(hole) == "patchmatch"
    for bad in (100, 17, 4, 3.5, True):
        with pytest.raises(ValueError, match="patch_size must be an odd integer"):
            inpaint(img, thin, patch_size=bad)
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(thin.astype(np.uint8) * 255).save(tmp_path / "thin.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no other warning (a read-only array handed to torch used to warn)
        warnings.filterwarnings("ignore", message="inpaint: the mask leaves no complete")
        assert cli_main(["inpaint", str(tmp_path / "img.png"), str(tmp_path / "thin.png"), "--out",
                         str(tmp_path / "o.png"), "--quiet"]) == 0
    assert "with telea" in capsys.readouterr().out
    assert cli_main(["inpaint", str(tmp_path / "img.png"), str(tmp_path / "thin.png"), "--out", str(tmp_path / "p.png"),
                     "--patch-size", "100"]) == 2
    assert "patch_size must be an odd integer" in capsys.readouterr().err and not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("method", ["patchmatch", "telea"])
def test_whole_image_mask_gives_a_documented_fill_and_a_warning(method):
    """Removing a character that fills the frame must not kill a graph (Ken Burns, style editing, puppet): a mask
    over the whole image gives a flat mid-grey fill, a mask that leaves no complete PatchMatch patch falls back to
    Telea; both warn (issue 20 #6). The strict functions keep raising for direct callers."""
    from cartoonseg.inpaint.patchmatch import FLAT_FILL

    img = textured_background(24, 32)
    with pytest.warns(UserWarning, match="covers the whole image"):
        out = inpaint(img, np.ones((24, 32), bool), method=method)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert np.all(out == round(FLAT_FILL * 255))
    as_float = torch.from_numpy(img).float() / 255
    with pytest.warns(UserWarning, match="covers the whole image"):
        out = inpaint(as_float, torch.ones(24, 32), method=method)
    assert isinstance(out, torch.Tensor) and torch.allclose(out, torch.full_like(as_float, FLAT_FILL))
    # one known pixel: no complete 3x3 patch for PatchMatch -> Telea from that pixel (its colour everywhere)
    almost = np.ones((24, 32), bool)
    almost[0, 0] = False
    if method == "patchmatch":
        with pytest.warns(UserWarning, match="Telea"):
            out = inpaint(img, almost, method=method)
    else:
        out = inpaint(img, almost, method=method)
    assert out.shape == img.shape and np.array_equal(out[0, 0], img[0, 0])
    assert np.abs(out.astype(int) - img[0, 0].astype(int)).mean() < 8  # a smooth fill around that colour


def test_grow_mask_is_the_square_window_max_and_min():
    """grow_mask takes the (2p+1)² window's max (dilation) or min (erosion) as a row pass then a column pass: the
    same as one 2-D max pool, for bool, float and batched masks, at the borders too."""
    import torch.nn.functional as F

    from cartoonseg.ops import grow_mask

    def square(x, p):
        x = x[:, None].float()
        k = 2 * abs(p) + 1
        out = F.max_pool2d(x, k, 1, abs(p)) if p > 0 else -F.max_pool2d(-x, k, 1, abs(p))
        return out[:, 0]

    g = torch.Generator().manual_seed(0)
    for p in (1, 2, 5, -1, -3, 9):
        soft = torch.rand(3, 23, 31, generator=g)
        assert torch.equal(grow_mask(soft, p), square(soft, p))
        assert torch.equal(grow_mask(soft[0], p), square(soft[:1], p)[0])
        binary = soft > 0.85
        out = grow_mask(binary, p)
        assert out.dtype == torch.bool and torch.equal(out, square(binary, p) > 0.5)
    assert grow_mask(soft, 0) is soft


def test_cli_refuses_an_output_ending_it_cannot_write_before_filling(tmp_path, capsys, monkeypatch):
    """``--out x.xyz`` failed with Pillow's message only after the (slow) fill had run."""
    from PIL import Image

    import cartoonseg.inpaint.cli as inpaint_cli

    ran = []
    monkeypatch.setattr(inpaint_cli, "inpaint", lambda *a, **k: ran.append(1) or a[0])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "m.png")
    assert cli_main(["inpaint", str(tmp_path / "img.png"), str(tmp_path / "m.png"), "--out", str(tmp_path / "o.xyz")]) == 2
    assert "error: cannot write" in capsys.readouterr().err and not ran and not (tmp_path / "o.xyz").exists()


def test_fill_method_reads_masks_as_inpaint_does():
    """fill_method took any non-zero value as fill: a uint8 mask of 100 (no fill for inpaint: 255 = fill, 100/255 <
    0.5) or a float mask of 0.3 was reported as a whole-image "flat" fill while inpaint left the image unchanged.
    (A uint8 mask of only 0 and 1 is binary by io.to_float_mask: ones fill, for both.)"""
    from cartoonseg.inpaint import fill_method

    img = np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    for mask in (np.full((20, 24), 100, np.uint8), np.full((20, 24), 0.3, np.float32), torch.full((1, 20, 24), 0.3)):
        assert fill_method(mask) == "patchmatch"
        assert np.array_equal(inpaint(img, mask), img)
    assert fill_method(np.full((20, 24), 255, np.uint8)) == "flat" and fill_method(torch.ones(20, 24, 1)) == "flat"
    assert fill_method(np.ones((20, 24), np.uint8)) == "flat"
