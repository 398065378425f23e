"""Pixels at the boundary: the one home for converting, reading and writing images, masks, depth maps and clips
(one image's segmentation results as files: :mod:`cartoonseg.instance_files`).

One policy for every entry point (library, CLI, ComfyUI nodes):

* **Channels**: RGB. Grey (1 channel) is replicated to three channels; grey + alpha (2 channels, ``[H,W,2]``, as
  PIL's ``LA`` manga/line-art files) is grey replicated plus that alpha, so it follows the alpha rule like RGBA.
  Alpha is dropped from arrays (``alpha="drop"``, the library's rule) and composited on white when a file is read (transparent cut-outs are the common case in this
  field); ``alpha="keep"`` returns RGBA where the input has transparency (the tagger composites it itself).
* **Range**: uint8 stays; float is taken as [0,1] and clipped; bool is 0/255; other integers must lie in [0,255]
  (a ``uint16`` array holding 16-bit values is ambiguous and raises). 16-bit *files* are scaled to 8 bits.
* **Masks** (:func:`to_float_mask`, every mask input of the library and the nodes): float32 in [0,1]; bool is 0/1,
  integers (uint8 and the others) are 0..255 unless they hold only 0 and 1 (a binary mask, as ``.long()`` or
  ``astype(np.uint8)`` of a bool mask gives), float is clipped; integers outside 0..255 raise.
* **NaN / Inf**: ``nan="raise"`` (the API: a ``ValueError``) or ``nan="zero"`` (NaN -> 0, +Inf -> 1, -Inf -> 0; for
  ComfyUI IMAGEs and application inputs, so one bad pixel does not stop a graph).
* **Size**: empty images raise; images over :data:`MAX_PIXELS` raise before any copy.
* **Files**: unreadable, truncated or decompression-bomb files raise ``ValueError("cannot read image PATH: ...")``;
  so do animations (GIF, WebP or APNG of several frames: a reader returns one picture and will not silently drop
  the other frames).

Writers create the parent folder and write atomically (a temporary name, then a rename). :func:`write_frames` writes
a clip as an animated ``.webp``, an ``.mp4`` (H.264 through PyAV, the optional extra ``video``) or a folder of
numbered PNG files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .outputs import atomic_path

__all__ = [
    "CLIP_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MAX_FPS",
    "MAX_FRAMES",
    "MAX_PIXELS",
    "MIN_FPS",
    "GREY16_SUFFIXES",
    "WEBP_MAX_SIDE",
    "check_clip_path",
    "check_clip_size",
    "check_fps",
    "check_image_file",
    "check_image_path",
    "has_alpha",
    "read_depth",
    "read_grey",
    "read_soft_mask",
    "read_image",
    "read_mask",
    "to_float_image",
    "to_float_mask",
    "to_float_rgb",
    "to_rgb_uint8",
    "upright",
    "write_frames",
    "write_grey",
    "write_image",
]

#: Largest image accepted (pixels); larger inputs are almost always a mistake (e.g. a 30k x 30k scan).
MAX_PIXELS = 16384 * 16384
#: File endings taken as images when a folder is given as input.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: File endings :func:`write_grey` writes 16-bit maps to: the formats that store 16-bit grey (others, e.g. WebP or
#: JPEG, hold 8 bits at most: Pillow clips the values there, a white picture, or refuses after the work is done).
GREY16_SUFFIXES = (".png", ".tif", ".tiff")
#: What :func:`write_frames` writes: an animated WEBP, an H.264 MP4, or (no suffix) a folder of PNG frames.
CLIP_SUFFIXES = (".webp", ".mp4")
#: Frame rates a clip may have (frames per second), for every clip writer and renderer (Ken Burns, puppet): the
#: frame time then fits every format :func:`write_frames` writes (WebP stores whole milliseconds in
#: [1, 2**24 - 1]; the MP4 time base is a fraction with a denominator of at most 1001).
MIN_FPS = 0.01
MAX_FPS = 240.0
#: Most frames of one rendered clip (Ken Burns, puppet): a clip is held in memory before it is written.
MAX_FRAMES = 10000
#: Longest frame side of a WebP picture (14-bit sizes); :func:`check_clip_size` checks clips against it.
WEBP_MAX_SIDE = 16383
#: WebP's frame duration field: whole milliseconds in [1, 2**24 - 1].
_WEBP_MAX_MS = 2**24 - 1

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_NAN_RULES = ("raise", "zero")
_ALPHA_RULES = ("drop", "white", "keep")


# ---------------------------------------------------------------------------------------------- conversion
def has_alpha(image) -> bool:
    """Whether a ``PIL.Image`` carries transparency (an alpha band or a transparency key)."""
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def _pil_to_array(image) -> np.ndarray:
    """A ``PIL.Image`` (any mode) as uint8 ``[H,W,3]`` RGB or ``[H,W,4]`` RGBA; 16/32-bit grey scaled to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's convert("RGB") clips these at 255 (a white picture): scale instead
        grey = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0
        if image.mode == "F" and grey.size and np.nanmax(grey) <= 1.0:
            top = 1.0  # float TIFFs in [0,1]
        rgb = np.repeat(np.clip(np.nan_to_num(grey / top * 255.0 + 0.5), 0, 255).astype(np.uint8)[:, :, None], 3, 2)
        key = image.info.get("transparency")
        if isinstance(key, int) and not isinstance(key, bool):  # a grey key (PNG tRNS): those pixels are transparent
            alpha = np.where(np.asarray(image) == key, 0, 255).astype(np.uint8)
            return np.concatenate([rgb, alpha[:, :, None]], axis=2)
        return rgb
    return np.asarray(image.convert("RGBA" if has_alpha(image) else "RGB"))


