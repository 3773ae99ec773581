// Entry point: finds the page's elements, asks for a token when the server wants one,
// and starts the annotator. `window.annotator` is there for user scripts and tests.

import { Api } from "./api.js";
import { Annotator } from "./annotator.js";
import { View } from "./view.js";

const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

const elements = {
  canvas: byTestId("image-canvas"),
  status: byTestId("status"),
  imageName: byTestId("image-name"),
  prevButton: byTestId("prev-image"),
  nextButton: byTestId("next-image"),
  doneCheckbox: byTestId("done-checkbox"),
  categorySelect: byTestId("category-select"),
  categoryForm: document.getElementById("category-form"),
  categoryNew: byTestId("category-new"),
  acceptButton: byTestId("accept-button"),
  undoButton: byTestId("undo-button"),
  prefillButton: byTestId("prefill-button"),
  exportButton: byTestId("export-button"),
  secondsPerMask: byTestId("seconds-per-mask"),
  queueList: byTestId("queue-list"),
  queueProgress: document.getElementById("queue-progress"),
  uploadInput: byTestId("upload-input"),
  candidateList: byTestId("candidate-list"),
  annotationList: byTestId("annotation-list"),
  annotationCount: document.getElementById("annotation-count"),
  proposalList: byTestId("proposal-list"),
  proposalCount: document.getElementById("proposal-count"),
  prefillPoints: byTestId("prefill-points"),
  prefillIou: byTestId("prefill-iou"),
  prefillStability: byTestId("prefill-stability"),
  acceptAllButton: byTestId("accept-all-button"),
  rejectAllButton: byTestId("reject-all-button"),
};

// The API sits where the page does (the app may be mounted under a prefix, e.g. /sam).
const api = new Api(new URL("../..", import.meta.url).pathname.replace(/\/$/, ""));
const dialog = byTestId("token-dialog");
api.onUnauthorized = () => new Promise((resolve) => {
  const input = byTestId("token-input");
  dialog.addEventListener("close", () => resolve(input.value), { once: true });
  dialog.showModal();
  input.focus();
});

const annotator = new Annotator(api, new View(elements.canvas), elements);
window.annotator = annotator;
annotator.start().catch((e) => annotator.showError(e));
