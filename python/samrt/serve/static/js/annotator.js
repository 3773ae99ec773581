// The annotator: the queue, the object being drawn with clicks and boxes, the accepted
// annotations, and pre-fill proposals. Every accepted object is stored on the server
// before it is listed; the page itself keeps nothing that a reload would lose.

import { ApiError } from "./api.js";
import { colourFor, coveredFraction, cssColour, decodeRle, displayMask, overlayCanvas } from "./masks.js";

const HOVER_INTERVAL_MS = 50;     // at most one hover preview request per interval, one in flight
const DRAG_THRESHOLD_PX = 5;      // a press that moves further (CSS pixels) draws a box
const JOB_POLL_MS = 250;
const PREFILL_MAX_COVERED = 0.25; // a proposal more annotated than this is not shown
const CURRENT_RGB = [61, 139, 255];
const PROPOSAL_RGB = [255, 196, 0];
const SELECTED_RGB = [255, 255, 255];
const HOVER_RGB = [120, 200, 255];
const DEFAULT_CATEGORY = "object";

export class Annotator {
  constructor(api, view, elements) {
    this.api = api;
    this.view = view;
    this.el = elements;
    this.images = [];
    this.index = -1;
    this.image = null;
    this.generation = 0;      // bumped on every image change: late answers for another image are dropped
    this.annotations = [];    // {row, mask, overlay, rgb}
    this.selectedId = null;
    this.current = null;      // {started, steps: [{prompt, click, result, masks, selected}]}
    this.work = Promise.resolve(); // clicks, accepts and undos run one after another
    this.accepted = new Map(); // image id -> ids accepted in this page, for undo
    this.proposals = null;    // {jobId, items: [{proposal, mask, overlay}], selected}
    this.hover = null;        // {overlay}
    this.hoverState = { inFlight: false, wanted: null, last: 0, timer: 0 };
    this.pointer = null;      // the press in progress
    this.spaceDown = false;
    this.categories = [];
    this.latency = { clicks: [], requests: [], hoverFrames: 0 };
    this.clickCount = 0;
    view.layers.push((ctx, v) => this.drawLayers(ctx, v));
  }

  // -- start -------------------------------------------------------------------------

  async start() {
    const hash = new URLSearchParams(location.hash.slice(1));
    if (hash.has("token")) {
      this.api.setToken(hash.get("token"));
      hash.delete("token");
      history.replaceState(null, "", location.pathname + location.search + (hash.toString() ? "#" + hash : ""));
    }
    this.bindEvents();
    await this.loadCategories();
    await this.loadQueue();
    const wanted = hash.get("image");
    let index = this.images.findIndex((i) => i.image_id === wanted);
    if (index < 0) index = this.images.findIndex((i) => !i.done);
    if (index < 0) index = this.images.length ? 0 : -1;
    await Promise.all([index >= 0 ? this.open(index) : this.showEmpty(), this.refreshStats()]);
  }

  showEmpty() {
    this.el.imageName.textContent = "no images: start samrt serve with --images FOLDER, or upload one";
    this.view.clear();
  }

  // -- the queue ---------------------------------------------------------------------

  async loadQueue() {
    this.images = (await this.api.images()).images;
    if (this.image) {
      this.index = this.images.findIndex((i) => i.image_id === this.image.image_id);
      if (this.index >= 0) this.image = this.images[this.index];
    }
    this.renderQueue();
  }

  renderQueue() {
    const list = this.el.queueList;
    list.replaceChildren();
    this.images.forEach((image, i) => {
      const item = document.createElement("li");
      item.dataset.imageId = image.image_id;
      item.classList.toggle("current", i === this.index);
      item.classList.toggle("done", image.done);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = image.file_name;
      name.title = `${image.file_name} (${image.width}x${image.height})`;
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = String(image.annotations);
      item.append(name, badge);
      item.addEventListener("click", () => this.act(() => this.open(i)));
      list.append(item);
    });
    const done = this.images.filter((i) => i.done).length;
    this.el.queueProgress.textContent = `${done}/${this.images.length} done`;
  }