def to_rgb_uint8(image, *, nan: str = "raise", alpha: str = "drop") -> np.ndarray:
    """Validate an image and return it as a C-contiguous numpy uint8 ``[H,W,3]`` RGB array (see the module rules).

    Args:
        image: numpy array or torch tensor ``[H,W]``, ``[H,W,1]``, ``[H,W,2]`` (grey + alpha), ``[H,W,3]`` or
            ``[H,W,4]`` (uint8, float in
            [0,1], bool or integers in [0,255]), or a ``PIL.Image``.
        nan: ``"raise"`` (ValueError on NaN/Inf) or ``"zero"`` (NaN -> 0, ±Inf clamped).
        alpha: ``"drop"`` the fourth channel, composite it on ``"white"``, or ``"keep"`` it (``[H,W,4]`` out).

    Raises:
        ValueError: empty, wrongly shaped, oversized, NaN (with ``nan="raise"``) or out-of-range integer input.
        TypeError: another type or dtype.
    """
    if nan not in _NAN_RULES:
        raise ValueError(f"nan must be one of {_NAN_RULES}, got {nan!r}")
    if alpha not in _ALPHA_RULES:
        raise ValueError(f"alpha must be one of {_ALPHA_RULES}, got {alpha!r}")
    if isinstance(image, Tensor):
        image = image.detach().cpu()
        if image.dtype in (torch.bfloat16, torch.float16):
            image = image.float()
        image = image.numpy()
    elif not isinstance(image, np.ndarray) and hasattr(image, "mode") and hasattr(image, "size"):  # PIL.Image
        if image.width * image.height > MAX_PIXELS:
            raise ValueError(f"image of {image.width}x{image.height} pixels exceeds the {MAX_PIXELS}-pixel limit")
        image = _pil_to_array(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array or torch tensor [H,W,3], got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"image must have shape [H,W], [H,W,1], [H,W,2], [H,W,3] or [H,W,4], got {image.shape}")
    if image.shape[2] == 2:  # grey + alpha -> RGBA (a view until the dtype conversion below copies)
        image = image[:, :, [0, 0, 0, 1]]
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    if h * w > MAX_PIXELS:
        raise ValueError(f"image of {w}x{h} pixels exceeds the {MAX_PIXELS}-pixel limit; downscale it first")
    if image.dtype == np.uint8:
        out = image
    elif np.issubdtype(image.dtype, np.floating):
        if nan == "raise" and not np.isfinite(image).all():
            raise ValueError("image contains NaN or infinite values")
        out = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        out = (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif image.dtype == np.bool_ or np.issubdtype(image.dtype, np.integer):
        if image.dtype != np.bool_ and (image.min() < 0 or image.max() > 255):
            raise ValueError(f"integer image values must lie in [0,255], got [{image.min()}, {image.max()}]")
        out = image.astype(np.uint8) * (255 if image.dtype == np.bool_ else 1)
    else:
        raise TypeError(f"unsupported image dtype {image.dtype}; use uint8 or float in [0,1]")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4 and alpha == "white":
        from PIL import Image

        canvas = Image.new("RGBA", (w, h), (255, 255, 255, 255))
        canvas.alpha_composite(Image.fromarray(np.ascontiguousarray(out), "RGBA"))
        out = np.asarray(canvas.convert("RGB"))
    elif out.shape[2] == 4 and alpha == "drop":
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def to_float_rgb(image: Tensor, *, nan: str = "zero", name: str = "image") -> Tensor:
    """A torch image ``[H,W,C]`` or batch ``[B,H,W,C]`` (C = 1, 2, 3 or 4) of any dtype as float32 RGB in [0,1],
    its rank and device kept: the rules of :func:`to_rgb_uint8` without a trip through uint8. Integers are 0..255
    (uint8 frames of other tools; others outside 0..255 raise ValueError), bool is 0/1, float is clipped to [0,1]
    (NaN -> 0, +Inf -> 1, -Inf -> 0 with ``nan="zero"``; a ValueError with ``nan="raise"``); grey is replicated,
    alpha dropped. The one home of this rule for tensors: never ``image.float().clamp(0, 1)`` an input, which turns
    a uint8 frame white."""
    if nan not in _NAN_RULES:
        raise ValueError(f"nan must be one of {_NAN_RULES}, got {nan!r}")
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [H,W,3] or [B,H,W,3], got {type(image).__name__}")
    if image.dim() not in (3, 4) or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{name} must be [H,W,3] or [B,H,W,3] (1 to 4 channels), got shape {tuple(image.shape)}")
    if image.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(image.shape)}")
    if image.shape[-3] * image.shape[-2] > MAX_PIXELS:
        raise ValueError(f"{name} of {image.shape[-2]}x{image.shape[-3]} pixels exceeds the {MAX_PIXELS}-pixel limit")
    image = image.detach()
    image = image[..., :1].expand(*image.shape[:-1], 3) if image.shape[-1] in (1, 2) else image[..., :3]
    if image.dtype == torch.bool:
        return image.float().contiguous()
    if image.is_complex():
        raise TypeError(f"unsupported {name} dtype {image.dtype}; use uint8 or float in [0,1]")
    if not image.is_floating_point():
        lo, hi = int(image.min()), int(image.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{name} is an integer ({str(image.dtype).replace('torch.', '')}) tensor with values "
                             f"{lo}..{hi}; integer image values must lie in [0,255] (float images in [0,1])")
        return (image.float() / 255.0).contiguous()
    image = image.float()
    if nan == "raise" and not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return torch.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1).contiguous()


