"""cartoonseg.io: the one image/mask/depth/clip policy (conversion, reading, writing, .webp/.mp4/PNG folders)."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cartoonseg import io
from cartoonseg._cli import run_parser
from cartoonseg._optional import MissingDependencyError


def _rgb(h=12, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_to_rgb_uint8_policy():
    rgb = _rgb()
    assert io.to_rgb_uint8(rgb) is not None and np.array_equal(io.to_rgb_uint8(rgb), rgb)
    assert np.array_equal(io.to_rgb_uint8(torch.from_numpy(rgb).float() / 255), rgb)
    assert np.array_equal(io.to_rgb_uint8(rgb[:, :, 0]), np.repeat(rgb[:, :, :1], 3, 2))  # grey replicated
    rgba = np.concatenate([rgb, np.zeros_like(rgb[:, :, :1])], 2)  # fully transparent
    assert np.array_equal(io.to_rgb_uint8(rgba), rgb)  # arrays: alpha dropped
    assert (io.to_rgb_uint8(rgba, alpha="white") == 255).all()  # composited on white
    assert io.to_rgb_uint8(rgba, alpha="keep").shape == (12, 10, 4)
    bad = np.full((4, 4, 3), 0.5, np.float32)
    bad[0, 0] = [np.nan, np.inf, -np.inf]
    with pytest.raises(ValueError, match="NaN or infinite"):
        io.to_rgb_uint8(bad)
    assert io.to_rgb_uint8(bad, nan="zero")[0, 0].tolist() == [0, 255, 0]
    with pytest.raises(ValueError, match="nan must be"):
        io.to_rgb_uint8(rgb, nan="ignore")
    with pytest.raises(ValueError, match=r"\[0,255\]"):
        io.to_rgb_uint8(rgb.astype(np.uint16) * 257)
    with pytest.raises(ValueError, match="empty"):
        io.to_rgb_uint8(np.zeros((0, 3, 3), np.uint8))
    with pytest.raises(TypeError):
        io.to_rgb_uint8("image.png")
    # the float path keeps precision; the same rules otherwise
    f = torch.rand(5, 6, 4)
    assert torch.equal(io.to_float_image(f), f[..., :3])
    assert torch.equal(io.to_float_image(rgb), torch.from_numpy(rgb).float() / 255)
    with pytest.raises(ValueError, match="NaN"):
        io.to_float_image(torch.from_numpy(bad))


def test_read_image_files(tmp_path):
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert np.array_equal(io.read_image(tmp_path / "c.png"), rgb)
    clear = np.concatenate([rgb, np.zeros_like(rgb[:, :, :1])], 2)
    Image.fromarray(clear, "RGBA").save(tmp_path / "t.png")
    assert (io.read_image(tmp_path / "t.png") == 255).all()  # transparent files composite on white
    Image.fromarray(np.stack([rgb[:, :, 0], np.full_like(rgb[:, :, 0], 255)], 2), "LA").save(tmp_path / "la.png")
    assert np.array_equal(io.read_image(tmp_path / "la.png"), np.repeat(rgb[:, :, :1], 3, 2))
    pal = Image.fromarray(rgb[:, :, 0] // 64, "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    got = io.read_image(tmp_path / "p.png")
    assert (got[rgb[:, :, 0] // 64 == 0] == 255).all()  # the transparent index is white
    grey16 = (np.arange(120, dtype=np.uint32).reshape(12, 10) * 550).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(io.read_image(tmp_path / "g16.png")[:, :, 0], grey16 / 257.0, atol=0.6)
    np.testing.assert_allclose(io.read_grey(tmp_path / "g16.png"), grey16 / 65535.0, atol=1e-6)  # 16-bit kept
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="cannot read image .*bad.png"):
        io.read_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="cannot read depth map"):
        io.read_depth(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="cannot read image"):
        io.read_image(tmp_path / "missing.png")


def test_masks_and_grey_round_trip(tmp_path):
    ramp = torch.linspace(0, 1, 60).reshape(6, 10)
    io.write_grey(tmp_path / "d16.png", ramp, bits=16)
    torch.testing.assert_close(io.read_depth(tmp_path / "d16.png"), ramp, atol=1 / 65535, rtol=0)
    io.write_grey(tmp_path / "sub" / "d8.png", ramp.numpy())  # parent folders are made
    torch.testing.assert_close(io.read_depth(tmp_path / "sub" / "d8.png"), ramp, atol=0.5 / 255 + 1e-6, rtol=0)
    with pytest.raises(ValueError, match="bits"):
        io.write_grey(tmp_path / "x.png", ramp, bits=12)
    mask = ramp > 0.5
    io.write_image(tmp_path / "m.png", mask.float())
    assert np.asarray(Image.open(tmp_path / "m.png")).ndim == 2  # [H,W] stays grey
    assert np.array_equal(io.read_mask(tmp_path / "m.png", (6, 10)), mask.numpy())
    with pytest.raises(ValueError, match="mask .* is 10x6, image is 11x6"):
        io.read_mask(tmp_path / "m.png", (6, 11))


def _clip(t=6, h=20, w=30):
    y = torch.linspace(0, 1, h)[:, None, None].expand(h, w, 3)
    return torch.stack([(y + i / t) % 1.0 for i in range(t)])


def test_write_frames_webp_and_folder(tmp_path):
    clip = _clip()
    assert io.write_frames(clip, tmp_path / "c.webp", fps=10) == [tmp_path / "c.webp"]
    with Image.open(tmp_path / "c.webp") as webp:
        assert webp.size == (30, 20) and webp.n_frames == 6
    masks = torch.zeros(6, 20, 30)
    written = io.write_frames(clip, tmp_path / "frames", extra={"disocclusion": masks})
    assert [p.name for p in written] == [f"frame_{i:05d}.png" for i in range(6)]
    assert len(list((tmp_path / "frames").glob("disocclusion_*.png"))) == 6
    first = np.asarray(Image.open(written[0]))
    assert np.array_equal(first, io.to_rgb_uint8(clip[0]))
    with pytest.raises(ValueError, match="frames, the clip"):
        io.write_frames(clip, tmp_path / "f2", extra={"m": masks[:2]})
    with pytest.raises(ValueError, match=r"\.webp or \.mp4 or into a folder"):
        io.write_frames(clip, tmp_path / "c.gif")
    with pytest.raises(ValueError, match="fps"):
        io.write_frames(clip, tmp_path / "c.webp", fps=0)
    with pytest.raises(ValueError, match="non-empty"):
        io.write_frames(clip[:0], tmp_path / "c.webp")


def _webp_timing(path):
    """(frame count, [duration ms per frame]) of an animated WebP as a reader sees it."""
    with Image.open(path) as webp:
        durations = []
        for i in range(webp.n_frames):
            webp.seek(i)
            webp.load()
            durations.append(webp.info["duration"])
        return webp.n_frames, durations


@pytest.mark.parametrize("fps", [12.0, 7.0, 29.97, 240.0])
def test_write_frames_webp_lasts_frames_over_fps_even_where_libwebp_merges_frames(tmp_path, fps):
    """The clip lasts n / fps to the millisecond (one rounded duration per frame drifted: 12 frames at 12 fps
    played 996 ms), every change of picture shows at its own time, and a run of identical frames, which libwebp
    keeps as one frame, shows for the run's whole time."""
    clip = _clip(t=12)
    clip[3:7] = clip[3]  # a still: frames 3..6 identical (a puppet at rest, a paused camera)
    io.write_frames(clip, tmp_path / "c.webp", fps=fps)
    n, durations = _webp_timing(tmp_path / "c.webp")
    assert sum(durations) == round(12 * 1000 / fps)
    if n == 9:  # libwebp merged the still (every libwebp this project meets does)
        starts = np.cumsum([0, *durations[:-1]])
        want = [i for i in range(12) if not 3 < i < 7]  # the frames that begin a new picture
        assert starts.tolist() == [round(1000 * i / fps) for i in want]
    else:
        assert n == 12