  async open(index) {
    if (index < 0 || index >= this.images.length) return;
    const generation = ++this.generation;
    this.index = index;
    this.image = this.images[index];
    this.current = null;
    this.proposals = null;
    this.hover = null;
    this.selectedId = null;
    this.annotations = [];
    const image = this.image;
    const params = new URLSearchParams(location.hash.slice(1));
    params.set("image", image.image_id);
    history.replaceState(null, "", "#" + params);
    this.el.imageName.textContent = `${image.file_name} (${image.width}x${image.height})`;
    this.el.doneCheckbox.checked = image.done;
    this.renderQueue();
    this.renderPanels();
    this.setStatus("loading image...");
    // The embedding is computed while the photo downloads, so the first click is answered at once.
    const encoded = this.api.encode(image.image_id).catch((e) => e);
    const blob = await this.api.imageFile(image.image_id);
    if (generation !== this.generation) return;
    await this.view.setImage(blob, image.width, image.height);
    if (generation !== this.generation) return;
    await this.loadAnnotations();
    const encodeResult = await encoded;
    if (generation !== this.generation) return;
    if (encodeResult instanceof Error) throw encodeResult;
    this.setStatus("");
    this.el.canvas.dataset.ready = "true";
    this.el.canvas.dataset.imageId = image.image_id;
  }

  next() { return this.open(Math.min(this.images.length - 1, this.index + 1)); }
  previous() { return this.open(Math.max(0, this.index - 1)); }

  async setDone(done) {
    if (!this.image) return;
    await this.api.setDone(this.image.image_id, done);
    await this.loadQueue();
    await this.refreshStats();
  }

  async upload(files) {
    let last = null;
    for (const file of files) {
      this.setStatus(`uploading ${file.name}...`);
      last = await this.api.upload(file);
    }
    await this.loadQueue();
    if (last) await this.open(this.images.findIndex((i) => i.image_id === last.image_id));
  }

  // -- annotations -------------------------------------------------------------------

  async loadAnnotations() {
    const image = this.image;
    const generation = this.generation;
    const rows = (await this.api.annotations(image.image_id)).annotations;
    if (generation !== this.generation) return;
    const known = new Map(this.annotations.map((a) => [a.row.id, a]));
    this.annotations = rows.map((row) => {
      const old = known.get(row.id);
      if (old) return old;
      const mask = displayMask(row.rle, this.view.displayWidth, this.view.displayHeight);
      const rgb = colourFor(row.id);
      return { row, mask, rgb, overlay: overlayCanvas(mask, rgb, 0.4), selected: overlayCanvas(mask, SELECTED_RGB, 0.25) };
    });
    if (!this.annotations.some((a) => a.row.id === this.selectedId)) this.selectedId = null;
    this.renderPanels();
    this.view.render();
  }

  selectAnnotation(id) {
    this.selectedId = this.selectedId === id ? null : id;
    this.renderPanels();
    this.view.render();
  }

  async deleteSelected() {
    if (this.selectedId === null) return;
    const id = this.selectedId;
    await this.api.deleteAnnotation(id);
    this.selectedId = null;
    this.setStatus(`deleted annotation #${id} (restorable: POST /v1/annotations/${id}/restore)`);
    await this.afterAnnotationsChanged();
  }

  async afterAnnotationsChanged() {
    await this.loadAnnotations();
    await Promise.all([this.loadQueue(), this.refreshStats()]);
  }

  // -- the object in progress --------------------------------------------------------