def to_float_mask(mask, *, name: str = "mask") -> Tensor:
    """A mask (torch tensor or numpy array, any shape and dtype) as float32 in [0,1], its shape kept (and a tensor's
    device): the one reading of masks for every entry point, as :func:`to_float_rgb` is for images.

    * bool: 0/1.
    * integers (uint8, the masks of OpenCV, PIL and other ComfyUI packs, and every other integer dtype): 0..255,
      i.e. divided by 255, so a 0/255 mask equals the float 0/1 mask and a soft uint8 mask keeps its values. A mask
      that holds only 0 and 1 (over the whole tensor) is binary instead (``(m > 0).long()``, ``astype(np.uint8)``
      of a bool mask): 1 is full, never 1/255. Values outside 0..255 raise ValueError.
    * float: NaN -> 0, +Inf -> 1, -Inf -> 0, clipped to [0,1] (values above 1 are full, not rescaled).

    Never ``mask.float().clamp(0, 1)`` an input mask: that turns every non-zero pixel of a uint8 mask full."""
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.array(mask, copy=True))
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(mask).__name__}")
    mask = mask.detach()
    if mask.dtype == torch.bool:
        return mask.float()
    if mask.is_complex():
        raise TypeError(f"unsupported {name} dtype {mask.dtype}; use float in [0,1], uint8 0..255 or bool")
    if not mask.is_floating_point():
        if mask.numel() == 0:
            return mask.float()
        lo, hi = int(mask.min()), int(mask.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{name} is an integer ({str(mask.dtype).replace('torch.', '')}) mask with values "
                             f"{lo}..{hi}; integer masks must lie in 0..255 (255 = full) or hold only 0 and 1 "
                             f"(float masks in [0,1])")
        return mask.float() if hi <= 1 else mask.float() / 255.0
    return torch.nan_to_num(mask.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)


