"""Comparison criteria of the golden-parity tests, stated once (see README "Numerical parity").

The reference tensors were produced by mmdet/mmcv and the original IS-Net code on one CPU with 2 threads. Another
CPU (AVX2 instead of AVX-512), another thread count or another op order makes oneDNN pick other fp32 kernels, whose
rounding differs. The criteria below hold on every CPU without loosening what they prove:

* **features and head outputs**: ``max|x - ref| <= 1e-4 * max|ref| + 1e-6`` (golden_reference.md §4).
* **large-magnitude logits** (RTMDet's stride-8 mask logits, ~1e3; IS-Net's d1): an fp32 dot product of length n
  carries a rounding error bounded by ``~n*u*sum|w||x|`` (u = 2**-24), i.e. relative to the *accumulated magnitude*
  of its inputs, not to its own value, which cancellation can make arbitrarily small. So each logit is compared
  elementwise with ``|x - ref| <= 1e-4 * A + 1e-6`` where ``A`` is the logit layer(s) evaluated with absolute
  weights on absolute inputs (:func:`accumulated_magnitude_dynamic`, :func:`accumulated_magnitude_conv`).
* **binary masks**: a pixel may differ from the reference only where the reference logit lies within that error
  band of the threshold (0 for the logit of a 0.5 probability), i.e. where the decision is within rounding.
  Every other pixel must match exactly; there is no budget of "allowed" flips.
* **probabilities**: through the sigmoid, the band becomes ``sigmoid'(max(|ref| - band, 0)) * band`` (the largest
  slope inside the band), plus float16 storage rounding where the reference was stored as float16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

REL = 1e-4  # relative tolerance of golden_reference.md §4
ABS = 1e-6
FP16_ROUNDING = 2.0**-11  # half an ulp of float16 at 1.0 (an upper bound for probabilities in [0,1])


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> float:
    """``max|x - ref| <= 1e-4 * max|ref| + 1e-6``; returns the relative error."""
    actual, expected = actual.float(), expected.float()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= REL * scale + ABS, f"{name}: max|x-ref| = {err:.3g} > 1e-4 * {scale:.3g} + 1e-6"
    return err / max(scale, 1e-12)


def logit_band(magnitude: torch.Tensor) -> torch.Tensor:
    """The elementwise rounding band of a logit with accumulated magnitude ``magnitude``."""
    return REL * magnitude.float() + ABS


def assert_close_accumulated(actual: torch.Tensor, expected: torch.Tensor, magnitude: torch.Tensor,
                             name: str) -> float:
    """``|x - ref| <= 1e-4 * A + 1e-6`` elementwise; returns the worst ``|x - ref| / A``."""
    actual, expected = actual.float(), expected.float()
    assert actual.shape == expected.shape == magnitude.shape, name
    err = (actual - expected).abs()
    band = logit_band(magnitude)
    worst = int(torch.argmax(err - band))
    assert bool((err <= band).all()), (
        f"{name}: |x-ref| = {err.flatten()[worst].item():.3g} > band {band.flatten()[worst].item():.3g} "
        f"(accumulated magnitude {magnitude.flatten()[worst].item():.3g})")
    return (err / magnitude.float().clamp_min(1e-12)).max().item()


def assert_decisions_match(ours: torch.Tensor, ref: torch.Tensor, ref_value: torch.Tensor, threshold: float,
                           band: torch.Tensor, name: str) -> int:
    """Binary decisions ``ours`` equal ``ref`` wherever ``|ref_value - threshold| > band``; returns the number of
    (allowed) flips inside the band."""
    ours, ref = torch.as_tensor(ours).bool(), torch.as_tensor(ref).bool()
    assert ours.shape == ref.shape == ref_value.shape == band.shape, name
    flips = ours != ref
    outside = flips & ((ref_value.float() - threshold).abs() > band)
    if bool(outside.any()):
        idx = outside.nonzero()[0].tolist()
        raise AssertionError(
            f"{name}: {int(outside.sum())} of {int(flips.sum())} flipped pixels lie outside the rounding band, e.g. "
            f"at {idx}: ref value {ref_value[tuple(idx)].item():.4g}, band {band[tuple(idx)].item():.3g}")
    return int(flips.sum())


def sigmoid_band(ref_logit: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Largest change of ``sigmoid`` over ``[ref - band, ref + band]`` (slope at the point nearest 0)."""
    nearest = (ref_logit.float().abs() - band).clamp_min(0)
    slope = torch.sigmoid(nearest) * torch.sigmoid(-nearest)
    return slope * band


