"""SAM's mask decoder for many prompts at once, rearranged so that ONNX Runtime does less work.

The numbers are the official ``MaskDecoder.predict_masks`` (two-way transformer, output
upscaling, hypernetwork masks, IoU head) evaluated in another order; only float rounding
differs. What changes, and why it is the same math:

* Image tokens stay channels-last, ``[P, 4096, 256]``, from the first layer to the masks,
  so no per-prompt NCHW <-> token transposes are needed.
* The image-side projections of the cross attentions are folded into the few prompt
  tokens (T = 5 output tokens + the points, 8 heads). When the image is the key side,
  a head's score is ``q_h . (Wk_h y + bk_h) = (q_h Wk_h) . y + q_h . bk_h``: the last
  term is constant along the softmax axis and dropped (softmax is shift invariant), and
  the values are ``softmax @ (y Wv_h^T + bv_h) = (softmax @ y) Wv_h^T + bv_h`` (each
  softmax row sums to 1). When the image is the query side, ``(Wq_h x + bq_h) . k_h =
  x . (k_h Wq_h) + bq_h . k_h`` keeps its bias term (it varies along the softmax axis),
  and the output projection is applied to the T value rows before the weighted sum
  instead of to the 4096 result rows. An image-sized projection (4096 x 256 x 128
  multiply-adds per prompt) becomes 4096 x 256 x 8T, cheaper while a prompt has fewer than
  11 points.
* In the first layer the image tokens are the same for every prompt that has no mask
  input: src = embedding + no_mask_embed. A mask input adds a per-prompt term that is a
  16-channel tensor times the last 1x1 convolution of the mask downscaling; carrying it as
  that low-rank product keeps the first layer's image-side work shared (computed once per
  call) while still giving mask prompts their exact terms, with no branch in the graph.
* The decoder is three graphs (see samrt.contract): what the first layer computes from
  the image alone (the image tokens and their key, value and query projections) is done
  once per image by :func:`image_side`; the prompts' transformer gives IoU predictions
  before any mask is upscaled (:func:`decode_prompts`), so that a caller can upscale
  (:func:`decode_masks`) only the prompts whose masks it wants.
* The two stride-2, kernel-2 transposed convolutions of the output upscaling are matrix
  products on channels-last tokens (each input pixel owns its 2x2 output block); the
  resulting pixel order is undone once, on the 4-channel masks.
"""

from __future__ import annotations

import math
from typing import Any

from ._deps import torch

F = torch.nn.functional


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[P, T, heads * d] -> [P, heads, T, d]."""
    p, t, c = x.shape
    return x.reshape(p, t, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[P, heads, T, d] -> [P, T, heads * d]."""
    p, h, t, d = x.shape
    return x.transpose(1, 2).reshape(p, t, h * d)