def test_write_frames_mp4(tmp_path):
    av = pytest.importorskip("av")
    clip = _clip(t=5, h=21, w=31)  # odd sides: padded to even for yuv420p
    assert io.write_frames(clip, tmp_path / "c.mp4", fps=12.5, crf=0) == [tmp_path / "c.mp4"]
    with av.open(str(tmp_path / "c.mp4")) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(12.5)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 5 and frames[0].shape == (22, 32, 3)
    # lossless H.264 in 4:2:0: only the chroma subsampling and colour conversion differ (a few levels)
    diff = np.abs(frames[2][:21, :31].astype(int) - io.to_rgb_uint8(clip[2]).astype(int))
    assert diff.mean() < 3.0


def test_clip_size_is_checked_against_the_format_before_any_encoding(tmp_path, monkeypatch):
    """WebP holds 16383 px a side, libx264 16384, the MPEG-4 fallback 8190 (odd sides are padded): a larger clip
    is refused naming its size, the limit and what holds it (Pillow failed with "ERROR adding frame" only after
    the whole render was done)."""
    io.check_clip_size(tmp_path / "c.webp", (8, 16383))
    io.check_clip_size(tmp_path / "frames", (8, 40000))  # a folder of PNG frames: no format limit
    with pytest.raises(ValueError, match=r"16384x8 px do not fit a \.webp clip: WebP stores at most 16383 px per "
                                         r"side; use smaller frames, or write .*a folder of PNG frames"):
        io.check_clip_size(tmp_path / "c.webp", (8, 16384))
    with pytest.raises(ValueError, match=r"8x20000 px .*16383 px per side; use a smaller --size"):
        io.check_clip_size(tmp_path / "c.webp", (20000, 8), smaller="a smaller --size")
    wide = np.zeros((1, 8, 16384, 3), np.uint8)
    with pytest.raises(ValueError, match="16384x8 px do not fit"):
        io.write_frames(wide, tmp_path / "wide.webp")
    assert not (tmp_path / "wide.webp").exists()
    av = pytest.importorskip("av")
    if "libx264" in av.codecs_available:
        io.check_clip_size(tmp_path / "c.mp4", (8, 16384))
        with pytest.raises(ValueError, match=r"16385x8 px .*H.264 \(libx264\) stores at most 16384 px"):
            io.check_clip_size(tmp_path / "c.mp4", (8, 16385))
        with pytest.raises(ValueError, match=r"or write \.mp4 or a folder"):  # .mp4 holds it, WebP not
            io.check_clip_size(tmp_path / "c.webp", (16384, 8))
    monkeypatch.setattr(io, "_mp4_encoder", lambda: (av, "mpeg4"))  # a PyAV build without an H.264 encoder
    io.check_clip_size(tmp_path / "c.mp4", (8190, 8))
    with pytest.raises(ValueError, match=r"8x8191 px .*MPEG-4 encoder stores at most 8190 px.* \.webp or a folder"):
        io.check_clip_size(tmp_path / "c.mp4", (8191, 8))


