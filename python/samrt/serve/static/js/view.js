// The canvas: the photo (downscaled when large), zoom and pan, and the layers drawn over
// it. Everything is kept in the photo's original pixels; the view maps them to the canvas.

export const MAX_DISPLAY_SIDE = 2048; // longer side of the bitmap drawn for a large photo
const MIN_ZOOM = 0.5;                 // relative to fitting the window
const MAX_ZOOM = 40;

export class View {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.bitmap = null;
    this.imageWidth = 0;   // original pixels
    this.imageHeight = 0;
    this.displayWidth = 0; // the bitmap's pixels (masks are drawn at this size)
    this.displayHeight = 0;
    this.zoom = 1;         // relative to fit
    this.centerX = 0;      // image point at the canvas centre
    this.centerY = 0;
    this.layers = [];      // (ctx, view) => void, drawn in order after the photo
    this.pending = false;
    this.afterRender = [];
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  async setImage(blob, width, height) {
    const scale = Math.min(1, MAX_DISPLAY_SIDE / Math.max(width, height));
    const dw = Math.max(1, Math.round(width * scale));
    const dh = Math.max(1, Math.round(height * scale));
    const options = { imageOrientation: "from-image" };
    if (scale < 1) Object.assign(options, { resizeWidth: dw, resizeHeight: dh, resizeQuality: "high" });
    const bitmap = await createImageBitmap(blob, options);
    if (this.bitmap) this.bitmap.close();
    this.bitmap = bitmap;
    this.imageWidth = width;
    this.imageHeight = height;
    this.displayWidth = bitmap.width;
    this.displayHeight = bitmap.height;
    this.fit();
  }

  clear() {
    if (this.bitmap) this.bitmap.close();
    this.bitmap = null;
    this.imageWidth = this.imageHeight = this.displayWidth = this.displayHeight = 0;
    this.render();
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.canvas.clientWidth * ratio));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * ratio));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.render();
  }

  fit() {
    this.zoom = 1;
    this.centerX = this.imageWidth / 2;
    this.centerY = this.imageHeight / 2;
    this.render();
  }

  // Canvas pixels per original image pixel.
  get scale() {
    if (!this.imageWidth) return 1;
    const fit = Math.min(this.canvas.width / this.imageWidth, this.canvas.height / this.imageHeight);
    return fit * this.zoom;
  }

  imageToCanvas(x, y) {
    const s = this.scale;
    return [this.canvas.width / 2 + (x - this.centerX) * s, this.canvas.height / 2 + (y - this.centerY) * s];
  }

  canvasToImage(cx, cy) {
    const s = this.scale;
    return [this.centerX + (cx - this.canvas.width / 2) / s, this.centerY + (cy - this.canvas.height / 2) / s];
  }

  // A mouse event's position in canvas pixels.
  eventToCanvas(event) {
    const rect = this.canvas.getBoundingClientRect();
    return [(event.clientX - rect.left) * (this.canvas.width / rect.width),
            (event.clientY - rect.top) * (this.canvas.height / rect.height)];
  }

  eventToImage(event) {
    return this.canvasToImage(...this.eventToCanvas(event));
  }

  contains(x, y) {
    return x >= 0 && y >= 0 && x <= this.imageWidth && y <= this.imageHeight;
  }

  zoomAt(cx, cy, factor) {
    const [ix, iy] = this.canvasToImage(cx, cy);
    this.zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.zoom * factor));
    const s = this.scale;
    // keep the image point under the cursor where it was
    this.centerX = ix - (cx - this.canvas.width / 2) / s;
    this.centerY = iy - (cy - this.canvas.height / 2) / s;
    this.render();
  }

  panBy(dcx, dcy) {
    const s = this.scale;
    this.centerX -= dcx / s;
    this.centerY -= dcy / s;
    this.render();
  }

  // Draws `source` (a canvas or bitmap) over the whole photo; a `transposed` one (a mask
  // overlay from masks.overlayCanvas: one row per image column) has its axes swapped back.
  drawOverImage(source, alpha = 1, smooth = false, transposed = false) {
    const ctx = this.ctx;
    const [x0, y0] = this.imageToCanvas(0, 0);
    const w = this.imageWidth * this.scale;
    const h = this.imageHeight * this.scale;
    ctx.save();
    ctx.globalAlpha = alpha;
    ctx.imageSmoothingEnabled = smooth;
    if (transposed) {
      // source (u, v) is image (x = v, y = u), scaled to the photo's extent
      ctx.setTransform(0, h / source.width, w / source.height, 0, x0, y0);
      ctx.drawImage(source, 0, 0);
    } else {
      ctx.drawImage(source, x0, y0, w, h);
    }
    ctx.restore();
  }

  drawMask(overlay, alpha = 1, smooth = false) {
    this.drawOverImage(overlay, alpha, smooth, true);
  }

  // Schedules one draw at the next frame; `then` runs right after it.
  render(then) {
    if (then) this.afterRender.push(then);
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
      const callbacks = this.afterRender;
      this.afterRender = [];
      for (const callback of callbacks) callback();
    });
  }

  draw() {
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0d0e11";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.bitmap) return;
    // smooth when the bitmap is shrunk on screen, sharp pixels when zoomed in
    this.drawOverImage(this.bitmap, 1, this.scale * this.imageWidth < this.displayWidth);
    for (const layer of this.layers) layer(ctx, this);
  }
}
