// Masks in the page: COCO compressed RLE (what the server sends) decoded to row-major
// bitmaps at the display's resolution, and drawn as coloured overlays with outlines.

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

// A mask {size: [h, w], counts} as a row-major Uint8Array of h*w (1 inside).
export function decodeRle(rle) {
  const [h, w] = rle.size;
  const runs = typeof rle.counts === "string" ? decodeCounts(rle.counts) : rle.counts;
  const out = new Uint8Array(h * w);
  let i = 0; // column-major position
  for (let r = 0; r < runs.length; r++) {
    const end = i + runs[r];
    if (r % 2 === 1) {
      for (let j = i; j < end; j++) {
        const x = (j / h) | 0;
        out[(j - x * h) * w + x] = 1;
      }
    }
    i = end;
  }
  return out;
}

// A row-major h*w mask sampled (nearest pixel centre) to dw*dh.
export function resample(mask, w, h, dw, dh) {
  if (dw === w && dh === h) return mask;
  const out = new Uint8Array(dw * dh);
  const xs = new Int32Array(dw);
  for (let x = 0; x < dw; x++) xs[x] = Math.min(w - 1, Math.floor((x + 0.5) * w / dw));
  for (let y = 0; y < dh; y++) {
    const row = Math.min(h - 1, Math.floor((y + 0.5) * h / dh)) * w;
    const o = y * dw;
    for (let x = 0; x < dw; x++) out[o + x] = mask[row + xs[x]];
  }
  return out;
}

// The mask of an RLE at display size: {bits, width, height, box: [x0, y0, x1, y1] | null}.
export function displayMask(rle, dw, dh) {
  const [h, w] = rle.size;
  const bits = resample(decodeRle(rle), w, h, dw, dh);
  return { bits, width: dw, height: dh, box: boundingBox(bits, dw, dh) };
}

export function boundingBox(bits, w, h) {
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) {
    const o = y * w;
    for (let x = 0; x < w; x++) {
      if (bits[o + x]) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        y1 = y;
      }
    }
  }
  return x1 < 0 ? null : [x0, y0, x1 + 1, y1 + 1];
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

// A canvas of the mask's size: the fill at `fillAlpha`, its outline (pixels with an
// outside 4-neighbour) opaque.
export function overlayCanvas(mask, rgb, fillAlpha = 0.4, outline = true) {
  const { bits, width: w, height: h } = mask;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const px = image.data;
  const fill = Math.round(fillAlpha * 255);
  const [r, g, b] = rgb;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      if (!bits[i]) continue;
      const edge = outline && (x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
        !bits[i - 1] || !bits[i + 1] || !bits[i - w] || !bits[i + w]);
      const k = i * 4;
      px[k] = r; px[k + 1] = g; px[k + 2] = b; px[k + 3] = edge ? 255 : fill;
    }
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
