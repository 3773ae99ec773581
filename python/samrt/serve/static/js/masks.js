// Masks in the page: COCO compressed RLE (what the server sends) decoded to bitmaps at
// the display's resolution, and drawn as coloured overlays with outlines.

// The COCO "compressed counts" string: each run length in 5-bit groups, least significant
// first, as characters from '0' (48); bit 0x20 of a group says another follows, and bit
// 0x10 of the last one is the sign. From the third run on, a run is stored as its
// difference from the run two before it. Runs alternate, zeros first, column-major.
export function decodeCounts(text) {
  const runs = [];
  let p = 0;
  while (p < text.length) {
    let value = 0;
    let scale = 1;
    let group;
    do {
      group = text.charCodeAt(p++) - 48;
      value += (group & 0x1f) * scale;
      scale *= 32;
    } while (group & 0x20);
    if (group & 0x10) value -= scale; // negative: the groups were two's complement
    if (runs.length > 2) value += runs[runs.length - 2];
    runs.push(value);
  }
  return runs;
}

// Masks stay column-major, as COCO stores them: bit (x, y) of a w x h mask is
// bits[x * h + y]. Decoding is then one fill per run, and an overlay is drawn transposed
// (View.drawMask swaps the axes back), so no step walks the image across its rows.

// A mask {size: [h, w], counts} as {bits, width, height}.
export function decodeRle(rle) {
  const [h, w] = rle.size;
  const runs = typeof rle.counts === "string" ? decodeCounts(rle.counts) : rle.counts;
  const bits = new Uint8Array(h * w);
  let i = 0;
  for (let r = 0; r < runs.length; r++) {
    if (r % 2 === 1) bits.fill(1, i, i + runs[r]);
    i += runs[r];
  }
  return { bits, width: w, height: h };
}

// The mask sampled (nearest pixel centre) to dw x dh.
export function resample(mask, dw, dh) {
  const { bits, width: w, height: h } = mask;
  if (dw === w && dh === h) return mask;
  const out = new Uint8Array(dw * dh);
  const ys = new Int32Array(dh);
  for (let y = 0; y < dh; y++) ys[y] = Math.min(h - 1, Math.floor((y + 0.5) * h / dh));
  for (let x = 0; x < dw; x++) {
    const column = Math.min(w - 1, Math.floor((x + 0.5) * w / dw)) * h;
    const o = x * dh;
    for (let y = 0; y < dh; y++) out[o + y] = bits[column + ys[y]];
  }
  return { bits: out, width: dw, height: dh };
}

// The mask of an RLE at display size.
export function displayMask(rle, dw, dh) {
  return resample(decodeRle(rle), dw, dh);
}

// Fraction of `bits` covered by `union` (both display masks of the same size).
export function coveredFraction(bits, union) {
  let inside = 0, covered = 0;
  for (let i = 0; i < bits.length; i++) {
    if (bits[i]) {
      inside++;
      if (union[i]) covered++;
    }
  }
  return inside ? covered / inside : 0;
}

// A transposed canvas (height x width) of the mask: the fill at `fillAlpha` and its
// outline (pixels with an outside 4-neighbour) opaque. Work follows the mask's runs.
export function overlayCanvas(mask, rgb, fillAlpha = 0.4, outline = true) {
  const { bits, width: w, height: h } = mask;
  const canvas = document.createElement("canvas");
  canvas.width = h;
  canvas.height = w;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(h, w);
  const pixels = new Uint32Array(image.data.buffer); // RGBA bytes, read as little-endian words
  const [r, g, b] = rgb;
  const fill = ((Math.round(fillAlpha * 255) << 24) | (b << 16) | (g << 8) | r) >>> 0;
  const edge = ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
  const n = bits.length;
  let start = bits.indexOf(1);
  while (start !== -1) {
    let end = bits.indexOf(0, start);
    if (end === -1) end = n;
    pixels.fill(fill, start, end);
    if (outline) {
      for (let j = start; j < end; j++) {
        const y = j % h;
        if (y === 0 || y === h - 1 || j < h || j >= n - h || !bits[j - 1] || !bits[j + 1] || !bits[j - h] || !bits[j + h]) {
          pixels[j] = edge;
        }
      }
    }
    start = end < n ? bits.indexOf(1, end) : -1;
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

// Distinct colours for annotations: hues a golden angle apart.
export function colourFor(n) {
  const hue = (n * 137.508) % 360;
  return hslToRgb(hue / 360, 0.75, 0.55);
}

function hslToRgb(h, s, l) {
  const f = (n) => {
    const k = (n + h * 12) % 12;
    const a = s * Math.min(l, 1 - l);
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

export function cssColour([r, g, b]) {
  return `rgb(${r}, ${g}, ${b})`;
}