def to_float_image(image, *, nan: str = "raise") -> Tensor:
    """Any image :func:`to_rgb_uint8` accepts as a float32 ``[H,W,3]`` tensor in [0,1] on the CPU (the ComfyUI frame
    layout), by the same rules (alpha dropped); float input keeps its precision instead of passing through uint8
    (tensors: :func:`to_float_rgb`)."""
    if isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):
        image = torch.from_numpy(np.array(image, dtype=np.float32))
    if not isinstance(image, Tensor):
        return torch.from_numpy(to_rgb_uint8(image, nan=nan).astype(np.float32) / 255.0)
    if image.dim() == 2:
        image = image[..., None]
    if image.dim() != 3:
        raise ValueError(f"image must have shape [H,W], [H,W,1], [H,W,2], [H,W,3] or [H,W,4], got {tuple(image.shape)}")
    return to_float_rgb(image.detach().cpu(), nan=nan)


# ---------------------------------------------------------------------------------------------- reading
def _open_header(path: str | os.PathLike, what: str):
    """Open an image file without decoding its pixels: only regular files (a FIFO, device or folder would block or
    fail deep inside), at most :data:`MAX_PIXELS`, one picture (no animation). Every failure becomes
    ``ValueError("cannot read <what> PATH: ...")``."""
    import stat

    from PIL import Image, UnidentifiedImageError

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise ValueError(f"cannot read {what} {path}: it is {kind}")
    im = None
    try:
        im = _open_within_limit(Image, path)
        if im.width * im.height > MAX_PIXELS:
            raise ValueError(f"{im.width}x{im.height} px is over the {MAX_PIXELS}-pixel limit")
        _check_single_picture(im)
        return im
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        if im is not None:
            im.close()
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc


def _open(path: str | os.PathLike, what: str):
    """Open and fully decode an image file as every reader sees it (the checks of :func:`_open_header`), EXIF
    orientation applied (a phone photo comes out upright, as viewers show it), other colour spaces converted to RGB
    (:func:`_to_rgb_space`). Every failure becomes ``ValueError("cannot read <what> PATH: ...")``."""
    from PIL import Image, UnidentifiedImageError

    im = _open_header(path, what)
    try:
        im.load()
        im = upright(im)
        return _to_rgb_space(im)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        im.close()
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc


def check_image_file(path: str | os.PathLike, what: str = "image") -> tuple[int, int]:
    """Check, cheaply, that an image file can be read: what every reader checks before decoding (a regular file,
    a format Pillow knows, at most :data:`MAX_PIXELS`, not an animation), from its header, without decoding the
    pixels. Commands call it for every input before loading their networks, so an unreadable input fails (or is
    skipped) in a moment instead of after the weights load. A file damaged after its header (truncated) passes:
    only decoding shows that. Returns ``(height, width)`` as read (EXIF orientation applied); raises
    ``ValueError("cannot read <what> PATH: ...")`` as the readers do."""
    with _open_header(path, what) as im:
        w, h = im.size
        try:
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # a quarter turn swaps the sides (upright)
        except Exception:  # noqa: BLE001 - a malformed EXIF block is ignored, as upright() does
            turned = False
    return (w, h) if turned else (h, w)


#: Pillow formats whose several frames are an animation (played one after another). A multi-page TIFF or a camera
#: MPO (a JPEG with a preview or depth picture behind it) holds its main picture first, as viewers show it.
_ANIMATED_FORMATS = ("GIF", "WEBP", "PNG")


def _check_single_picture(im) -> None:
    """Refuse an animation (GIF, WebP, APNG of several frames): every reader returns one picture, and reading its
    first frame only would drop the rest without a word."""
    if im.format in _ANIMATED_FORMATS and getattr(im, "is_animated", False):
        raise ValueError(f"it is an animated {'APNG' if im.format == 'PNG' else im.format} of {im.n_frames} frames, "
                         "and this reads one picture: save its frames as separate images (`segment` takes their folder: "
                         "one result per frame), or load it in ComfyUI, whose Load Image gives every frame as an "
                         "IMAGE batch")


