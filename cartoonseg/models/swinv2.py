"""Swin Transformer V2 classifier in plain PyTorch, in the layout of timm's ``SwinTransformerV2``.

Follows Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution" (arXiv 2111.09883) as configured for
SmilingWolf's ``wd-swinv2-tagger-v3`` booru tagger (timm ``swinv2_base_window8_256`` with ``img_size=448``,
``window_size=14``, ``act_layer='gelu_tanh'``, 10861 classes). Parameter names equal timm's, so the tagger's
``model.safetensors`` loads strictly through :func:`filter_timm_swinv2` + :func:`load_swinv2_state_dict`.
Facts (shift/window clamping, patch-merge order, cosine attention, continuous position bias, soft -100 shift
mask, res-post-norm, tanh GELU) come from the tagger reference notes (timm ``swin_transformer_v2.py``). Original code (Apache-2.0 project).

Tensor layout inside the network is channels-last ``[B,H,W,C]``; the public input is ``[B,3,S,S]`` float (for the
WD taggers: BGR channel order, values ``(u8/255-0.5)/0.5``, see :mod:`cartoonseg.tagger.preprocess`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import state_dict_diff

__all__ = [
    "SwinV2Config",
    "SWINV2_PRESETS",
    "SwinTransformerV2",
    "config_from_timm",
    "filter_timm_swinv2",
    "load_swinv2_state_dict",
]

# Architecture defaults of timm's registered SwinV2 names (embed_dim, depths, num_heads).
_TIMM_FAMILIES: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "large": (192, (2, 2, 18, 2), (6, 12, 24, 48)),
}
_ACTIVATIONS = ("gelu_tanh", "gelu")


@dataclasses.dataclass(frozen=True)
class SwinV2Config:
    """Hyper-parameters of :class:`SwinTransformerV2` (defaults = wd-swinv2-tagger-v3).

    Attributes:
        img_size: square input side in pixels (the model accepts exactly this size).
        patch_size: stem patch size (conv kernel and stride).
        in_chans: input channels.
        num_classes: classifier outputs.
        embed_dim: channels of stage 0; doubled at each later stage.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window side (clamped to the feature map when the map is not larger).
        mlp_ratio: MLP hidden width / channels.
        act: ``"gelu_tanh"`` (tanh-approximate GELU, what the WD v3 taggers were trained with) or ``"gelu"`` (erf).
        norm_eps: LayerNorm epsilon.
        cpb_hidden: hidden width of the continuous-position-bias MLP.
    """

    img_size: int = 448
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 10861
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 14
    mlp_ratio: float = 4.0
    act: str = "gelu_tanh"
    norm_eps: float = 1e-5
    cpb_hidden: int = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must be non-empty and equally long")
        if self.act not in _ACTIVATIONS:
            raise ValueError(f"act must be one of {_ACTIVATIONS}, got {self.act!r}")
        for i, heads in enumerate(self.num_heads):
            dim = self.embed_dim * 2**i
            if heads < 1 or dim % heads:
                raise ValueError(f"stage {i}: {dim} channels are not divisible by {heads} heads")
        feat = self.img_size // self.patch_size
        if feat * self.patch_size != self.img_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        for i in range(len(self.depths)):
            side = feat // 2**i
            window = min(self.window_size, side)
            if side < 1 or side * 2**i != feat or side % window:
                raise ValueError(
                    f"stage {i}: feature map {side} is not divisible by window {window} "
                    f"(img_size {self.img_size}, patch {self.patch_size}, window {self.window_size}); padding is not "
                    "supported, choose img_size so that every stage map is a multiple of the window"
                )

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)


SWINV2_PRESETS: dict[str, SwinV2Config] = {
    # SmilingWolf/wd-swinv2-tagger-v3 (and v2, which differs only by act="gelu" and 9083 classes).
    "wd-v3": SwinV2Config(),
    # Reduced variant of the golden test (same window topology at 448, tiny widths).
    "tiny": SwinV2Config(num_classes=50, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
}


def config_from_timm(config: Mapping) -> SwinV2Config:
    """Translate a timm ``config.json`` (as in Hugging Face model repos) into a :class:`SwinV2Config`.

    Args:
        config: the parsed JSON: ``architecture`` (a timm SwinV2 name such as ``swinv2_base_window8_256``),
            ``num_classes`` and optional ``model_args`` (``img_size``, ``window_size``, ``act_layer``,
            ``embed_dim``, ``depths``, ``num_heads``, ``mlp_ratio``, ``patch_size``; they override the name's
            defaults).

    Raises:
        ValueError: not a SwinV2 architecture, or an option this implementation does not support.
    """
    arch = str(config.get("architecture", ""))
    parts = arch.split("_")
    if len(parts) < 2 or parts[0] != "swinv2" or parts[1] not in _TIMM_FAMILIES:
        raise ValueError(
            f"config.json architecture {arch!r} is not supported: expected a timm SwinV2 name such as "
            f"'swinv2_base_window8_256' (families: {sorted(_TIMM_FAMILIES)})"
        )
    embed_dim, depths, heads = _TIMM_FAMILIES[parts[1]]
    window, img_size = 8, 256
    for part in parts[2:]:
        if part.startswith("window"):
            window = int(part[len("window"):].split("to")[-1])
        elif part[:1].isdigit():
            img_size = int(part.split("to")[-1])
    args = dict(config.get("model_args") or {})
    known = {
        "img_size", "window_size", "act_layer", "embed_dim", "depths", "num_heads", "mlp_ratio", "patch_size",
        "in_chans", "num_classes", "drop_path_rate", "drop_rate", "attn_drop_rate", "qkv_bias",
        "pretrained_window_sizes", "global_pool",
    }
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"config.json model_args {unknown} are not supported (supported: {sorted(known)})")
    if args.get("qkv_bias", True) is not True:
        raise ValueError("config.json model_args qkv_bias=False is not supported")
    if any(int(w) != 0 for w in args.get("pretrained_window_sizes", (0, 0, 0, 0))):
        raise ValueError(f"pretrained_window_sizes {args['pretrained_window_sizes']} are not supported (only 0)")
    pool = args.get("global_pool", config.get("global_pool", "avg"))
    if pool != "avg":
        raise ValueError(f"global_pool {pool!r} is not supported (only 'avg')")
    act = args.get("act_layer", "gelu")
    act = {"gelu_tanh": "gelu_tanh", "gelutanh": "gelu_tanh", "gelu": "gelu"}.get(str(act).lower())
    if act is None:
        raise ValueError(f"act_layer {args.get('act_layer')!r} is not supported (gelu_tanh or gelu)")

    def _size(value) -> int:
        if isinstance(value, (list, tuple)):
            if len(set(value)) != 1:
                raise ValueError(f"only square sizes are supported, got {value}")
            value = value[0]
        return int(value)

    num_classes = args.get("num_classes", config.get("num_classes"))
    if num_classes is None:
        raise ValueError("config.json has no num_classes")
    return SwinV2Config(
        img_size=_size(args.get("img_size", img_size)),
        patch_size=_size(args.get("patch_size", 4)),
        in_chans=int(args.get("in_chans", 3)),
        num_classes=int(num_classes),
        embed_dim=int(args.get("embed_dim", embed_dim)),
        depths=tuple(args.get("depths", depths)),
        num_heads=tuple(args.get("num_heads", heads)),
        window_size=_size(args.get("window_size", window)),
        mlp_ratio=float(args.get("mlp_ratio", 4.0)),
        act=act,
    )


# ---------------------------------------------------------------------------------------------- helpers
def _window_partition(x: Tensor, window: int) -> Tensor:
    """``[B,H,W,C]`` -> ``[B*nW, window*window, C]`` (windows row-major, tokens row-major)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def _window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`_window_partition`: ``[B*nW, window*window, C]`` -> ``[B,H,W,C]``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_coords_table(window: int) -> Tensor:
    """Log-spaced continuous relative coordinates ``[1, 2w-1, 2w-1, 2]`` (channel 0 = dy, 1 = dx)."""
    coords = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), dim=-1)[None]
    table = table / (window - 1) * 8.0
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def relative_position_index(window: int) -> Tensor:
    """int64 ``[w*w, w*w]``: index into the flattened ``(2w-1)^2`` table for each query/key token pair."""
    ar = torch.arange(window)
    coords = torch.stack(torch.meshgrid(ar, ar, indexing="ij")).flatten(1)  # [2, N]
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_attention_mask(side: int, window: int, shift: int) -> Tensor:
    """Soft mask ``[nW, N, N]`` (0 or -100) of a cyclically shifted square map, as in Swin."""
    labels = torch.zeros(1, side, side, 1)
    count = 0
    bounds = ((0, side - window), (side - window, side - shift), (side - shift, side))
    for h0, h1 in bounds:
        for w0, w1 in bounds:
            labels[:, h0:h1, w0:w1, :] = count
            count += 1
    windows = _window_partition(labels, window).squeeze(-1)  # [nW, N]
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


