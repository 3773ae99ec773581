"""SAM's image encoder written for ONNX Runtime: the official ImageEncoderViT's numbers,
with its tensors laid out so that the exported graph does less work.

* Tokens are a 2-D ``[B * 4096, C]`` matrix between blocks, so every linear layer exports
  as a Gemm with its bias fused (a linear layer on a 3-D or 4-D tensor becomes MatMul plus
  a separate broadcast Add over the whole output).
* In windowed blocks only the 4096 real tokens go through the qkv projection (a padding
  token, zero after the norm, projects to exactly the bias, so the padding is filled with
  the bias), and the output projection runs after the windows are merged and the padding
  is cropped: both are per-token, so 4096 tokens instead of 4900 give the same values.
* The decomposed relative-position terms are batched matrix products over the query
  row (or column) instead of Einsums, and the relative-position tables are gathered once
  at export (the indices depend only on the window size).
* The global blocks' attention runs a few heads at a time (MAX_SCORE_BYTES_PER_IMAGE), so
  the full heads x 4096 x 4096 score matrix never exists at once.
* The neck's 1x1 convolution and first LayerNorm2d run on the channels-last tokens.
"""

from __future__ import annotations

from typing import Any

from ._deps import torch
from .errors import ExportError

F = torch.nn.functional


class EncoderGraph(torch.nn.Module):
    """Official ImageEncoderViT.forward, [B, 3, 1024, 1024] -> [B, 256, 64, 64]."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.patch_embed = encoder.patch_embed
        self.pos_embed = encoder.pos_embed
        self.blocks = encoder.blocks
        self.neck = encoder.neck
        # Python ints, so that every reshape exports with constant sizes (batch aside).
        proj = encoder.patch_embed.proj
        self.grid = (encoder.img_size // proj.stride[0], encoder.img_size // proj.stride[1])
        self.channels = int(proj.out_channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = self.grid
        channels = self.channels
        x = self.patch_embed.proj(image).permute(0, 2, 3, 1)  # [B, H, W, C]
        if self.pos_embed is not None:
            x = x + self.pos_embed
        tokens = x.reshape(-1, channels)  # [B * H * W, C]
        for block in self.blocks:
            normed = block.norm1(tokens)
            if block.window_size > 0:
                attended = _windowed_attention(
                    block.attn, normed, height, width, channels, block.window_size
                )
            else:
                attended = _attention(block.attn, block.attn.qkv(normed), height, width, channels)
            tokens = tokens + block.attn.proj(attended)
            tokens = tokens + block.mlp(block.norm2(tokens))

        conv1, norm1, conv2, norm2 = self.neck
        x = F.linear(tokens, conv1.weight.reshape(conv1.weight.shape[0], -1))
        x = F.layer_norm(x, norm1.weight.shape, norm1.weight, norm1.bias, norm1.eps)
        x = x.reshape(-1, height, width, conv1.weight.shape[0]).permute(0, 3, 1, 2)
        out: torch.Tensor = norm2(conv2(x))
        return out


def _windowed_attention(
    attn: Any, tokens: torch.Tensor, height: int, width: int, channels: int, window: int
) -> torch.Tensor:
    """Official window_partition + Attention + window_unpartition, before the output
    projection: [B * H * W, C] -> [B * H * W, C]."""
    pad_h = (window - height % window) % window
    pad_w = (window - width % window) % window
    padded_h, padded_w = height + pad_h, width + pad_w
    # The official code zero-pads the normed tokens and projects all of them; a zero token
    # projects to exactly the qkv bias. So project only the real tokens and pad the
    # projections with the bias: the same values, without the padding's share of the Gemm.
    qkv = attn.qkv(tokens).reshape(-1, height, width, 3 * channels)
    if pad_w:
        fill = attn.qkv.bias.expand(qkv.shape[0], height, pad_w, 3 * channels)
        qkv = torch.cat([qkv, fill], dim=2)
    if pad_h:
        fill = attn.qkv.bias.expand(qkv.shape[0], pad_h, padded_w, 3 * channels)
        qkv = torch.cat([qkv, fill], dim=1)
    rows, cols = padded_h // window, padded_w // window
    qkv = qkv.reshape(-1, rows, window, cols, window, 3 * channels).permute(0, 1, 3, 2, 4, 5)
    out = _attention(attn, qkv, window, window, channels)  # windows of window^2 tokens
    out = out.reshape(-1, rows, cols, window, window, channels).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(-1, padded_h, padded_w, channels)[:, :height, :width, :]
    return out.reshape(-1, channels)


# A global block's attention scores are heads x 4096 x 4096 floats per image (805 MB for
# vit_b, 1.07 GB for vit_h), and the relative-position add and the softmax each make
# another tensor that size. Heads are independent, so they run in groups whose scores
# stay under this many bytes: the peak drops to a few hundred MB, the work is the same.
MAX_SCORE_BYTES_PER_IMAGE = 128 << 20


def _attention(
    attn: Any, qkv: torch.Tensor, height: int, width: int, channels: int
) -> torch.Tensor:
    """Official Attention.forward after the qkv projection and before the output
    projection, for images (or windows) of height x width: qkv of N * H * W tokens (any
    shape ending in 3 C, tokens in row-major order) -> [N * H * W, C]."""
    heads = attn.num_heads
    head_dim = channels // heads
    seq = height * width
    qkv = qkv.reshape(-1, seq, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # [N, heads, HW, d] each
    group = max(1, min(heads, MAX_SCORE_BYTES_PER_IMAGE // (4 * seq * seq)))
    outs = [
        _attention_heads(
            attn, q[:, h : h + group], k[:, h : h + group], v[:, h : h + group], height, width
        )
        for h in range(0, heads, group)
    ]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # [N, heads, HW, d]
    return out.reshape(-1, heads, height, width, head_dim).permute(0, 2, 3, 1, 4).reshape(-1, channels)


def _attention_heads(
    attn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Scaled dot-product attention with the decomposed relative positions for a group of
    heads: q, k, v [N, g, HW, d] -> [N, g, HW, d]."""
    n_heads, seq, head_dim = q.shape[1], q.shape[2], q.shape[3]
    q = q.reshape(-1, seq, head_dim)
    scores = (q * attn.scale) @ k.reshape(-1, seq, head_dim).transpose(-2, -1)
    if attn.use_rel_pos:
        rel_h, rel_w = _decomposed_rel_pos(attn, q, height, width)
        scores = scores.reshape(-1, height, width, height, width)
        scores = (scores + rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).reshape(-1, seq, seq)
    probs = scores.softmax(dim=-1)
    return (probs @ v.reshape(-1, seq, head_dim)).reshape(-1, n_heads, seq, head_dim)