def _open_within_limit(Image, path):
    """``Image.open`` with Pillow's decompression-bomb check at :data:`MAX_PIXELS` (Pillow's own default refuses
    files from 179 M px, below the documented limit) for this call only: the process-wide setting is put back at
    once, so a host application (ComfyUI) keeps its own."""
    import warnings

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2  # Pillow refuses above twice this, warns above it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def upright(im):
    """Apply the EXIF orientation tag (2-8) so pixels are in display orientation; untouched (no copy) otherwise."""
    from PIL import ImageOps

    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block is ignored, as viewers do
        return im
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return im
    out = ImageOps.exif_transpose(im)
    im.close()
    return out


def _to_rgb_space(im):
    """CMYK and CIE L*a*b* files -> RGB: through their embedded ICC profile when they carry one (LittleCMS via
    ``PIL.ImageCms``, to sRGB), L*a*b* otherwise through the CIE definition (D50), CMYK otherwise through Pillow's
    profile-less formula (the best a file without a profile allows). Other modes pass unchanged."""
    if im.mode not in ("CMYK", "LAB"):
        return im
    from io import BytesIO

    from PIL import ImageCms

    icc = im.info.get("icc_profile")
    try:
        source = ImageCms.ImageCmsProfile(BytesIO(icc)) if icc else (
            ImageCms.createProfile("LAB") if im.mode == "LAB" else None)
        if source is None:
            return im.convert("RGB")
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), im.mode, "RGB",
                                            renderingIntent=0)  # perceptual
        return ImageCms.applyTransform(im, transform)
    except (ImageCms.PyCMSError, OSError, TypeError) as exc:
        raise ValueError(f"its {im.mode} colour profile cannot be applied ({exc})") from exc


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 ``[H,W,3]`` RGB: transparency composited on white, grey replicated, 16-bit scaled."""
    with _open(path, "image") as im:
        return to_rgb_uint8(im, alpha="white")


def read_grey(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """A grey file (8 or 16 bit; colour is converted to luma) as float32 ``[H,W]`` in [0,1], keeping 16-bit
    precision."""
    with _open(path, what) as im:
        return _grey(im)


def _grey(im) -> np.ndarray:
    """An opened image as float32 ``[H,W]`` in [0,1] (the rule of :func:`read_grey`)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32))
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if im.mode == "F" and arr.size and arr.max() <= 1.0:
            top = 1.0
        return np.clip(arr / top, 0.0, 1.0)
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def read_soft_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as float32 ``[H,W]`` in [0,1] (grey value, white = on; soft edges kept). With ``shape`` (H, W),
    another size raises ValueError.

    A file with transparent pixels (a cut-out PNG, a mask painted on a transparent layer) raises ValueError: what
    its transparency means differs between tools (a cut-out: opaque = on; ComfyUI's Load Image: transparent =
    masked), and its grey values alone (a cut-out read as all white) are not the mask. Fully opaque alpha is fine.
    """
    with _open(path, "mask") as im:
        if has_alpha(im) and not im.mode.startswith(("I", "F")):
            alpha = np.asarray(im.convert("RGBA"))[:, :, 3]
            if (alpha < 255).any():
                raise ValueError(
                    f"mask {path} has transparent pixels ({int((alpha < 255).sum())} of {alpha.size}), which tools "
                    "read differently (a cut-out: opaque = on; ComfyUI's Load Image: transparent = masked); save "
                    "the mask as a grey image without transparency, white = on")
        m = _grey(im)
    if shape is not None and m.shape != tuple(shape):
        raise ValueError(f"mask {path} is {m.shape[1]}x{m.shape[0]}, image is {shape[1]}x{shape[0]}")
    return m


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as bool ``[H,W]`` (white / > 0.5 = on; :func:`read_soft_mask`'s rules)."""
    return read_soft_mask(path, shape) > 0.5