def _linear_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ weight + bias`` over the last axis, as a 2-D product so that ONNX Runtime runs
    it as one Gemm with the bias fused rather than a MatMul then a broadcast Add."""
    return (x.reshape(-1, x.shape[-1]) @ weight + bias).reshape(*x.shape[:-1], weight.shape[-1])


def _weight_heads(linear: Any, num_heads: int) -> torch.Tensor:
    """A projection's [out, in] weight as [heads, out / heads, in]."""
    out, inp = linear.weight.shape
    return linear.weight.reshape(num_heads, out // num_heads, inp)


class _MaskLowRank:
    """The mask input's contribution to the first layer's image tokens, kept factored:
    ``src_p = base + mixed_p @ conv + offset_p`` with ``mixed_p`` [P, 4096, 16]
    (zero without a mask input) and ``offset_p`` [P, 1, 256] (zero likewise)."""

    def __init__(self, mixed: torch.Tensor, conv: torch.Tensor, offset: torch.Tensor) -> None:
        self.mixed = mixed
        self.conv = conv  # [16, 256]: the 1x1 convolution as a matrix (in, out)
        self.offset = offset


def mask_low_rank(
    prompt_encoder: Any, mask_input: torch.Tensor, has_mask_input: torch.Tensor
) -> _MaskLowRank:
    """The official mask_downscaling (conv k2 s2, LayerNorm2d, act, conv k2 s2, LayerNorm2d,
    act, conv 1x1) on channels-last tokens, minus no_mask_embed, gated by has_mask_input."""
    conv1, norm1, act1, conv2, norm2, act2, conv3 = prompt_encoder.mask_downscaling
    p = mask_input.shape[0]
    size = mask_input.shape[-1]
    # Each output pixel of a kernel-2 stride-2 convolution reads its own 2x2 block: gather
    # the blocks as (dy, dx, channel) features, then one matrix product per convolution.
    half = size // 2
    blocks = (
        mask_input.reshape(p, half, 2, half, 2).permute(0, 1, 3, 2, 4).reshape(p, half * half, 4)
    )
    x = blocks @ conv1.weight.permute(2, 3, 1, 0).reshape(4, -1) + conv1.bias
    x = act1(F.layer_norm(x, norm1.weight.shape, norm1.weight, norm1.bias, norm1.eps))
    quarter = half // 2
    channels = conv1.weight.shape[0]
    x = x.reshape(p, quarter, 2, quarter, 2, channels).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(p, quarter * quarter, 4 * channels)
    x = x @ conv2.weight.permute(2, 3, 1, 0).reshape(4 * channels, -1) + conv2.bias
    x = act2(F.layer_norm(x, norm2.weight.shape, norm2.weight, norm2.bias, norm2.eps))
    use = has_mask_input.reshape(-1, 1, 1)
    conv = conv3.weight.reshape(conv3.weight.shape[0], -1).t()
    no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, 1, -1)
    return _MaskLowRank(use * x, conv, use * (conv3.bias - no_mask))


def token_to_image(
    attn: Any,
    queries: torch.Tensor,
    keys: torch.Tensor,
    keys_pe: torch.Tensor,
) -> torch.Tensor:
    """Official ``Attention(q=queries, k=keys_pe, v=keys)`` for per-prompt image tokens,
    with the key and value projections folded into the prompt tokens."""
    h = attn.num_heads
    q = _heads(attn.q_proj(queries), h)  # [P, h, T, d]
    p, _, t, d = q.shape
    folded = (q * (1.0 / math.sqrt(d))) @ _weight_heads(attn.k_proj, h)  # [P, h, T, 256]
    scores = folded.reshape(p, h * t, -1) @ keys_pe.transpose(1, 2)  # [P, hT, 4096]
    mixed = torch.softmax(scores, dim=-1) @ keys  # [P, hT, 256]
    values = mixed.reshape(p, h, t, -1) @ _weight_heads(attn.v_proj, h).transpose(1, 2)
    values = values + attn.v_proj.bias.reshape(h, 1, d)
    out: torch.Tensor = attn.out_proj(_merge_heads(values))
    return out


