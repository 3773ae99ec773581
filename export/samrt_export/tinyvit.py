"""MobileSAM's image encoder: the TinyViT of its official code, written for export.

MobileSAM (Zhang et al., 2023) keeps SAM's prompt encoder and mask decoder and replaces the
ViT image encoder with a 5M-parameter TinyViT distilled from vit_h. This module is that
encoder with the official module layout, so the official ``mobile_sam.pt`` state dict
loads into it unchanged (parameter for parameter), and the official forward's numbers:

* a patch embedding of two 3x3 stride-2 convolutions (1024 -> 256 pixels);
* stage 0: MobileNet-style inverted-residual blocks (1x1, depthwise 3x3, 1x1, each a
  convolution + BatchNorm), then a patch merging;
* stages 1-3: transformer blocks with windowed self-attention (LayerNorm inside the
  attention, zero padding of the token grid *before* the norm, a learned bias per head and
  per (|dy|, |dx|) offset inside a window), a residual depthwise convolution, then an MLP
  with its own LayerNorm; a patch merging after each stage but the last;
* SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to [B, 256, 64, 64].

Two quirks of the official code are its semantics and are kept: a patch merging into a
stage of width 320, 448 or 576 (the last stage of the published models) does not halve the
resolution, so the last two stages both run at 64x64; and the classification head
(``norm_head``, ``head``) exists, holds weights in the checkpoint, and is never run.

ONNX Runtime folds each BatchNorm into its convolution when the graph loads, so the
convolutions stay as the checkpoint stores them.
"""

from __future__ import annotations

import math
from typing import Any

from ._deps import segment_anything, torch
from .config import TinyViTConfig
from .errors import ExportError

nn = torch.nn
F = torch.nn.functional

# Stage widths into which the official PatchMerging keeps the resolution (stride 1).
_FULL_RESOLUTION_MERGE_WIDTHS = (320, 448, 576)
# The official TinyViT's classifier size; its head is in every MobileSAM checkpoint.
_HEAD_CLASSES = 1000