def read_depth(path: str | os.PathLike) -> Tensor:
    """A grey depth map as float32 ``[H,W]`` in [0,1], larger = nearer.

    8- and 16-bit files (PNG, TIFF, ...; colour is converted to luma) are scaled by their range. 32-bit files (TIFF)
    are read only where their values say what they mean: float values in [0,1] as they are (NaN -> 0), integer
    values in [0,65535] as 16-bit values (all in [0,255]: as 8-bit ones, the rule of :func:`read_grey`). Anything
    else (metric depth in metres, where larger = farther; negative or larger values) raises ValueError: it cannot be
    read as nearness without knowing its convention, and scaling or clipping it would give a wrong map silently.
    """
    with _open(path, "depth map") as im:
        if im.mode in ("F", "I"):
            arr = np.asarray(im)
            known = arr[~np.isnan(arr)] if im.mode == "F" else arr
            lo, hi = (float(known.min()), float(known.max())) if known.size else (0.0, 0.0)
            top = 1 if im.mode == "F" else 65535
            if lo < 0 or hi > top:
                kind = "float" if im.mode == "F" else "integer"
                raise ValueError(
                    f"depth map {path} is a 32-bit {kind} file with values in [{lo:g}, {hi:g}]; such files are read "
                    f"only with values in [0, {top}] (larger = nearer). Normalise it to that range (invert metric "
                    "depth, where larger = farther) or save it as an 8- or 16-bit PNG")
        return torch.from_numpy(_grey(im))


# ---------------------------------------------------------------------------------------------- writing
def _target(path: str | os.PathLike):
    """Where a writer writes: the parent folder is made and the file appears atomically (a temporary name in the same
    folder, renamed on success: :func:`cartoonseg.outputs.atomic_path`). Commands add the ownership rules of
    :mod:`cartoonseg.outputs` around these writers (never over inputs or files cartoonseg did not write)."""
    return atomic_path(path)


def check_image_path(path: str | os.PathLike, *, bits: int = 8) -> None:
    """ValueError unless :func:`write_image` (``bits=8``) or :func:`write_grey` (``bits=8|16``) can write ``path``:
    its ending must name a format Pillow writes, and 16-bit grey one of :data:`GREY16_SUFFIXES`. Commands call it
    before their work, so a bad ``--out`` fails at once instead of after the computation."""
    from PIL import Image

    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    suffix = Path(path).suffix.lower()
    Image.init()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot write {path}: {suffix or 'no file ending'} is not an image format that can be "
                         f"written; use e.g. .png")
    if bits == 16 and suffix not in GREY16_SUFFIXES:
        raise ValueError(f"cannot write {path} with 16 bits: {suffix} holds 8 bits at most; use "
                         f"{' or '.join(GREY16_SUFFIXES)} for 16 bits, or 8 bits")


def write_image(path: str | os.PathLike, image, *, alpha: str = "drop", **save_options) -> Path:
    """Write an image (anything :func:`to_rgb_uint8` accepts, NaN -> 0; ``[H,W]`` stays grey; ``alpha="keep"``
    writes RGBA) with Pillow."""
    from PIL import Image

    if isinstance(image, (np.ndarray, Tensor)) and image.ndim == 2:
        array = to_rgb_uint8(image, nan="zero")[:, :, 0]
    else:
        array = to_rgb_uint8(image, nan="zero", alpha=alpha)
    with _target(path) as tmp:
        Image.fromarray(array).save(tmp, **save_options)
    return Path(path)


def write_grey(path: str | os.PathLike, x, bits: int = 8) -> Path:
    """Write a float ``[H,W]`` map in [0,1] (NaN -> 0, clipped) as an 8- or 16-bit grey image (16 bits: PNG or TIFF,
    :data:`GREY16_SUFFIXES`; another ending raises ValueError, see :func:`check_image_path`)."""
    from PIL import Image

    check_image_path(path, bits=bits)
    x = x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"a grey map must be [H,W], got shape {x.shape}")
    x = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0), 0, 1)
    top, dtype = (65535, np.uint16) if bits == 16 else (255, np.uint8)
    with _target(path) as tmp:
        Image.fromarray((x * top + 0.5).astype(dtype)).save(tmp)
    return Path(path)