  // Adds a point or sets the box of the current object, refining the previous result.
  addClick(click) {
    const image = this.image;
    if (!image) return;
    const generation = this.generation;
    const mark = `samrt:click:${++this.clickCount}`;
    performance.mark(mark);
    this.act(async () => {
      if (generation !== this.generation) return;
      if (!this.current) this.current = { started: Date.now(), steps: [] };
      this.hover = null;
      const previous = this.current.steps.at(-1);
      const prompt = previous
        ? { points: [...previous.prompt.points], labels: [...previous.prompt.labels], box: previous.prompt.box }
        : { points: [], labels: [], box: null };
      if (click.box) prompt.box = click.box;
      else { prompt.points.push(click.point); prompt.labels.push(click.label); }
      // One point alone is ambiguous: ask for three candidates. With more, one mask, refined.
      const body = { points: prompt.points, labels: prompt.labels, multimask: prompt.points.length === 1 && !prompt.box };
      if (prompt.box) body.box = prompt.box;
      if (previous) {
        body.mask_input = previous.result.result_id;
        body.mask_input_index = previous.selected;
      }
      const sent = performance.now();
      const result = await this.api.predict(image.image_id, body);
      this.latency.requests.push(performance.now() - sent);
      if (generation !== this.generation || !this.current) return;
      const scores = result.masks.map((m) => m.score);
      const selected = scores.indexOf(Math.max(...scores));
      const step = { prompt, click, result, masks: result.masks.map(() => null), selected };
      this.current.steps.push(step);
      this.ensureMask(step, selected);
      this.renderPanels();
      this.view.render(() => {
        const measure = performance.measure("samrt:click-to-mask", mark);
        this.latency.clicks.push(measure.duration);
        performance.clearMarks(mark);
      });
    });
  }

  ensureMask(step, index) {
    if (!step.masks[index]) {
      const mask = displayMask(step.result.masks[index].rle, this.view.displayWidth, this.view.displayHeight);
      step.masks[index] = { mask, overlay: overlayCanvas(mask, CURRENT_RGB, 0.45) };
    }
    return step.masks[index];
  }

  cycleCandidate(direction = 1) {
    const step = this.current && this.current.steps.at(-1);
    if (!step || step.result.masks.length < 2) return;
    const n = step.result.masks.length;
    step.selected = (step.selected + direction + n) % n;
    this.ensureMask(step, step.selected);
    this.renderPanels();
    this.view.render();
  }

  selectCandidate(index) {
    const step = this.current && this.current.steps.at(-1);
    if (!step) return;
    step.selected = index;
    this.ensureMask(step, index);
    this.renderPanels();
    this.view.render();
  }

  accept() {
    this.act(async () => {
      const current = this.current;
      const step = current && current.steps.at(-1);
      if (!step || !this.image) return;
      const mask = step.result.masks[step.selected];
      const image = this.image;
      const body = {
        rle: { size: mask.rle.size, counts: mask.rle.counts },
        category: this.category(),
        prompts: current.steps.map((s) => (s.click.box ? { box: s.click.box } : { points: [s.click.point], labels: [s.click.label] })),
        seconds: (Date.now() - current.started) / 1000,
        score: mask.score,
        source: "manual",
      };
      const row = await this.api.addAnnotation(image.image_id, body);
      this.rememberAccepted(image.image_id, [row.id]);
      if (this.current === current) this.current = null;
      this.setStatus(`accepted #${row.id} (${row.category}, ${row.area} px)`);
      await this.afterAnnotationsChanged();
    });
  }

  // What Ctrl+Z takes back, newest last, per image.
  rememberAccepted(imageId, ids) {
    if (!this.accepted.has(imageId)) this.accepted.set(imageId, []);
    this.accepted.get(imageId).push(...ids);
  }

  drop() {
    if (this.current) {
      this.current = null;
      this.setStatus("object dropped");
    } else {
      this.selectedId = null;
    }
    this.renderPanels();
    this.view.render();
  }

  undo() {
    this.act(async () => {
      if (this.current) {
        this.current.steps.pop();
        if (!this.current.steps.length) this.current = null;
        this.renderPanels();
        this.view.render();
        return;
      }
      const stack = this.image && this.accepted.get(this.image.image_id);
      const id = stack && stack.pop();
      if (id === undefined) {
        this.setStatus("nothing to undo");
        return;
      }
      await this.api.deleteAnnotation(id);
      this.setStatus(`undid annotation #${id}`);
      await this.afterAnnotationsChanged();
    });
  }