# ------------------------------------------------------------------------------------------- RTMDet-Ins masks
def accumulated_magnitude_dynamic(detector, mask_feat: torch.Tensor, kernels: torch.Tensor,
                                  priors: torch.Tensor) -> torch.Tensor:
    """``A`` of the stride-8 mask logits ``[N,H0,W0]``: the three dynamic 1x1 convs of RTMDet-Ins with every
    weight, bias, relative coordinate and prototype feature replaced by its absolute value (ReLU is then the
    identity)."""
    from cartoonseg.models.rtmdet_ins import grid_priors

    cfg = detector.config
    n = kernels.shape[0]
    h, w = mask_feat.shape[-2:]
    grid = grid_priors(h, w, cfg.strides[0], mask_feat.device)[:, :2]
    rel = ((priors[:, None, :2] - grid[None]) / (priors[:, None, 2:3] * 8)).abs().permute(0, 2, 1).reshape(n, 2, h, w)
    x = torch.cat([rel, mask_feat.float().abs()[None].expand(n, -1, -1, -1)], dim=1).reshape(1, -1, h, w)
    weight_sizes, bias_sizes = cfg.dynamic_param_sizes
    splits = torch.split(kernels.float().abs(), weight_sizes + bias_sizes, dim=1)
    layers = cfg.num_dyconvs
    for i in range(layers):
        out_ch = 1 if i == layers - 1 else cfg.dyconv_channels
        x = F.conv2d(x, splits[i].reshape(n * out_ch, -1, 1, 1), splits[layers + i].reshape(n * out_ch), groups=n)
    return x.reshape(n, h, w)


def upsample_mask_logits(logits: torch.Tensor, scale_factor: tuple[float, float],
                         ori_shape: tuple[int, int]) -> torch.Tensor:
    """mmdet's mask rescale of stride-8 logits ``[N,H0,W0]`` (x8 bilinear, resize to
    ``ceil(h8/scale_factor[0]) x ceil(w8/scale_factor[1])``, crop): the same convex interpolation maps reference
    logits and their bands to image pixels."""
    h8, w8 = logits.shape[-2] * 8, logits.shape[-1] * 8
    size = [math.ceil(h8 / scale_factor[0]), math.ceil(w8 / scale_factor[1])]
    up = F.interpolate(logits.float()[None], scale_factor=8.0, mode="bilinear")
    up = F.interpolate(up, size=size, mode="bilinear", align_corners=False)
    return up[0, :, : ori_shape[0], : ori_shape[1]]


# ------------------------------------------------------------------------------------------- IS-Net d1
def accumulated_magnitude_conv(conv: torch.nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """``A`` of a conv's outputs: the conv with absolute weights and bias on absolute inputs."""
    bias = None if conv.bias is None else conv.bias.abs()
    return F.conv2d(inputs.float().abs(), conv.weight.float().abs(), bias, conv.stride, conv.padding,
                    conv.dilation, conv.groups)


def isnet_d1_magnitude(refiner, x: torch.Tensor) -> torch.Tensor:
    """``A`` of IS-Net's d1 logits for input ``x`` (side1's conv on its input, upsampled like d1)."""
    captured = {}
    handle = refiner.side1.register_forward_hook(lambda module, args, out: captured.setdefault("x", args[0]))
    try:
        with torch.no_grad():
            refiner.predict_logits(x)
    finally:
        handle.remove()
    with torch.no_grad():
        mag = accumulated_magnitude_conv(refiner.side1, captured["x"])
    return F.interpolate(mag, size=x.shape[-2:], mode="bilinear", align_corners=False)