# ---------------------------------------------------------------------------------------------- modules
class PatchEmbed(nn.Module):
    """Conv ``patch x patch`` / stride patch, then LayerNorm; output ``[B,H/p,W/p,C]``."""

    def __init__(self, cfg: SwinV2Config) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2x2 token merge (offsets (0,0),(1,0),(0,1),(1,1) as (row,col), row fastest), Linear 4C->2C, LayerNorm."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.norm(self.reduction(x))


class WindowAttention(nn.Module):
    """Scaled-cosine window attention with a continuous (log-spaced, MLP) relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: int, cpb_hidden: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, cpb_hidden, bias=True), nn.ReLU(inplace=True), nn.Linear(cpb_hidden, num_heads, bias=False)
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.register_buffer("relative_coords_table", relative_coords_table(window), persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def position_bias(self) -> Tensor:
        """``[heads, N, N]`` = 16 * sigmoid(cpb_mlp(table))[index]."""
        n = self.window * self.window
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)
        return 16.0 * torch.sigmoid(bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: ``[B*nW, N, C]``; mask: ``[nW, N, N]`` additive (0/-100) or None. Returns ``[B*nW, N, C]``."""
        bw, n, c = x.shape
        qkv_bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, qkv_bias).view(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        query = F.normalize(query, dim=-1) * scale
        key = F.normalize(key, dim=-1)
        bias = self.position_bias().to(query.dtype)  # [heads, N, N]
        if mask is not None:  # broadcast the per-window mask over the batch: [B, nW, heads, N, N]
            nw = mask.shape[0]
            bias = bias[None] + mask.to(query.dtype)[:, None]
            query, key, value = (t.view(bw // nw, nw, self.num_heads, n, -1) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=1.0)
        return self.proj(out.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh" if act == "gelu_tanh" else "none")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinV2Block(nn.Module):
    """Res-post-norm block: ``x + norm1(attn(x))`` then ``x + norm2(mlp(x))``, with optional cyclic shift."""

    def __init__(self, cfg: SwinV2Config, dim: int, num_heads: int, side: int, shifted: bool) -> None:
        super().__init__()
        # Swin rule: a map not larger than the window gets one window and no shift.
        self.window = min(cfg.window_size, side)
        self.shift = self.window // 2 if shifted and side > self.window else 0
        self.attn = WindowAttention(dim, num_heads, self.window, cfg.cpb_hidden)
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.act)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        mask = shift_attention_mask(side, self.window, self.shift) if self.shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        shifted = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2)) if self.shift else x
        windows = self.attn(_window_partition(shifted, self.window), self.attn_mask)
        shifted = _window_reverse(windows, self.window, h, w)
        attn_out = torch.roll(shifted, shifts=(self.shift, self.shift), dims=(1, 2)) if self.shift else shifted
        x = x + self.norm1(attn_out)
        return x + self.norm2(self.mlp(x))


class SwinV2Stage(nn.Module):
    def __init__(self, cfg: SwinV2Config, index: int) -> None:
        super().__init__()
        dim = cfg.embed_dim * 2**index
        side = cfg.img_size // cfg.patch_size // 2**index
        self.downsample = PatchMerging(dim // 2, cfg.norm_eps) if index > 0 else nn.Identity()
        self.blocks = nn.Sequential(
            *(SwinV2Block(cfg, dim, cfg.num_heads[index], side, shifted=j % 2 == 1) for j in range(cfg.depths[index]))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class _Head(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class SwinTransformerV2(nn.Module):
    """SwinV2 image classifier; parameter names match timm's ``SwinTransformerV2`` (timm >= 0.9 layout).

    Args:
        cfg: architecture (:class:`SwinV2Config`).
    """

    def __init__(self, cfg: SwinV2Config = SwinV2Config()) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.layers = nn.Sequential(*(SwinV2Stage(cfg, i) for i in range(len(cfg.depths))))
        self.norm = nn.LayerNorm(cfg.num_features, eps=cfg.norm_eps)
        self.head = _Head(cfg.num_features, cfg.num_classes)

    @property
    def device(self) -> torch.device:
        return self.head.fc.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.fc.weight.dtype

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B,C,S,S]`` -> final-norm tokens ``[B,S/32,S/32,F]`` (channels-last)."""
        if x.dim() != 4 or x.shape[1] != self.cfg.in_chans or x.shape[2:] != (self.cfg.img_size,) * 2:
            raise ValueError(
                f"SwinTransformerV2 expects [B,{self.cfg.in_chans},{self.cfg.img_size},{self.cfg.img_size}], "
                f"got {tuple(x.shape)}"
            )
        return self.norm(self.layers(self.patch_embed(x)))

    def forward(self, x: Tensor) -> Tensor:
        """``[B,C,S,S]`` -> logits ``[B,num_classes]`` (no sigmoid)."""
        return self.head(self.forward_features(x).mean(dim=(1, 2)))


# ---------------------------------------------------------------------------------------------- weights
_REBUILT_BUFFERS = ("relative_position_index", "relative_coords_table", "attn_mask", "k_bias")


def filter_timm_swinv2(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Normalise a timm SwinV2 checkpoint to this module's keys (pure; the input is not modified).

    Unwraps ``state_dict``/``model`` containers, strips ``module.`` / ``_orig_mod.`` prefixes and drops the
    buffers that are rebuilt at init (``relative_position_index``, ``relative_coords_table``, ``attn_mask``,
    ``k_bias``), exactly the names timm's own filter drops.
    """
    for wrapper in ("state_dict", "model"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.rsplit(".", 1)[-1] in _REBUILT_BUFFERS:
            continue
        out[key] = value
    return out


def load_swinv2_state_dict(model: SwinTransformerV2, state_dict: Mapping[str, Tensor]) -> SwinTransformerV2:
    """Strictly load a (filtered) timm state dict; raises RuntimeError with a readable key/shape diff."""
    missing, unexpected, mismatched = state_dict_diff(model, state_dict)
    expected = model.state_dict()
    if missing or unexpected or mismatched:

        def _few(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8} more)" if len(items) > 8 else "")

        raise RuntimeError(
            "SwinV2 weights do not match the architecture "
            f"(embed_dim={model.cfg.embed_dim}, depths={model.cfg.depths}, num_classes={model.cfg.num_classes}): "
            f"{len(missing)} missing [{_few(missing)}]; {len(unexpected)} unexpected [{_few(unexpected)}]; "
            f"{len(mismatched)} shape mismatches [{_few(mismatched)}]"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, strict=True)
    return model