def test_mp4_without_pyav_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    assert io.check_clip_path(tmp_path / "c.webp") == ".webp" and io.check_clip_path(tmp_path / "dir") == ""
    with pytest.raises(MissingDependencyError, match="cartoonseg\\[video\\]"):
        io.check_clip_path(tmp_path / "C.MP4")  # what commands check before their work
    with pytest.raises(ValueError, match=r"\.webp or \.mp4 or into a folder"):
        io.check_clip_path(tmp_path / "c.gif")
    with pytest.raises(MissingDependencyError, match=r"pip install 'cartoonseg\[video\]'"):
        io.write_frames(_clip(), tmp_path / "c.mp4")
    assert not (tmp_path / "c.mp4").exists()
    parser = argparse.ArgumentParser()
    parser.set_defaults(func=lambda args: len(io.write_frames(_clip(), tmp_path / "c.mp4")))
    assert run_parser(parser, []) == 2  # the CLI policy: one line, status 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: writing .mp4 files needs the optional package 'av'")


def test_16_bit_grey_png_with_a_transparency_key(tmp_path):
    """A 16-bit grey PNG's tRNS key makes those pixels transparent (composited on white, as for 8-bit files); it
    used to be ignored, so the keyed pixels showed their dark grey."""
    grey16 = np.full((4, 5), 40000, np.uint16)
    grey16[1:3, 1:3] = 1000
    Image.fromarray(grey16).save(tmp_path / "k.png", transparency=1000)
    rgb = io.read_image(tmp_path / "k.png")
    assert (rgb[1:3, 1:3] == 255).all() and (rgb[0, 0] == round(40000 / 65535 * 255)).all()
    with Image.open(tmp_path / "k.png") as im:
        rgba = io.to_rgb_uint8(im, alpha="keep")
    assert rgba.shape == (4, 5, 4) and rgba[..., 3].tolist() == (grey16 != 1000).astype(int).__mul__(255).tolist()