def token_to_shared_image(
    attn: Any,
    queries: torch.Tensor,
    image: ImageSide,
    mask: _MaskLowRank,
) -> torch.Tensor:
    """token_to_image where the image tokens are ``image.tokens + mask.mixed @ mask.conv +
    mask.offset`` and ``image`` holds the projections of the shared part, computed once per
    image; the mask part goes through its 16 channels."""
    h = attn.num_heads
    q = _heads(attn.q_proj(queries), h) * (1.0 / math.sqrt(attn.internal_dim // h))  # [P, h, T, d]
    p, _, t, _ = q.shape
    k_weight = _weight_heads(attn.k_proj, h)  # [h, d, 256]
    v_weight = _weight_heads(attn.v_proj, h)
    # q . (mask.mixed @ conv @ Wk_h^T) plus a term constant along the keys (dropped).
    q_mask = q @ (k_weight @ mask.conv.t())  # [P, h, T, 16]
    scores = q @ image.keys.transpose(-1, -2)  # [P, h, T, 4096]
    scores = scores + (q_mask.reshape(p, h * t, -1) @ mask.mixed.transpose(1, 2)).reshape(
        p, h, t, -1
    )
    probs = torch.softmax(scores, dim=-1)
    values = probs @ image.values  # [P, h, T, d]
    mixed = (probs.reshape(p, h * t, -1) @ mask.mixed).reshape(p, h, t, -1)  # [P, h, T, 16]
    values = values + mixed @ (mask.conv @ v_weight.transpose(1, 2))
    values = values + _heads(mask.offset @ attn.v_proj.weight.t(), h)
    out: torch.Tensor = attn.out_proj(_merge_heads(values))
    return out


def image_to_token(
    attn: Any,
    image_pe: torch.Tensor,
    tokens_pe: torch.Tensor,
    tokens: torch.Tensor,
) -> torch.Tensor:
    """Official ``Attention(q=image_pe, k=tokens_pe, v=tokens)``: the 4096 image queries of
    each prompt attend to its T tokens. The query projection is folded into the tokens'
    keys, the output projection into their values."""
    _, folded, bias = _folded_token_keys(attn, tokens_pe)
    scores = image_pe @ folded.transpose(1, 2) + bias  # [P, 4096, hT]
    return _token_values(attn, scores, tokens)


def shared_image_to_token(
    attn: Any,
    shared_query: torch.Tensor,  # [1, h, 4096, d]
    tokens_pe: torch.Tensor,
    tokens: torch.Tensor,
    mask: _MaskLowRank,
) -> torch.Tensor:
    """image_to_token where the image queries are ``image_pe + mask.mixed @ mask.conv +
    mask.offset`` and ``shared_query`` is the query projection (by head) of the shared
    ``image + image_pe``: per head against the tokens' keys, plus the mask term through its
    16 channels. Returns the attention output plus ``mask.mixed @ mask.conv + mask.offset``
    (the residual's per-prompt part), both from one product."""
    h = attn.num_heads
    k, folded, _ = _folded_token_keys(attn, tokens_pe)
    p, ht, _ = folded.shape
    per_head = shared_query @ k.transpose(-1, -2)  # [P, h, 4096, T]
    scores = per_head.transpose(1, 2).reshape(p, -1, ht)
    folded_t = folded.transpose(1, 2)  # [P, 256, hT]
    scores = scores + mask.mixed @ (mask.conv @ folded_t) + mask.offset @ folded_t
    probs, values = _token_probs_values(attn, scores, tokens)
    # [probs | mixed] @ [values + offset / h ; conv]: a row of probs sums to h (see
    # _token_probs_values), so this is attention output + mixed @ conv + offset.
    probs = torch.cat([probs, mask.mixed], dim=-1)
    values = torch.cat([values + mask.offset / h, mask.conv.expand(p, -1, -1)], dim=1)
    out: torch.Tensor = probs @ values
    return out


def _folded_token_keys(
    attn: Any, tokens_pe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the tokens' scaled keys [P, h, T, d], those keys times their head's query weight
    [P, hT, 256], the query bias's part of the scores [P, 1, hT])."""
    h = attn.num_heads
    k = _heads(attn.k_proj(tokens_pe), h)  # [P, h, T, d]
    p, _, t, d = k.shape
    k = k * (1.0 / math.sqrt(d))
    folded = (k @ _weight_heads(attn.q_proj, h)).reshape(p, h * t, -1)
    # The query bias meets each token's key: it varies along the softmax axis, so it stays.
    bias = (k @ attn.q_proj.bias.reshape(h, d, 1)).reshape(p, 1, h * t)
    return k, folded, bias


def _token_values(attn: Any, scores: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Softmax of [P, 4096, hT] scores per head, times the tokens' values already passed
    through the output projection -> [P, 4096, 256]."""
    probs, values = _token_probs_values(attn, scores, tokens)
    out: torch.Tensor = probs @ values
    return out


def _token_probs_values(
    attn: Any, scores: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-head softmax of [P, 4096, hT] scores, the tokens' values through the output
    projection [P, hT, 256]); their product is the attention output."""
    h = attn.num_heads
    p, n, ht = scores.shape
    probs = torch.softmax(scores.reshape(p, n, h, ht // h), dim=-1).reshape(p, n, ht)
    v = _heads(attn.v_proj(tokens), h)  # [P, h, T, d]
    d = v.shape[-1]
    out_weight = attn.out_proj.weight.reshape(-1, h, d).permute(1, 2, 0)  # [h, d, 256]
    # Each head's probabilities sum to 1, so a row of probs sums to h: the output bias
    # enters as bias / h on every value row instead of as an add over [P, 4096, 256].
    values = (v @ out_weight + attn.out_proj.bias / h).reshape(p, ht, -1)  # [P, hT, 256]
    return probs, values


class ImageSide:
    """The first layer's image side, the same for every prompt (decoder_image's outputs):
    ``tokens`` [1, 4096, 256] the embedding plus no_mask_embed; by head [1, h, 4096, d],
    the token-to-image attention's ``keys`` (of tokens + positional encoding) and
    ``values`` (of tokens), and the image-to-token attention's ``queries`` (of tokens +
    positional encoding)."""

    def __init__(
        self,
        tokens: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor,
    ) -> None:
        self.tokens = tokens
        self.keys = keys
        self.values = values
        self.queries = queries


def image_side(
    mask_decoder: Any, image_embeddings: torch.Tensor, image_pe: torch.Tensor, no_mask_embed: torch.Tensor
) -> ImageSide:
    """decoder_image: image_embeddings [1, 256, 64, 64], image_pe likewise, no_mask_embed
    [256] -> the first layer's image side."""
    layer = mask_decoder.transformer.layers[0]
    tokens = image_embeddings.flatten(2).transpose(1, 2) + no_mask_embed  # [1, 4096, 256]
    with_pe = tokens + image_pe.flatten(2).transpose(1, 2)
    to_image = layer.cross_attn_token_to_image
    to_token = layer.cross_attn_image_to_token
    return ImageSide(
        tokens,
        _heads(to_image.k_proj(with_pe), to_image.num_heads),
        _heads(to_image.v_proj(tokens), to_image.num_heads),
        _heads(to_token.q_proj(with_pe), to_token.num_heads),
    )


def two_way_transformer(
    transformer: Any,
    image: ImageSide,
    image_pe: torch.Tensor,
    tokens: torch.Tensor,
    mask: _MaskLowRank,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official TwoWayTransformer.forward on channels-last image tokens.

    ``image`` is the first layer's image side (the embedding plus no_mask_embed, the same
    for all prompts); ``mask`` carries each prompt's difference; ``image_pe`` [1, 4096,
    256]. Returns (tokens [P, T, 256], image tokens [P, 4096, 256]).
    """
    queries = tokens
    keys: torch.Tensor | None = None
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)

        q = queries + tokens
        if keys is None:
            # First layer: the image side is shared, plus each prompt's mask term.
            attn_out = token_to_shared_image(layer.cross_attn_token_to_image, q, image, mask)
        else:
            keys_pe = keys + image_pe
            attn_out = token_to_image(layer.cross_attn_token_to_image, q, keys, keys_pe)
        queries = layer.norm2(queries + attn_out)
        queries = layer.norm3(queries + layer.mlp(queries))

        q = queries + tokens
        if keys is None:
            attn = layer.cross_attn_image_to_token
            attn_out = shared_image_to_token(attn, image.queries, q, queries, mask)
            keys = layer.norm4(image.tokens + attn_out)
        else:
            attn_out = image_to_token(layer.cross_attn_image_to_token, keys_pe, q, queries)
            keys = layer.norm4(keys + attn_out)

    assert keys is not None
    q = queries + tokens
    attn_out = token_to_image(transformer.final_attn_token_to_image, q, keys, keys + image_pe)
    queries = transformer.norm_final_attn(queries + attn_out)
    return queries, keys


def upscale(
    mask_decoder: Any,
    keys: torch.Tensor,
    high_res: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """output_upscaling on channels-last tokens [P, 4096, 256] -> [P, 65536, 32], pixels in
    block order (row, col, dy1, dx1, dy2, dx2): pixel (4 row + 2 dy1 + dy2, 4 col + 2 dx1 + dx2).

    With ``high_res`` (SAM 2: its two finest feature levels, [1, 65536, 32] and [1, 16384,
    64], in that block order), each transposed convolution's output gets its level added,
    ``act2(dc2(act1(ln1(dc1(src) + feat_s1))) + feat_s0)`` as the official decoder does."""
    deconv1, norm, act1, deconv2, act2 = mask_decoder.output_upscaling
    p = keys.shape[0]
    # A kernel-2 stride-2 transposed convolution gives each input pixel its own 2x2 output
    # block: a [in, (dy, dx, out)] matrix product, then the blocks become pixels.
    w1 = deconv1.weight.permute(0, 2, 3, 1).reshape(deconv1.weight.shape[0], -1)
    x = _linear_2d(keys, w1, deconv1.bias.repeat(4)).reshape(p, -1, deconv1.weight.shape[1])
    if high_res is not None:
        x = x + high_res[1]
    x = act1(F.layer_norm(x, norm.weight.shape, norm.weight, norm.bias, norm.eps))
    w2 = deconv2.weight.permute(0, 2, 3, 1).reshape(deconv2.weight.shape[0], -1)
    x = _linear_2d(x, w2, deconv2.bias.repeat(4)).reshape(p, -1, deconv2.weight.shape[1])
    if high_res is not None:
        x = x + high_res[0]
    upscaled: torch.Tensor = act2(x)
    return upscaled


def decode_prompts(
    mask_decoder: Any,
    image: ImageSide,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    mask: _MaskLowRank,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official MaskDecoder.predict_masks up to the upscaling, for one image and P
    prompts: image side, image_pe [1, 256, 64, 64], sparse [P, N, 256], the prompts'
    mask terms. Returns (IoU predictions [P, 4], the mask tokens' hypernetwork outputs
    [P, 4, 32], the prompts' final image tokens [P, 4096, 256])."""
    p = sparse.shape[0]
    output_tokens = torch.cat(
        [mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight], dim=0
    )
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(p, -1, -1), sparse), dim=1)
    pe = image_pe.flatten(2).transpose(1, 2)
    hs, keys = two_way_transformer(mask_decoder.transformer, image, pe, tokens, mask)

    iou_pred: torch.Tensor = mask_decoder.iou_prediction_head(hs[:, 0, :])
    mask_weights = torch.stack(
        [mlp(hs[:, 1 + i, :]) for i, mlp in enumerate(mask_decoder.output_hypernetworks_mlps)],
        dim=1,
    )  # [P, masks, 32]
    return iou_pred, mask_weights, keys


def decode_masks(
    mask_decoder: Any, keys: torch.Tensor, mask_weights: torch.Tensor
) -> torch.Tensor:
    """The rest of predict_masks: final image tokens [P, 4096, 256] and mask weights
    [P, 4, 32] -> low-res masks [P, 4, 256, 256]."""
    return masks_from_upscaled(upscale(mask_decoder, keys), mask_weights)


def masks_from_upscaled(upscaled: torch.Tensor, mask_weights: torch.Tensor) -> torch.Tensor:
    """The hypernetwork product: upscaled image tokens [P, 16 * side^2, 32] in block order
    (see :func:`upscale`) and mask weights [P, M, 32] -> masks [P, M, 4 side, 4 side]."""
    p = upscaled.shape[0]
    side = math.isqrt(upscaled.shape[1] // 16)
    num_masks = mask_weights.shape[1]
    masks = upscaled @ mask_weights.transpose(1, 2)  # [P, 65536, masks]
    # Block order (row, col, dy1, dx1, dy2, dx2) -> raster (row, dy1, dy2, col, dx1, dx2):
    # a gather of whole pixels (all masks at once), then one plain transpose, is cheaper
    # than an 8-d transpose that moves single floats.
    block_of_raster = torch.arange(side * side * 16).reshape(side, side, 2, 2, 2, 2)
    block_of_raster = block_of_raster.permute(0, 2, 4, 1, 3, 5).reshape(-1)
    masks = masks.index_select(1, block_of_raster).transpose(1, 2)
    return masks.reshape(p, num_masks, side * 4, side * 4)