def _decomposed_rel_pos(
    attn: Any, q: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official add_decomposed_rel_pos terms for queries q [N, H * W, d] against keys
    of the same grid: (rel_h [N, H, W, H_k], rel_w [N, H, W, W_k])."""
    table_h = _relative_table(attn.rel_pos_h, height)  # [H_q, H_k, d]
    table_w = _relative_table(attn.rel_pos_w, width)  # [W_q, W_k, d]
    head_dim = table_h.shape[-1]
    grid = q.reshape(-1, height, width, head_dim)
    # rel_h[n, y, x, ky] = q[n, y, x] . table_h[y, ky]: a product batched over the row y.
    by_row = grid.permute(1, 0, 2, 3).reshape(height, -1, head_dim)
    rel_h = (by_row @ table_h.transpose(1, 2)).reshape(height, -1, width, height)
    # rel_w[n, y, x, kx] = q[n, y, x] . table_w[x, kx]: batched over the column x.
    by_col = grid.permute(2, 0, 1, 3).reshape(width, -1, head_dim)
    rel_w = (by_col @ table_w.transpose(1, 2)).reshape(width, -1, height, width)
    return rel_h.permute(1, 0, 2, 3), rel_w.permute(1, 2, 0, 3)


def _relative_table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """The official get_rel_pos(size, size, rel_pos): [size, size, d], row q holding the
    embeddings of the offsets q - k."""
    if rel_pos.shape[0] != 2 * size - 1:
        raise ExportError(
            f"relative position table of length {rel_pos.shape[0]} for a {size}-wide grid "
            f"(expected {2 * size - 1}): resized tables are not supported"
        )
    positions = torch.arange(size)
    offsets = positions.unsqueeze(1) - positions.unsqueeze(0) + (size - 1)
    return rel_pos[offsets]


def encoder_graph(encoder: Any) -> torch.nn.Module:
    """The module to export for a Sam's image encoder: SAM's ViT rewritten as EncoderGraph;
    MobileSAM's TinyViT as it is (samrt_export.tinyvit is written for export already)."""
    from .tinyvit import TinyViT

    if isinstance(encoder, TinyViT):
        return encoder
    return EncoderGraph(encoder)