class ConvBN(nn.Module):
    """A bias-free convolution then BatchNorm (checkpoint names ``c`` and ``bn``); padding
    keeps the size at stride 1, as every TinyViT convolution does."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.c(x))
        return out


class PatchEmbed(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        # Named seq.0 / seq.2 in the checkpoint (seq.1 is the parameter-free GELU).
        self.seq = nn.Sequential(
            ConvBN(3, width // 2, 3, 2), nn.GELU(), ConvBN(width // 2, width, 3, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.seq(x)
        return out


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, 1x1 project, plus the input; NCHW."""

    def __init__(self, width: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(width * expand_ratio)
        self.conv1 = ConvBN(width, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 conv, depthwise 3x3 (stride 2, or 1 into a full-resolution stage), 1x1 conv:
    [B, C, H, W] or tokens [B, H * W, C] -> tokens [B, H' * W', C']."""

    def __init__(self, resolution: int, width: int, out_width: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.stride = 1 if out_width in _FULL_RESOLUTION_MERGE_WIDTHS else 2
        self.conv1 = ConvBN(width, out_width)
        self.conv2 = ConvBN(out_width, out_width, 3, self.stride, groups=out_width)
        self.conv3 = ConvBN(out_width, out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.reshape(-1, self.resolution, self.resolution, x.shape[-1]).permute(0, 3, 1, 2)
        x = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


def window_bias_index(window: int) -> torch.Tensor:
    """[window^2, window^2]: for query i and key j of a window (raster order), the index
    of their offset (|dy|, |dx|) in a head's table of window^2 learned biases, numbered as
    the official code numbers them (in order of first appearance, which is dy * window + dx)."""
    rows = torch.arange(window).repeat_interleave(window)
    cols = torch.arange(window).repeat(window)
    dy = (rows[:, None] - rows[None, :]).abs()
    dx = (cols[:, None] - cols[None, :]).abs()
    return dy * window + dx


class Attention(nn.Module):
    """Self-attention over the tokens of windows [N, window^2, C], LayerNorm first. The
    qkv projection is laid out per head (q, k, v of head 0, then of head 1, ...), not as
    three blocks of heads as in SAM's ViT."""

    def __init__(self, width: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        self.register_buffer("attention_bias_idxs", window_bias_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, tokens, self.heads, 3, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # each [N, heads, tokens, d]
        bias = self.attention_biases[:, self.attention_bias_idxs]  # [heads, tokens, tokens]
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim)) + bias
        out = torch.softmax(scores, dim=-1) @ v
        projected: torch.Tensor = self.proj(out.transpose(1, 2).reshape(n, tokens, width))
        return projected


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(F.gelu(self.fc1(self.norm(x))))
        return out


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise convolution, MLP; tokens [B, H * W, C] in and out."""

    def __init__(
        self,
        width: int,
        resolution: int,
        heads: int,
        window: int,
        mlp_ratio: float,
        local_conv: int,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ExportError(f"TinyViT width {width} is not divisible by its {heads} heads")
        self.resolution = resolution
        self.window = window
        self.attn = Attention(width, heads, window)
        self.mlp = Mlp(width, int(width * mlp_ratio))
        self.local_conv = ConvBN(width, width, local_conv, groups=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size, window = self.resolution, self.window
        width = x.shape[-1]
        if size == window:
            attended = self.attn(x)
        else:
            # The official code pads the grid with zeros before the attention's LayerNorm:
            # the padding tokens are keys (their normed value is the norm's bias) in every
            # window that has them, and are cropped afterwards.
            pad = (window - size % window) % window
            padded = size + pad
            grid = F.pad(x.reshape(-1, size, size, width), (0, 0, 0, pad, 0, pad))
            per_side = padded // window
            windows = grid.reshape(-1, per_side, window, per_side, window, width).transpose(2, 3)
            out = self.attn(windows.reshape(-1, window * window, width))
            out = out.reshape(-1, per_side, per_side, window, window, width).transpose(2, 3)
            out = out.reshape(-1, padded, padded, width).narrow(1, 0, size).narrow(2, 0, size)
            attended = out.reshape(-1, size * size, width)
        x = x + attended
        image = x.transpose(1, 2).reshape(-1, width, size, size)
        x = self.local_conv(image).flatten(2).transpose(1, 2)
        return x + self.mlp(x)


class _Stage(nn.Module):
    """A stage's blocks then its patch merging (the official ConvLayer / BasicLayer)."""

    def __init__(self, blocks: list[nn.Module], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class TinyViT(nn.Module):
    """MobileSAM's image encoder: [B, 3, 1024, 1024] -> [B, 256, 64, 64]."""

    def __init__(self, config: TinyViTConfig, img_size: int, out_chans: int, out_size: int) -> None:
        super().__init__()
        self.img_size = img_size
        dims = config.embed_dims
        self.patch_embed = PatchEmbed(dims[0])
        resolution = img_size // 4
        stages: list[nn.Module] = []
        for i, width in enumerate(dims):
            last = i == len(dims) - 1
            downsample = None if last else PatchMerging(resolution, width, dims[i + 1])
            if i == 0:
                blocks: list[nn.Module] = [
                    MBConv(width, config.mbconv_expand_ratio) for _ in range(config.depths[i])
                ]
            else:
                blocks = [
                    TinyViTBlock(
                        width,
                        resolution,
                        config.num_heads[i],
                        config.window_sizes[i],
                        config.mlp_ratio,
                        config.local_conv_size,
                    )
                    for _ in range(config.depths[i])
                ]
            stages.append(_Stage(blocks, downsample))
            if downsample is not None:
                resolution //= downsample.stride
        if resolution != out_size:
            raise ExportError(
                f"TinyViT config {config.to_json()} ends at {resolution}x{resolution} tokens; "
                f"the engine contract needs {out_size}x{out_size}"
            )
        self.out_size = out_size
        self.layers = nn.ModuleList(stages)
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], _HEAD_CLASSES)
        layer_norm_2d = segment_anything.modeling.common.LayerNorm2d
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out_chans, kernel_size=1, bias=False),
            layer_norm_2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            layer_norm_2d(out_chans),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image)
        for stage in self.layers:
            x = stage(x)
        x = x.reshape(-1, self.out_size, self.out_size, x.shape[-1]).permute(0, 3, 1, 2)
        out: torch.Tensor = self.neck(x)
        return out


def randomize_for_tests(encoder: TinyViT, generator: torch.Generator) -> None:
    """Makes a seeded random TinyViT exercise every path: the official init leaves the
    window biases at zero and BatchNorm at the identity (a model that has never seen data),
    so these get small random values; everything else keeps torch's init."""
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            elif isinstance(module, Attention):
                module.attention_biases.normal_(0.0, 0.5, generator=generator)


def head_state_defaults(encoder: TinyViT, prefix: str) -> dict[str, Any]:
    """The unused classification head's tensors, for a checkpoint saved without them."""
    return {
        f"{prefix}{name}": value
        for name, value in encoder.state_dict().items()
        if name.startswith(("norm_head.", "head."))
    }
