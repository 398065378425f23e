"""The layer model shared by the puppet and Ken Burns renderers (cartoonseg.compositing): layers un-mixed from an
image over a plate and painted back to front give the image back, one layer is the plain un-mixing, divisions are
guarded, and both renderers un-mix a soft edge alike."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from cartoonseg.compositing import EPS, background_behind, over_opacity, unmix_over_plate


def _layers(seed: int = 0, n: int = 3, size: int = 24):
    """Mattes composed front to back (far to near, summing to at most 1, some pixels fully covered), colours, a
    plate and the image of the model ``I = sum m_k F_k + (1 - sum m_k) B``."""
    g = torch.Generator().manual_seed(seed)
    claims = torch.rand(n, size, size, generator=g)
    claims[:, :4] = 0.0  # plate only
    claims[-1, -4:] = 1.0  # the nearest layer covers these rows in full
    taken = torch.zeros(size, size)
    mattes = []
    for c in claims.flip(0):  # near to far
        share = c * (1.0 - taken)
        mattes.append(share)
        taken = taken + share
    mattes = mattes[::-1]
    colours = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    plate = torch.rand(3, size, size, generator=g)
    total = sum(mattes)
    image = sum(m * f for m, f in zip(mattes, colours)) + (1.0 - total) * plate
    return image, plate, mattes, colours


def _paint(plate, mattes, premults):
    """Back to front "over" with each layer's opacity over what the nearer layers leave."""
    frame = plate.clone()
    fronts, front = [], torch.zeros_like(mattes[0])
    for m in mattes[::-1]:
        fronts.append(front)
        front = front + m
    for m, p, front in zip(mattes, premults, fronts[::-1]):
        a = over_opacity(m, front)
        frame = frame * (1.0 - a) + torch.minimum(over_opacity(p, front), a)
    return frame


def test_layers_unmixed_over_the_plate_and_painted_back_to_front_give_back_the_image():
    image, plate, mattes, colours = _layers()
    exact = unmix_over_plate(image, plate, mattes, colours)
    for m, f, p in zip(mattes, colours, exact):
        assert torch.allclose(p, m * f, atol=1e-5)
    # rough estimates of the colours: what they leave unexplained goes back in proportion to the mattes
    rough = [(f + 0.2).clamp(0, 1) for f in colours]
    premults = unmix_over_plate(image, plate, mattes, rough)
    for m, p in zip(mattes, premults):
        assert bool((p >= 0).all()) and bool((p <= m + 1e-7).all())
    assert torch.allclose(_paint(plate, mattes, exact), image, atol=1e-5)
    # the un-mixed colours over the plate explain the image wherever nothing was clipped to [0, m]
    explained = sum(premults) + (1.0 - sum(mattes)) * plate
    unclipped = sum((p > 0) & (p < m) for m, p in zip(mattes, premults)) == len(mattes)
    assert bool(unclipped.any()) and torch.allclose(explained[unclipped], image[unclipped], atol=1e-5)


def test_one_layer_is_the_plain_unmixing_whatever_the_estimate():
    image, plate, mattes, _ = _layers(seed=1, n=1)
    m = mattes[0]
    plain = torch.minimum((image - (1.0 - m) * plate).clamp_min(0.0), m.expand_as(image))
    for estimate in (image, torch.zeros_like(image), torch.ones_like(image)):
        assert torch.allclose(unmix_over_plate(image, plate, [m], [estimate])[0], plain, atol=1e-5)
    # and the background it leaves is the plate where nothing was clipped (the image where the layer covers all)
    premult = unmix_over_plate(image, plate, [m], [image])[0]
    behind = background_behind(image, m, premult)
    part = (m > 0.05) & (m < 0.95)
    assert torch.allclose(behind[:, part], plate[:, part], atol=1e-4)
    full = m >= 1.0
    assert bool(full.any()) and torch.equal(behind[:, full], image[:, full])


def test_divisions_are_guarded():
    """A layer hidden by those in front, or one that covers the whole pixel: no inf/NaN, the fallbacks instead."""
    m = torch.tensor([0.3, 0.2, 0.0, 1e-9])
    front = torch.tensor([1.0, 1.0 - EPS / 2, 1.0 + 1e-7, 0.5])
    assert torch.equal(over_opacity(m, front), torch.tensor([0.0, 0.0, 0.0, 2e-9]))
    claim = torch.tensor([0.7, 0.6, 0.5, 0.4])
    assert torch.equal(over_opacity(m, front, claim)[:3], claim[:3])
    image = torch.rand(3, 4)
    total = torch.tensor([1.0, 1.0 - 1e-8, 0.5, 0.0])
    behind = background_behind(image, total, image * total)
    assert bool(torch.isfinite(behind).all())
    assert torch.equal(behind[:, :2], image[:, :2])
    assert torch.allclose(behind[:, 2:], image[:, 2:], atol=1e-6)
    zero = unmix_over_plate(image, image, [torch.zeros(4)], [image])[0]
    assert bool(torch.isfinite(zero).all()) and torch.equal(zero, torch.zeros(3, 4))


def test_puppet_and_ken_burns_unmix_a_soft_edge_alike():
    """One character with an anti-aliased edge over a plate: the puppet texture's premultiplied colour and the Ken
    Burns layer's are the same un-mixing of the input, ``a F = I - (1 - a) plate``."""
    from cartoonseg.kenburns.render import _unmix_layers
    from cartoonseg.puppet import PuppetRenderer, build_rig

    h, w = 64, 48
    disc = np.zeros((h * 4, w * 4), np.uint8)
    cv2.ellipse(disc, (w * 2, h * 2), (w + 20, h + 40), 0, 0, 360, 1, -1)
    mask = cv2.resize(disc.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    colour = np.float32((0.9, 0.3, 0.2))
    plate = np.empty((h, w, 3), np.float32)
    plate[:] = (0.2, 0.5, 0.9)
    behind = plate * 0.5 + np.float32((0.4, 0.3, 0.1))  # the input's background differs from the plate
    image = (mask[..., None] * colour + (1.0 - mask[..., None]) * behind).astype(np.float32)
    rig = build_rig(mask[None])
    renderer = PuppetRenderer(image, rig, plate)
    layer = renderer.layers[0]
    x0, y0, x1, y1 = layer.character.box
    tex = layer.texture
    a = tex[..., 3]
    edge = (a > 0.05) & (a < 0.95) & (layer.rest_index < len(layer.character.mesh.triangles))
    assert edge.sum() > 20

    rgb = torch.from_numpy(image).permute(2, 0, 1)
    m = torch.from_numpy(a.copy())
    full = torch.zeros(h, w)
    full[y0:y1, x0:x1] = m
    alpha, premult = _unmix_layers(rgb, torch.from_numpy(plate).permute(2, 0, 1), [full], [full])[0]
    kb = premult[:, y0:y1, x0:x1].permute(1, 2, 0).numpy()
    assert np.allclose(alpha[y0:y1, x0:x1].numpy()[edge], a[edge], atol=1e-6)
    assert np.abs(kb[edge] - tex[..., :3][edge]).max() < 1e-5
