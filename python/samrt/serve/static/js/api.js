// The samrt serve API as the page uses it: JSON in and out, the bearer token when the
// server has one, and errors as ApiError carrying the server's {error, detail, field}.

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.detail ? body.detail : `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = body && body.error;
    this.field = body && body.field;
  }
}

const TOKEN_KEY = "samrt.token";

export class Api {
  constructor(base = "") {
    this.base = base;
    this.token = sessionStorage.getItem(TOKEN_KEY);
    this.onUnauthorized = null; // async () => token, set by the page
  }

  setToken(token) {
    this.token = token || null;
    if (this.token) sessionStorage.setItem(TOKEN_KEY, this.token);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  async request(method, path, body, { signal, raw = false, retryAuth = true } = {}) {
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let payload;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(this.base + path, { method, headers, body: payload, signal });
    if (response.status === 401 && retryAuth && this.onUnauthorized) {
      this.setToken(await this.onUnauthorized());
      return this.request(method, path, body, { signal, raw, retryAuth: false });
    }
    if (!response.ok) {
      let detail = null;
      try { detail = await response.json(); } catch { /* not JSON: keep the status */ }
      throw new ApiError(response.status, detail);
    }
    if (raw) return response;
    return response.status === 204 ? null : response.json();
  }

  get(path, options) { return this.request("GET", path, undefined, options); }
  post(path, body, options) { return this.request("POST", path, body === undefined ? {} : body, options); }
  patch(path, body) { return this.request("PATCH", path, body); }
  delete(path) { return this.request("DELETE", path); }

  images() { return this.get("/v1/images"); }
  imageFile(id) { return this.get(`/v1/images/${id}/file`, { raw: true }).then((r) => r.blob()); }
  encode(id) { return this.post(`/v1/images/${id}/encode`); }
  predict(id, prompt, options) { return this.post(`/v1/images/${id}/predict`, prompt, options); }
  preview(id, prompt, options) { return this.post(`/v1/images/${id}/preview`, prompt, options); }
  annotations(id) { return this.get(`/v1/images/${id}/annotations`); }
  addAnnotation(id, body) { return this.post(`/v1/images/${id}/annotations`, body); }
  deleteAnnotation(annotationId) { return this.delete(`/v1/annotations/${annotationId}`); }
  setDone(id, done) { return this.patch(`/v1/images/${id}`, { done }); }
  categories() { return this.get("/v1/categories"); }
  addCategory(name) { return this.post("/v1/categories", { name }); }
  stats() { return this.get("/v1/stats"); }
  startEverything(id, params) { return this.post(`/v1/images/${id}/everything`, params); }
  job(jobId, proposals) { return this.get(`/v1/jobs/${jobId}?proposals=${proposals}`); }
  acceptProposals(jobId, indices, category) {
    return this.post(`/v1/jobs/${jobId}/accept`, { proposals: indices, category });
  }
  exportCoco() { return this.get("/v1/export/coco", { raw: true }).then((r) => r.blob()); }

  async upload(file) {
    const headers = { "Content-Type": file.type || "application/octet-stream" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const response = await fetch(this.base + "/v1/images", { method: "POST", headers, body: file });
    if (!response.ok) {
      let detail = null;
      try { detail = await response.json(); } catch { /* keep the status */ }
      throw new ApiError(response.status, detail);
    }
    return response.json();
  }
}