def test_mask_files_with_transparency_are_refused_opaque_alpha_is_read(tmp_path):
    """A cut-out PNG (colour + alpha) used as a mask was read by its grey values: all white where the drawing is
    light, whatever its alpha. Transparency means different things in different tools, so such a file is refused
    with a message; a fully opaque alpha band and grey files read as before."""
    from cartoonseg.io import read_mask, read_soft_mask

    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = 255  # a white drawing
    rgba[1:4, 2:6, 3] = 255  # opaque only here
    Image.fromarray(rgba).save(tmp_path / "cutout.png")
    for reader in (read_mask, read_soft_mask):
        with pytest.raises(ValueError, match=r"cutout.png has transparent pixels \(36 of 48\)"):
            reader(tmp_path / "cutout.png")
    la = np.zeros((6, 8, 2), np.uint8)
    la[..., 1] = 128
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    with pytest.raises(ValueError, match="transparent pixels"):
        read_mask(tmp_path / "la.png")
    opaque = rgba.copy()
    opaque[..., 3] = 255
    opaque[..., :3] = 0
    opaque[2:5, 1:3, :3] = 255
    Image.fromarray(opaque).save(tmp_path / "opaque.png")
    want = np.zeros((6, 8), bool)
    want[2:5, 1:3] = True
    assert (read_mask(tmp_path / "opaque.png") == want).all()
    Image.fromarray((want * 200).astype(np.uint8)).save(tmp_path / "grey.png")
    assert np.allclose(read_soft_mask(tmp_path / "grey.png", (6, 8)), want * 200 / 255)
    with pytest.raises(ValueError, match="is 8x6, image is 9x6"):
        read_soft_mask(tmp_path / "grey.png", (6, 9))


@pytest.mark.parametrize("batch", [False, True])
def test_to_float_rgb_is_the_one_tensor_rule(batch):
    # integers are 0..255 (a uint8 frame clamped to [0,1] turned white), bool 0/1, float clipped, NaN -> 0
    u8 = torch.tensor([[[0, 128, 255], [10, 20, 30]]], dtype=torch.uint8)
    x = u8[None] if batch else u8
    out = io.to_float_rgb(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.allclose(out, x.float() / 255)
    assert torch.equal(io.to_float_rgb(x.to(torch.int16)), out)
    assert torch.equal(io.to_float_rgb(x > 100), (x > 100).float())
    grey_alpha = torch.tensor([[[0.25, 0.0]]])
    assert torch.equal(io.to_float_rgb(grey_alpha[None] if batch else grey_alpha).flatten(), torch.full((3,), 0.25))
    f = torch.tensor([[[float("nan"), float("inf"), -2.0]]])
    assert io.to_float_rgb(f[None] if batch else f).flatten().tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="NaN"):
        io.to_float_rgb(f, nan="raise")
    with pytest.raises(ValueError, match=r"must lie in \[0,255\]"):
        io.to_float_rgb(x.to(torch.int16) * 4)
    with pytest.raises(ValueError, match="empty"):
        io.to_float_rgb(torch.zeros(0, 4, 3) if not batch else torch.zeros(0, 2, 4, 3))
    # to_float_image (single frames) follows it for tensors
    assert torch.equal(io.to_float_image(u8), io.to_float_rgb(u8))