def _frames_uint8(frames, name: str) -> np.ndarray:
    """``[T,H,W,3]`` / ``[T,H,W]`` float in [0,1] or uint8 (numpy or torch) -> uint8 numpy, NaN -> 0."""
    if isinstance(frames, Tensor):
        frames = frames.detach().cpu()
        if frames.is_floating_point():
            frames = (torch.nan_to_num(frames.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1) * 255 + 0.5)
            frames = frames.to(torch.uint8)
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating):
            raise TypeError(f"{name} must be uint8 or float in [0,1], got {frames.dtype}")
        frames = (np.clip(np.nan_to_num(frames, nan=0.0, posinf=1.0, neginf=0.0), 0, 1) * 255 + 0.5).astype(np.uint8)
    if frames.ndim == 4 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3) or 0 in frames.shape:
        raise ValueError(f"{name} must be a non-empty [T,H,W,3] (or [T,H,W] grey) sequence, got shape {frames.shape}")
    return frames


def _mp4_encoder():
    """``(av, codec name)`` of the encoder :func:`write_frames` writes ``.mp4`` files with; MissingDependencyError
    without PyAV, RuntimeError when its build has no H.264 or MPEG-4 encoder."""
    from ._optional import require

    av = require("av", extra="video", package="av", purpose="writing .mp4 files")
    codec = next((c for c in ("libx264", "h264", "mpeg4") if c in av.codecs_available), None)
    if codec is None:
        raise RuntimeError("this PyAV build has no H.264 or MPEG-4 encoder; write a .webp or a folder instead")
    return av, codec


def check_clip_path(path: str | os.PathLike) -> str:
    """Check that :func:`write_frames` can write ``path`` and return its lower-case suffix (``""`` for a folder):
    the ending must be one of :data:`CLIP_SUFFIXES` or none (ValueError), and an ``.mp4`` needs PyAV with an
    encoder (MissingDependencyError / RuntimeError). Commands call it before their work, so a clip that cannot be
    written fails at once instead of after the rendering."""
    suffix = Path(path).suffix.lower()
    if suffix and suffix not in CLIP_SUFFIXES:
        raise ValueError(f"a clip is written as {' or '.join(CLIP_SUFFIXES)} or into a folder, got {path}")
    if suffix == ".mp4":
        _mp4_encoder()
    return suffix


def _clip_max_side(suffix: str) -> int | None:
    """Longest frame side (pixels) a clip of ``suffix`` holds (None: no limit short of :data:`MAX_PIXELS`): WebP
    stores 14-bit sides (16383); libx264 refuses frames over 16384 px a side; the MPEG-4 Part 2 fallback stores
    13-bit sides, and odd sides are padded to even, so 8190."""
    if suffix == ".webp":
        return WEBP_MAX_SIDE
    if suffix == ".mp4":
        return 8190 if _mp4_encoder()[1] == "mpeg4" else 16384
    return None


def check_clip_size(path: str | os.PathLike, size_hw: tuple[int, int], *, smaller: str = "smaller frames") -> None:
    """ValueError when frames of ``size_hw`` (height, width) do not fit the clip format of ``path`` (see
    :func:`check_clip_path`, which it also runs): it names the size, the format's limit and what to do instead:
    ``smaller`` (how the caller makes the frames smaller, e.g. ``"a smaller --size"``) or another format that holds
    them. Renderers call it before rendering, so an oversized clip fails at once instead of in the writer."""
    suffix = check_clip_path(path)
    limit = _clip_max_side(suffix)
    h, w = (int(v) for v in size_hw)
    if limit is None or max(h, w) <= limit:
        return
    others = []
    for other in CLIP_SUFFIXES:
        if other != suffix:
            try:
                if max(h, w) <= _clip_max_side(other):
                    others.append(other)
            except (ImportError, RuntimeError):  # no PyAV (MissingDependencyError is an ImportError) or encoder
                pass
    kind = {".webp": "WebP", ".mp4": "this PyAV's MPEG-4 encoder" if limit < 16384 else "H.264 (libx264)"}[suffix]
    raise ValueError(f"frames of {w}x{h} px do not fit a {suffix} clip: {kind} stores at most {limit} px per side; "
                     f"use {smaller}, or write {' or '.join([*others, 'a folder of PNG frames'])}")