  // -- hover preview -----------------------------------------------------------------

  hoverAt(x, y) {
    const h = this.hoverState;
    if (!this.image || this.current || this.pointer || !this.view.contains(x, y)) {
      this.clearHover();
      return;
    }
    h.wanted = [x, y];
    if (h.inFlight || h.timer) return;
    const wait = HOVER_INTERVAL_MS - (performance.now() - h.last);
    if (wait > 0) {
      h.timer = setTimeout(() => { h.timer = 0; this.sendHover(); }, wait);
      return;
    }
    this.sendHover();
  }

  async sendHover() {
    const h = this.hoverState;
    if (!h.wanted || this.current || !this.image) return;
    const point = h.wanted;
    h.wanted = null;
    h.inFlight = true;
    h.last = performance.now();
    const generation = this.generation;
    try {
      const out = await this.api.preview(this.image.image_id, { points: [point], labels: [1], multimask: true });
      if (generation !== this.generation || this.current || this.pointer) return;
      this.hover = { overlay: overlayCanvas(decodeRle(out.rle), HOVER_RGB, 0.4, false), score: out.score };
      this.view.render(() => {
        this.latency.hoverFrames++;
        performance.mark("samrt:hover-frame");
      });
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 503)) this.showError(e); // overloaded: the next move asks again
    } finally {
      h.inFlight = false;
      if (h.wanted) this.hoverAt(...h.wanted);
    }
  }

  clearHover() {
    this.hoverState.wanted = null;
    if (this.hover) {
      this.hover = null;
      this.view.render();
    }
  }

  // -- pre-fill (semi-automatic) -----------------------------------------------------

  async prefill() {
    const image = this.image;
    if (!image) return;
    const generation = this.generation;
    const params = {
      points_per_side: Number(this.el.prefillPoints.value),
      pred_iou_thresh: Number(this.el.prefillIou.value),
      stability_score_thresh: Number(this.el.prefillStability.value),
    };
    this.el.prefillButton.disabled = true;
    try {
      let job = await this.api.startEverything(image.image_id, params);
      while (job.state === "queued" || job.state === "running") {
        this.setStatus(`pre-fill: ${job.state} ${Math.round(job.progress * 100)}%`);
        await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
        if (generation !== this.generation) return;
        job = await this.api.job(job.job_id, false);
      }
      if (job.state !== "done") throw new Error(`pre-fill ${job.state}${job.error ? ": " + job.error : ""}`);
      job = await this.api.job(job.job_id, true);
      if (generation !== this.generation) return;
      const union = new Uint8Array(this.view.displayWidth * this.view.displayHeight);
      for (const a of this.annotations) for (let i = 0; i < union.length; i++) union[i] |= a.mask.bits[i];
      const items = [];
      for (const proposal of job.proposals) {
        const mask = displayMask(proposal.rle, this.view.displayWidth, this.view.displayHeight);
        if (coveredFraction(mask.bits, union) > PREFILL_MAX_COVERED) continue;
        items.push({ proposal, mask, overlay: overlayCanvas(mask, PROPOSAL_RGB, 0.3) });
      }
      this.proposals = { jobId: job.job_id, items, selected: items.length ? 0 : null };
      this.setStatus(`pre-fill: ${items.length} proposals (${job.proposals.length - items.length} already annotated)`);
      this.renderPanels();
      this.view.render();
    } finally {
      this.el.prefillButton.disabled = false;
    }
  }

  acceptProposals(which) {
    this.act(async () => {
      const p = this.proposals;
      if (!p || !p.items.length) return;
      const chosen = which === "all" ? p.items : p.selected === null ? [] : [p.items[p.selected]];
      if (!chosen.length) return;
      const out = await this.api.acceptProposals(p.jobId, chosen.map((i) => i.proposal.index), this.category());
      p.items = p.items.filter((i) => !chosen.includes(i));
      p.selected = p.items.length ? Math.min(p.selected ?? 0, p.items.length - 1) : null;
      if (this.image) this.rememberAccepted(this.image.image_id, out.ids);
      this.setStatus(`accepted ${out.ids.length} proposal${out.ids.length === 1 ? "" : "s"}`);
      await this.afterAnnotationsChanged();
    });
  }

  rejectProposals() {
    this.proposals = null;
    this.renderPanels();
    this.view.render();
  }

  selectProposal(index) {
    if (!this.proposals) return;
    this.proposals.selected = index;
    this.renderPanels();
    this.view.render();
  }

  // -- categories, stats, export ----------------------------------------------------

  async loadCategories() {
    this.categories = (await this.api.categories()).categories.map((c) => c.name);
    if (!this.categories.includes(DEFAULT_CATEGORY)) this.categories.unshift(DEFAULT_CATEGORY);
    const select = this.el.categorySelect;
    const chosen = select.value;
    select.replaceChildren(...this.categories.map((name, i) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = i < 9 ? `${i + 1}. ${name}` : name;
      return option;
    }));
    if (this.categories.includes(chosen)) select.value = chosen;
  }

  async addCategory(name) {
    name = name.trim();
    if (!name) return;
    await this.api.addCategory(name);
    await this.loadCategories();
    this.el.categorySelect.value = name;
  }

  category() {
    return this.el.categorySelect.value || DEFAULT_CATEGORY;
  }

  pickCategory(n) {
    if (n >= 1 && n <= this.categories.length) this.el.categorySelect.value = this.categories[n - 1];
  }

  async refreshStats() {
    const stats = await this.api.stats();
    const el = this.el.secondsPerMask;
    el.textContent = stats.seconds_per_mask === null
      ? "- s/mask"
      : `${stats.seconds_per_mask.toFixed(1)} s/mask (${stats.timed})`;
    el.dataset.secondsPerMask = stats.seconds_per_mask === null ? "" : String(stats.seconds_per_mask);
  }

  async exportCoco() {
    const blob = await this.api.exportCoco();
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = "samrt-coco.json";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }

  // -- drawing -----------------------------------------------------------------------

  drawLayers(ctx, view) {
    for (const a of this.annotations) {
      view.drawMask(a.overlay);
      if (a.row.id === this.selectedId) view.drawMask(a.selected);
    }
    if (this.proposals) {
      this.proposals.items.forEach((item, i) => {
        view.drawMask(item.overlay, i === this.proposals.selected ? 1 : 0.6);
      });
    }
    if (this.hover) view.drawMask(this.hover.overlay, 1, true);
    const step = this.current && this.current.steps.at(-1);
    if (step && step.masks[step.selected]) view.drawMask(step.masks[step.selected].overlay);
    const prompt = step ? step.prompt : null;
    ctx.save();
    const ratio = window.devicePixelRatio || 1;
    if (prompt && prompt.box) this.drawBox(ctx, view, prompt.box, false);
    if (this.pointer && this.pointer.box) this.drawBox(ctx, view, this.pointer.box, true);
    if (prompt) {
      prompt.points.forEach(([x, y], i) => {
        const [cx, cy] = view.imageToCanvas(x, y);
        ctx.beginPath();
        ctx.arc(cx, cy, 5 * ratio, 0, 2 * Math.PI);
        ctx.fillStyle = prompt.labels[i] ? "#2ecc71" : "#ff4d4d";
        ctx.fill();
        ctx.lineWidth = 1.5 * ratio;
        ctx.strokeStyle = "#ffffff";
        ctx.stroke();
      });
    }
    ctx.restore();
  }

  drawBox(ctx, view, [x0, y0, x1, y1], dashed) {
    const [cx0, cy0] = view.imageToCanvas(x0, y0);
    const [cx1, cy1] = view.imageToCanvas(x1, y1);
    const ratio = window.devicePixelRatio || 1;
    ctx.lineWidth = 2 * ratio;
    ctx.strokeStyle = "#ffd166";
    ctx.setLineDash(dashed ? [6 * ratio, 4 * ratio] : []);
    ctx.strokeRect(cx0, cy0, cx1 - cx0, cy1 - cy0);
    ctx.setLineDash([]);
  }

  renderPanels() {
    // candidates of the current object
    const step = this.current && this.current.steps.at(-1);
    this.el.candidateList.replaceChildren(...(step ? step.result.masks : []).map((m, i) => {
      const item = document.createElement("li");
      item.classList.toggle("selected", i === step.selected);
      const num = document.createElement("span");
      num.className = "num";
      num.textContent = `${i + 1}. score ${m.score.toFixed(3)} · ${m.area} px`;
      item.append(num);
      item.addEventListener("click", () => this.selectCandidate(i));
      return item;
    }));
    this.el.acceptButton.disabled = !step;
    // accepted annotations
    this.el.annotationList.replaceChildren(...this.annotations.map((a) => {
      const item = document.createElement("li");
      item.dataset.annotationId = String(a.row.id);
      item.classList.toggle("selected", a.row.id === this.selectedId);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = cssColour(a.rgb);
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = `#${a.row.id} ${a.row.category}`;
      const num = document.createElement("span");
      num.className = "num";
      num.textContent = `${a.row.area} px` + (a.row.score === null ? "" : ` · ${a.row.score.toFixed(2)}`);
      item.append(swatch, label, num);
      item.addEventListener("click", () => this.selectAnnotation(a.row.id));
      return item;
    }));
    this.el.annotationCount.textContent = String(this.annotations.length);
    // proposals
    const p = this.proposals;
    this.el.proposalList.replaceChildren(...(p ? p.items : []).map((item, i) => {
      const li = document.createElement("li");
      li.classList.toggle("selected", i === p.selected);
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = `proposal ${item.proposal.index}`;
      const num = document.createElement("span");
      num.className = "num";
      num.textContent = `${item.proposal.area} px · ${item.proposal.predicted_iou.toFixed(2)}`;
      li.append(label, num);
      li.addEventListener("click", () => this.selectProposal(i));
      return li;
    }));
    this.el.proposalCount.textContent = p ? String(p.items.length) : "";
  }

  // -- status and errors ---------------------------------------------------------------

  setStatus(text, error = false) {
    this.el.status.textContent = text;
    this.el.status.classList.toggle("error", error);
  }

  showError(e) {
    const message = e instanceof ApiError ? `${e.message}${e.field ? ` (${e.field})` : ""}` : String(e.message || e);
    this.setStatus(message, true);
  }

  // Runs an action after the ones before it; its failure is shown, not thrown.
  act(action) {
    this.work = this.work.then(action).catch((e) => this.showError(e));
    return this.work;
  }

  // -- input -------------------------------------------------------------------------

  bindEvents() {
    const canvas = this.el.canvas;
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    canvas.addEventListener("pointermove", (e) => this.onPointerMove(e));
    canvas.addEventListener("pointerup", (e) => this.onPointerUp(e));
    canvas.addEventListener("pointerleave", () => { if (!this.pointer) this.clearHover(); });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const [cx, cy] = this.view.eventToCanvas(e);
      this.view.zoomAt(cx, cy, Math.exp(-e.deltaY * 0.0015));
    }, { passive: false });
    canvas.addEventListener("dblclick", (e) => e.preventDefault());
    window.addEventListener("keydown", (e) => this.onKeyDown(e));
    window.addEventListener("keyup", (e) => { if (e.code === "Space") this.spaceDown = false; });
    const on = (el, handler) => el.addEventListener("click", () => this.act(handler));
    on(this.el.prevButton, () => this.previous());
    on(this.el.nextButton, () => this.next());
    on(this.el.acceptButton, () => this.accept());
    on(this.el.undoButton, () => this.undo());
    on(this.el.prefillButton, () => this.prefill());
    on(this.el.exportButton, () => this.exportCoco());
    on(this.el.acceptAllButton, () => this.acceptProposals("all"));
    on(this.el.rejectAllButton, () => this.rejectProposals());
    this.el.doneCheckbox.addEventListener("change", () => this.act(() => this.setDone(this.el.doneCheckbox.checked)));
    this.el.categoryForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const input = this.el.categoryNew;
      this.act(async () => { await this.addCategory(input.value); input.value = ""; });
    });
    this.el.uploadInput.addEventListener("change", () => {
      const files = [...this.el.uploadInput.files];
      this.el.uploadInput.value = "";
      this.act(() => this.upload(files));
    });
  }

  onPointerDown(e) {
    this.el.canvas.focus();
    const [cx, cy] = this.view.eventToCanvas(e);
    const pan = e.button === 1 || (e.button === 0 && this.spaceDown);
    if (e.button !== 0 && e.button !== 1 && e.button !== 2) return;
    e.preventDefault();
    this.el.canvas.setPointerCapture(e.pointerId);
    this.pointer = { button: e.button, pan, startX: e.clientX, startY: e.clientY, lastCx: cx, lastCy: cy,
                     start: this.view.eventToImage(e), box: null, shift: e.shiftKey };
    this.clearHover();
    if (pan) this.el.canvas.classList.add("panning");
  }

  onPointerMove(e) {
    const p = this.pointer;
    if (!p) {
      this.hoverAt(...this.view.eventToImage(e));
      return;
    }
    const [cx, cy] = this.view.eventToCanvas(e);
    if (p.pan) {
      this.view.panBy(cx - p.lastCx, cy - p.lastCy);
      p.lastCx = cx;
      p.lastCy = cy;
      return;
    }
    if (p.button === 0 && (p.box || Math.hypot(e.clientX - p.startX, e.clientY - p.startY) > DRAG_THRESHOLD_PX)) {
      const [x, y] = this.clamp(this.view.eventToImage(e));
      const [x0, y0] = this.clamp(p.start);
      p.box = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
      this.view.render();
    }
  }

  onPointerUp(e) {
    const p = this.pointer;
    if (!p) return;
    this.pointer = null;
    this.el.canvas.classList.remove("panning");
    if (p.pan || !this.image) return;
    if (p.box) {
      if (p.box[2] > p.box[0] && p.box[3] > p.box[1]) this.addClick({ box: p.box });
      this.view.render();
      return;
    }
    const [x, y] = p.start;
    if (!this.view.contains(x, y)) return;
    const background = p.button === 2 || (p.button === 0 && (p.shift || e.shiftKey));
    this.addClick({ point: [x, y], label: background ? 0 : 1 });
  }

  clamp([x, y]) {
    return [Math.min(this.view.imageWidth, Math.max(0, x)), Math.min(this.view.imageHeight, Math.max(0, y))];
  }

  onKeyDown(e) {
    const target = e.target;
    const typing = target instanceof HTMLInputElement || target instanceof HTMLSelectElement ||
      target instanceof HTMLTextAreaElement;
    if (typing) {
      if (e.key === "Escape") target.blur();
      return;
    }
    const ctrl = e.ctrlKey || e.metaKey;
    if (ctrl && (e.key === "z" || e.key === "Z")) {
      e.preventDefault();
      this.undo();
      return;
    }
    if (ctrl || e.altKey) return;
    switch (e.key) {
      case "Enter": e.preventDefault(); this.accept(); break;
      case "Escape": this.drop(); break;
      case "Tab": e.preventDefault(); this.cycleCandidate(e.shiftKey ? -1 : 1); break;
      case "Delete": case "Backspace": e.preventDefault(); this.act(() => this.deleteSelected()); break;
      case "n": case "N": this.act(() => this.next()); break;
      case "p": case "P": this.act(() => this.previous()); break;
      case "a": case "A": this.acceptProposals("selected"); break;
      case " ": e.preventDefault(); this.spaceDown = true; break;
      default:
        if (/^[1-9]$/.test(e.key)) this.pickCategory(Number(e.key));
    }
  }
}