def test_to_float_mask_is_the_one_mask_rule():
    """Masks were clamped as floats everywhere: a uint8 0/255 mask was right by luck, a soft uint8 mask (0..255) had
    every non-zero pixel full. One rule now: integers 0..255 (or 0/1 when they hold only 0 and 1), bool 0/1, float
    clipped (NaN -> 0), shape and device kept; integers outside 0..255 raise."""
    u8 = torch.tensor([[0, 102, 255], [255, 0, 51]], dtype=torch.uint8)
    assert torch.allclose(io.to_float_mask(u8), u8.float() / 255) and io.to_float_mask(u8).dtype == torch.float32
    assert torch.equal(io.to_float_mask(u8.numpy()), io.to_float_mask(u8))  # numpy too
    assert torch.equal(io.to_float_mask(u8.to(torch.int64)), io.to_float_mask(u8))
    binary = torch.tensor([[0, 1], [1, 0]])
    for m in (binary, binary.to(torch.uint8), binary.bool(), binary.float() * 255 / 255, binary.to(torch.uint8) * 255):
        assert torch.equal(io.to_float_mask(m), binary.float()), m.dtype
    f = torch.tensor([float("nan"), float("inf"), -2.0, 0.25, 3.0])
    assert io.to_float_mask(f).tolist() == [0.0, 1.0, 0.0, 0.25, 1.0]
    with pytest.raises(ValueError, match=r"prompt is an integer \(int16\) mask with values -1..300"):
        io.to_float_mask(torch.tensor([-1, 300], dtype=torch.int16), name="prompt")
    with pytest.raises(TypeError, match="mask must be a torch tensor"):
        io.to_float_mask([0, 1])


def test_library_mask_inputs_read_uint8_as_0_255():
    """Every library entry point that takes masks reads a uint8 0..255 mask as the float mask it encodes (it was
    clamped: a soft 0.4 part became full, and Instances held values of 255)."""
    from cartoonseg import Instances, Segmenter
    from cartoonseg.depth.pooling import pool_instance_depth
    from cartoonseg.inpaint import inpaint
    from cartoonseg.inpaint.diffusion import refine_background
    from cartoonseg.kenburns.render import _masks
    from cartoonseg.ops import masks_to_instances

    soft = torch.zeros(2, 12, 16)
    soft[0, 2:8, 3:12] = 1.0
    soft[0, 3:7, 4:9] = 0.4
    soft[1, 6:11, 8:15] = 1.0
    soft = torch.round(soft * 255) / 255
    u8 = (soft * 255).round().to(torch.uint8)
    for make in (masks_to_instances, Instances.from_masks):
        a, b = make(soft), make(u8)
        torch.testing.assert_close(b.masks, a.masks)
        assert torch.equal(b.boxes, a.boxes)
    got = Segmenter._prompt_instances(None, u8, 12, 16)
    torch.testing.assert_close(got.masks, Segmenter._prompt_instances(None, soft, 12, 16).masks)
    torch.testing.assert_close(_masks(u8, (12, 16))[0], soft)
    depth = torch.linspace(0, 1, 12 * 16).reshape(12, 16)
    torch.testing.assert_close(pool_instance_depth(depth, u8, soft=True).depth,
                               pool_instance_depth(depth, soft, soft=True).depth)
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8))
    assert np.array_equal(inpaint(image.numpy(), u8[0], method="telea"),
                          inpaint(image.numpy(), soft[0], method="telea"))
    seen = []

    def backend(req):
        seen.append(req.mask)
        return req.image

    res_u8, _ = refine_background(image, u8[0], backend, prompt="x", init="image")
    res_f, _ = refine_background(image, soft[0], backend, prompt="x", init="image")
    assert torch.equal(seen[0], seen[1]) and torch.equal(res_u8, res_f)