def _write_mp4(path: Path, rgb: np.ndarray, fps: float, crf: int) -> None:
    av, codec = _mp4_encoder()
    if rgb.ndim == 3:
        rgb = np.repeat(rgb[..., None], 3, axis=3)
    # H.264 in yuv420p needs even sides: repeat the last row/column where a side is odd
    t, h, w = rgb.shape[:3]
    rgb = np.pad(rgb, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = rgb.shape[2], rgb.shape[1], "yuv420p"
        if codec != "mpeg4":
            stream.options = {"crf": str(int(crf))}
        for frame in rgb:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def check_fps(fps, name: str = "fps") -> float:
    """``fps`` as a float when it is a finite frame rate in [:data:`MIN_FPS`, :data:`MAX_FPS`]; else ValueError
    naming ``name`` (e.g. ``"--fps"``) and the allowed range."""
    try:
        value = float(fps)
        ok = not isinstance(fps, bool) and math.isfinite(value) and MIN_FPS <= value <= MAX_FPS
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a number of frames per second in [{MIN_FPS:g}, {MAX_FPS:g}], got {fps!r}")
    return value


def _webp_durations(n: int, fps: float) -> list[int]:
    """Whole-millisecond durations of ``n`` WebP frames at ``fps``: frame ``i`` ends at ``round(1000 * (i + 1) /
    fps)`` ms, so the clip lasts ``n / fps`` seconds to the millisecond (one rounded duration for every frame
    drifts: 83 ms at 12 fps loses 4 ms a second), and libwebp, which merges identical consecutive frames into one
    with their durations added, keeps the timing of every change."""
    ends = [round(1000.0 * (i + 1) / fps) for i in range(n)]
    # every fps check_fps allows gives durations in [4, 100000] ms, inside WebP's [1, 2**24 - 1]
    return [min(max(1, b - a), _WEBP_MAX_MS) for a, b in zip([0, *ends[:-1]], ends)]


def write_frames(frames, out: str | os.PathLike, fps: float = 25.0, *, quality: int = 90, crf: int = 18,
                 extra: Mapping[str, object] | None = None) -> list[Path]:
    """Write a clip ``[T,H,W,3]`` (float in [0,1] or uint8, numpy or torch) and return the written paths.

    Args:
        out: ``*.webp`` (animated WEBP, loops forever; libwebp stores a run of identical consecutive frames as
            one frame showing for their total time, so a reader may count fewer frames than written, with the
            same timing: write a folder or ``.mp4`` where every frame must stay a frame), ``*.mp4`` (H.264 yuv420p through PyAV: the optional extra
            ``video``; odd sides are padded by one repeated row/column) or a folder (no suffix):
            ``frame_00000.png``, ``frame_00001.png``, ...
        fps: frames per second, in [:data:`MIN_FPS`, :data:`MAX_FPS`] (checked by :func:`check_fps`: every
            format can then store the frame time).
        quality: WEBP quality 0..100.
        crf: H.264 constant rate factor (0 = lossless, 18 = visually lossless, 51 = worst).
        extra: more sequences of the same length written beside the frames in folder mode only, by name
            prefix: ``{"disocclusion": masks}`` -> ``disocclusion_00000.png``, ...

    Raises:
        ValueError: an unknown suffix, bad fps, a malformed sequence, or frames larger than the format holds
            (:func:`check_clip_size`: 16383 px a side in ``.webp``, 16384 in H.264 ``.mp4``).
        MissingDependencyError: ``.mp4`` without PyAV installed.
    """
    fps = check_fps(fps)
    out = Path(out)
    suffix = check_clip_path(out)
    rgb = _frames_uint8(frames, "frames")
    check_clip_size(out, rgb.shape[1:3])
    if suffix == ".webp":
        from PIL import Image

        images = [Image.fromarray(f) for f in rgb]
        with _target(out) as tmp:
            images[0].save(tmp, save_all=True, append_images=images[1:], duration=_webp_durations(len(rgb), fps),
                           loop=0, quality=int(quality), method=4)
        return [out]
    if suffix == ".mp4":
        with _target(out) as tmp:
            _write_mp4(tmp, rgb, fps, crf)
        return [out]
    from PIL import Image

    sequences = {"frame": rgb}
    for name, seq in (extra or {}).items():
        seq = _frames_uint8(seq, name)
        if len(seq) != len(rgb):
            raise ValueError(f"{name} has {len(seq)} frames, the clip {len(rgb)}")
        sequences[name] = seq
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(len(rgb)):
        for name, seq in sequences.items():
            with _target(out / f"{name}_{i:05d}.png") as tmp:
                Image.fromarray(seq[i]).save(tmp)
        written.append(out / f"frame_{i:05d}.png")
    return written
