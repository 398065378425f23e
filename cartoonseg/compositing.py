"""The layer model by which the applications take characters out of an image and paint them back: one home for it,
so the puppet renderer (:mod:`cartoonseg.puppet.render`) and the Ken Burns renderer
(:mod:`cartoonseg.kenburns.render`) un-mix and composite by the same formulas.

An image of characters over a background is modelled as

    ``I = sum_k m_k F_k + (1 - sum_k m_k) B``

with ``m_k`` what character ``k`` adds to the pixel (its soft mask or alpha matte, composed front to back so they
sum to at most 1), ``F_k`` its colour and ``B`` the background (the plate). Painted back to front with "over", a
layer's opacity is its share of what the layers in front leave (:func:`over_opacity`); given the plate, the
characters' premultiplied colours ``m_k F_k`` follow from the image (:func:`unmix_over_plate`); given the
characters' colours, the background behind their half-transparent edges does (:func:`background_behind`).
:func:`cartoonseg.matting.unmix` estimates ``F`` and ``B`` for one matte when neither is known.

torch only (tensors on any device, float); numpy callers convert at the boundary (``torch.from_numpy``, zero copy).
Every division is guarded: below :data:`EPS` of room the formulas fall back instead of dividing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["EPS", "over_opacity", "unmix_over_plate", "background_behind"]

#: Smallest share of a pixel that is divided by: below it a layer (or the background) counts as not showing.
EPS = 1e-6


def over_opacity(matte: Tensor, front: Tensor, hidden: Tensor | float = 0.0) -> Tensor:
    """A layer's opacity for back-to-front "over" painting: ``m / (1 - front)``, its matte over what the layers in
    front leave (``front``: the sum of their mattes), clamped to [0, 1], so the painted layers add up to
    ``sum m_k F_k`` again. Where the layers in front leave no more than :data:`EPS`, the layer does not show in
    the image and its opacity is ``hidden`` (0, or what its own mask claims, so that it shows once the layers in
    front move away)."""
    left = 1.0 - front
    return torch.where(left > EPS, matte / left.clamp_min(EPS), hidden).clamp(0.0, 1.0)


def unmix_over_plate(image: Tensor, plate: Tensor, mattes: Sequence[Tensor], colours: Sequence[Tensor]) -> list[Tensor]:
    """Premultiplied colours ``m_k F_k`` of the layers, given the plate: the estimates ``colours`` (``F_k``, e.g.
    continued from each layer's inside) plus what they leave unexplained, ``I - (1 - sum m) B - sum m_k F_k``,
    shared in proportion to ``m_k``; each clipped to ``[0, m_k]``. With one layer this is the plain un-mixing
    ``m F = I - (1 - m) B`` (whatever the estimate), and unclipped the layers over the plate give back the image.

    ``image``, ``plate`` and each colour ``[C,...]`` (channels first), each matte ``[...]``, broadcastable."""
    total = sum(mattes)
    residual = image - (1.0 - total) * plate - sum(m * f for m, f in zip(mattes, colours))
    share = residual / total.clamp_min(EPS)
    return [torch.minimum((m * (f + share)).clamp_min(0.0), m.expand_as(image)) for m, f in zip(mattes, colours)]


def background_behind(image: Tensor, total: Tensor, premultiplied: Tensor) -> Tensor:
    """The background the layers leave, ``B = (I - sum m_k F_k) / (1 - sum m_k)``, clipped to [0, 1] (``total``:
    ``sum m_k``; ``premultiplied``: ``sum m_k F_k``, channels first as ``image``). Where the layers leave no more
    than :data:`EPS` of the pixel, nothing of the background shows and it is the image there."""
    left = 1.0 - total
    return torch.where(left > EPS, (image - premultiplied) / left.clamp_min(EPS), image).clamp(0.0, 1.0)
