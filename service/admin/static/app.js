// The unlearnd admin dashboard: a client of the public JSON API and nothing else.
//
// Each view registers "feeds" (API reads it shows). Every few seconds a feed is polled
// with If-None-Match; a 304 leaves its panel alone, a 200 re-renders it. The key lives in
// this tab's session storage. Everything the server sends is put in the page as text
// (textContent), never parsed as HTML.
"use strict";

(() => {
  const POLL_MS = 3000;
  const KEY_ITEM = "unlearnd.api-key";
  const OWED = new Set(["pending", "batched", "unlearning", "failed"]);
  const REQUEST_STATUSES = ["pending", "batched", "unlearning", "auditing", "completed",
    "cancelled", "failed"];
  const JOB_STATUSES = ["queued", "running", "auditing", "succeeded", "failed"];
  const SOON_SECONDS = 7 * 86400; // a deadline this close is shown as a warning

  const $ = (selector) => document.querySelector(selector);
  let me = null; // {tenant, tenant_id, key_id, scopes}
  let current = null; // the view on screen: {feeds, charts, alive}
  let pollTimer = null;
  let lastPoll = null;
  let offline = false;

  // ---------------------------------------------------------------- DOM helpers

  /** An element with attributes, properties and children (strings become text nodes). */
  function h(tag, attrs, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") element.className = value;
      else if (name === "dataset") Object.assign(element.dataset, value);
      else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
      else element.setAttribute(name, value === true ? "" : String(value));
    }
    append(element, children);
    return element;
  }

  function append(element, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  function fill(element, ...children) {
    element.replaceChildren();
    return append(element, children);
  }

  function panel(title, id, ...extra) {
    const body = h("div", { class: "panel-body", id }, h("p", { class: "muted" }, "Loading..."));
    return { element: h("section", { class: "panel" }, h("h2", {}, title, ...extra), body), body };
  }

  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing here.");
    return h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", {}, name)))),
      h("tbody", {}, rows)));
  }

  function definitions(pairs) {
    return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([term, value]) => [
      h("dt", {}, term), h("dd", {}, value === null || value === undefined ? "-" : value)]));
  }

  const badge = (value) => h("span", { class: `badge badge-${value}` }, value);
  const short = (id) => (id ? id.slice(0, 8) : "-");
  const link = (href, text) => h("a", { href }, text);

  // ---------------------------------------------------------------- formatting

  /** In UTC, as the API gives it: deadlines read the same for every operator. */
  function formatTime(iso) {
    if (!iso) return "-";
    return `${new Date(iso).toISOString().slice(0, 19).replace("T", " ")} UTC`;
  }

  function formatDuration(seconds) {
    if (Math.abs(seconds) < 10) return `${Math.abs(seconds).toFixed(1)} s`;
    const s = Math.round(Math.abs(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function formatNumber(value) {
    if (value === null || value === undefined) return "-";
    if (typeof value === "number") {
      return Number.isInteger(value) ? String(value) : value.toFixed(4);
    }
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  const percent = (value) => (typeof value === "number" ? `${(100 * value).toFixed(1)}%` : "-");

  /** A live age ("3 min 2 s"), kept current by the clock, not by polling. */
  const age = (iso) => h("span", { class: "clock", dataset: { since: iso } }, "");

  /** Time left until a deadline; overdue and close deadlines stand out while still owed. */
  function deadline(dueIso, owed) {
    if (!dueIso) return "-";
    if (!owed) return h("span", { class: "muted", title: dueIso }, formatTime(dueIso));
    return h("span", { class: "clock deadline", dataset: { until: dueIso }, title: dueIso }, "");
  }

  function tickClocks() {
    const now = Date.now();
    for (const element of document.querySelectorAll("[data-since]")) {
      element.textContent = formatDuration((now - Date.parse(element.dataset.since)) / 1000);
    }
    for (const element of document.querySelectorAll("[data-until]")) {
      const left = (Date.parse(element.dataset.until) - now) / 1000;
      element.textContent = left < 0 ? `overdue by ${formatDuration(left)}`
        : `${formatDuration(left)} left`;
      element.classList.toggle("overdue", left < 0);
      element.classList.toggle("soon", left >= 0 && left < SOON_SECONDS);
    }
    if (lastPoll) {
      const ago = Math.round((now - lastPoll) / 1000);
      fill($("#live"), offline ? "offline, retrying" : document.hidden ? "paused"
        : `live · checked ${ago} s ago`);
      $("#live").classList.toggle("offline", offline);
    }
  }

  // ---------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  /** One call to the API: {status, etag, body}; problems (>= 400) throw ApiError. */
  async function api(path, { method = "GET", body, etag } = {}) {
    const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY_ITEM)}` };
    if (etag) headers["If-None-Match"] = etag;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    // no-store: the page does its own revalidation, so the browser's cache stays out of it.
    const response = await fetch(path, {
      method,
      headers,
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 304) return { status: 304, etag };
    const text = await response.text();
    const parsed = text ? JSON.parse(text) : null;
    if (response.status === 401 && path !== "/v1/me") {
      signOut("The server refused the key (revoked or unknown). Sign in again.");
    }
    if (!response.ok) throw new ApiError(response.status, parsed);
    return { status: response.status, etag: response.headers.get("ETag"), body: parsed };
  }

  /** Save what ``path`` answers (a CSV, say) as ``filename``, sent with the key. */
  async function download(path, filename) {
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY_ITEM)}` },
      cache: "no-store",
    });
    if (!response.ok) {
      const text = await response.text();
      throw new ApiError(response.status, text ? JSON.parse(text) : null);
    }
    const url = URL.createObjectURL(await response.blob());
    const anchor = h("a", { href: url, download: filename });
    document.body.append(anchor);
    anchor.click();
    anchor.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000); // once the download has it
  }

  const can = (scope) => me && (me.scopes.includes(scope) || me.scopes.includes("admin"));

  // ---------------------------------------------------------------- feeds and polling

  function startView(build) {
    stopView();
    current = { feeds: [], charts: [], alive: true };
    fill($("#view"));
    build(current);
    pollNow();
  }

  function stopView() {
    if (!current) return;
    current.alive = false;
    for (const chart of current.charts) chart.destroy();
    current = null;
  }

  /** A read this view shows: ``render(body)`` on each new answer, ``target`` for refusals. */
  function feed(view, path, render, target, onError) {
    const entry = { path, render, target, onError, etag: null, stopped: false };
    view.feeds.push(entry);
    return entry;
  }

  async function poll(view, entry) {
    if (entry.stopped) return;
    try {
      const answer = await api(entry.path, { etag: entry.etag });
      if (!view.alive || answer.status === 304) return;
      entry.etag = answer.etag;
      entry.render(answer.body);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (!view.alive) return;
      entry.etag = null;
      if (error.status === 403) entry.stopped = true; // a key's scopes do not change
      if (entry.onError && entry.onError(error) !== false) return;
      if (entry.target) fill(entry.target, problemNotice(error));
    }
  }

  /** A refusal says what is missing instead of leaving the panel blank. */
  function problemNotice(error) {
    if (error.status === 403) {
      return h("div", { class: "refused", role: "alert" },
        h("strong", {}, "Refused: "), error.message,
        ". Sign in with a key that has this scope to see it.");
    }
    if (error.status === 404) return h("p", { class: "error" }, "Not found (or not yours).");
    return h("p", { class: "error" }, `${error.status}: ${error.message}`);
  }

  async function pollNow() {
    clearTimeout(pollTimer);
    const view = current;
    if (view && !document.hidden) {
      try {
        // In order: a view's first feeds (model names) serve the ones after them.
        for (const entry of view.feeds) await poll(view, entry);
        offline = false;
      } catch (error) {
        offline = true; // the network or the server is down; keep trying
      }
      lastPoll = Date.now();
      tickClocks();
    }
    pollTimer = setTimeout(pollNow, POLL_MS);
  }

  // ---------------------------------------------------------------- actions

  function flash(message, kind) {
    const note = h("div", { class: `flash flash-${kind || "ok"}`, role: "status" }, message);
    $("#main").prepend(note);
    setTimeout(() => note.remove(), 6000);
  }

  /** A button that calls the API (after a confirmation) and refreshes the view. */
  function action(label, path, { body = {}, confirmText, done, scope, id } = {}) {
    if (scope && !can(scope)) return null;
    const button = h("button", { type: "button", id }, label);
    button.addEventListener("click", async () => {
      if (confirmText && !window.confirm(confirmText)) return;
      button.disabled = true;
      try {
        const answer = await api(path, { method: "POST", body });
        flash(done ? done(answer.body) : `${label}: done`);
      } catch (error) {
        flash(`${label}: ${error instanceof ApiError ? error.message : "the API is unreachable"}`,
          "error");
      } finally {
        button.disabled = false;
        pollNow();
      }
    });
    return button;
  }

  const cancelButton = (request) => (request.status === "pending" ? action(
    "Cancel", `/v1/deletion-requests/${request.id}/cancel`, {
      scope: "requests:write", id: `cancel-${request.id}`,
      confirmText: `Cancel the deletion request ${short(request.id)}? ` +
        "Its data will then stay in the model.",
      done: () => "Request cancelled.",
    }) : null);

  const retryButton = (request) => (request.status === "failed" ? action(
    "Retry", `/v1/deletion-requests/${request.id}/retry`, {
      scope: "admin", confirmText: "Put this request back in the queue?",
      done: () => "Request queued again.",
    }) : null);

  const flushButton = (model) => action("Flush now", `/v1/models/${model.id}/flush`, {
    scope: "models:write", id: `flush-${model.id}`,
    done: (answer) => `Batching ${answer.pending_requests} pending request(s) now.`,
  });

  // ---------------------------------------------------------------- shared pieces

  /** Model names for the ids other reads carry; ``learn`` takes a page of models. */
  function nameBook() {
    const names = new Map();
    return {
      learn(page) {
        for (const model of page.items) names.set(model.id, model.name);
      },
      link: (id) => link(`#/models/${id}`, names.get(id) || short(id)),
    };
  }

  /** A view's model names, read before its other feeds (feeds are polled in order). */
  function modelNames(view) {
    const book = nameBook();
    if (can("models:read")) feed(view, "/v1/models?limit=500", book.learn);
    return book.link;
  }

  function progress(job) {
    const p = job.progress || {};
    if (!p.total) return p.stage || "-";
    const share = Math.min(1, (p.step || 0) / p.total);
    return h("span", { class: "progress", title: `${p.stage} ${p.step}/${p.total}` },
      h("progress", { max: p.total, value: p.step || 0 }),
      ` ${p.stage} ${Math.round(100 * share)}%`);
  }

  // A register job has a dataset, no model.
  function ownerOf(job, modelLink) {
    return job.model_id ? modelLink(job.model_id) : `dataset ${short(job.dataset_id || "")}`;
  }

  function jobRows(jobs, modelLink) {
    return jobs.map((job) => h("tr", { class: `row-${job.status}` },
      h("td", {}, link(`#/jobs/${job.id}`, short(job.id))),
      h("td", {}, job.kind),
      h("td", {}, ownerOf(job, modelLink)),
      h("td", {}, badge(job.status)),
      h("td", {}, job.status === "running" || job.status === "auditing" ? progress(job) : "-"),
      h("td", {}, [...new Set([job.base_version, job.result_version].filter(Boolean))]
        .map((number) => `v${number}`).join(" -> ") || "-"),
      h("td", {}, job.attempts),
      h("td", {}, formatTime(job.created_at)),
      h("td", { class: "error-text" }, job.error || "")));
  }

  const JOB_HEADERS = ["job", "kind", "model", "status", "progress", "versions", "attempts",
    "created", "error"];

  function requestRows(requests, modelLink) {
    return requests.map((request) => h("tr", { class: `row-${request.status}` },
      h("td", {}, link(`#/requests/${request.id}`, short(request.id))),
      h("td", { title: request.subject_digest }, short(request.subject_digest)),
      h("td", {}, modelLink(request.model_id)),
      h("td", {}, badge(request.status)),
      h("td", {}, request.sample_count),
      h("td", {}, formatTime(request.created_at)),
      h("td", {}, deadline(request.due_at, OWED.has(request.status))),
      h("td", { class: "actions" }, cancelButton(request), retryButton(request))));
  }

  const REQUEST_HEADERS = ["request", "subject", "model", "status", "samples", "received",
    "deadline", ""];

  // ---------------------------------------------------------------- views

  function overviewView(view) {
    const counts = panel("Deletion requests", "overview-requests");
    const clocks = panel("Deadlines", "overview-deadlines");
    const jobs = panel("Jobs", "overview-jobs");
    const models = panel("Models", "overview-models");
    const recent = panel("Recent jobs", "overview-recent-jobs");
    const failed = panel("Failed requests (need an admin)", "overview-failed");
    fill($("#view"), h("h1", {}, "Overview"),
      h("div", { class: "cards" }, counts.element, clocks.element, jobs.element),
      models.element, recent.element, failed.element);

    let backlog = new Map();
    let modelPage = null;
    const book = nameBook();
    const renderModels = () => {
      if (!modelPage) return;
      fill(models.body, table(
        ["model", "status", "head", "unlearner", "pending", "oldest pending", "nearest due", ""],
        modelPage.items.map((model) => {
          const queued = backlog.get(model.id);
          return h("tr", {},
            h("td", {}, link(`#/models/${model.id}`, model.name)),
            h("td", {}, badge(model.status)),
            h("td", {}, model.head_version ? `v${model.head_version}` : "-"),
            h("td", {}, model.unlearner.name),
            h("td", { class: "num", id: `pending-${model.id}` }, model.pending_requests),
            h("td", {}, queued ? age(queued.oldest_pending_at) : "-"),
            h("td", {}, queued ? deadline(queued.nearest_due_at, true) : "-"),
            h("td", { class: "actions" }, model.pending_requests ? flushButton(model) : null));
        }), "No models yet."));
      tickClocks();
    };

    feed(view, "/v1/models?limit=500", (page) => {
      book.learn(page);
      modelPage = page;
      renderModels();
    }, models.body);
    feed(view, "/v1/overview", (summary) => {
      backlog = new Map(summary.pending_by_model.map((entry) => [entry.model_id, entry]));
      const count = (status) => h("div", { class: `count count-${status}` },
        h("span", { class: "count-value", id: `count-${status}` }, summary.requests[status]),
        h("span", { class: "count-label" }, status));
      fill(counts.body,
        h("div", { class: "counts" }, ["pending", "batched", "unlearning", "auditing", "failed"]
          .map(count)),
        h("div", { class: "counts counts-done" }, ["completed", "cancelled"].map(count)));
      fill(clocks.body, definitions([
        ["oldest pending", summary.oldest_pending_at
          ? h("span", { id: "oldest-pending" }, age(summary.oldest_pending_at)) : "none"],
        ["nearest deadline", summary.nearest_due_at
          ? h("span", { id: "nearest-due" }, deadline(summary.nearest_due_at, true)) : "none owed"],
        ["due on", summary.nearest_due_at ? formatTime(summary.nearest_due_at) : "-"],
      ]));
      fill(jobs.body, h("div", { class: "counts" }, JOB_STATUSES.filter((s) => s !== "succeeded")
        .map((status) => h("div", { class: `count count-${status}` },
          h("span", { class: "count-value", id: `jobs-${status}` }, summary.jobs[status]),
          h("span", { class: "count-label" }, status)))));
      renderModels();
    }, counts.body, (error) => {
      // One refusal for the three cards of this one read.
      fill(counts.body, problemNotice(error));
      clocks.element.hidden = jobs.element.hidden = true;
    });

    feed(view, "/v1/jobs?limit=15", (page) => {
      fill(recent.body, table(JOB_HEADERS, jobRows(page.items, book.link), "No jobs yet."));
    }, recent.body);
    feed(view, "/v1/deletion-requests?status=failed&limit=50", (page) => {
      fill(failed.body, table(REQUEST_HEADERS, requestRows(page.items, book.link),
        "No failed requests."));
      tickClocks();
    }, failed.body);
  }

  function requestsView(view, params) {
    const query = new URLSearchParams(params);
    const list = panel("Deletion requests", "requests-list");
    const filters = h("form", { class: "filters", id: "request-filters" },
      h("label", {}, "status ", h("select", { name: "status" },
        h("option", { value: "" }, "any"),
        REQUEST_STATUSES.map((status) => h("option", {
          value: status, selected: query.get("status") === status }, status)))),
      h("label", {}, "subject ", h("input", {
        name: "subject_id", value: query.get("subject_id") || "", placeholder: "subject id (searched by its digest)" })),
      h("label", {}, "model id ", h("input", {
        name: "model_id", value: query.get("model_id") || "", placeholder: "any model" })),
      h("button", { type: "submit" }, "Filter"));
    filters.addEventListener("submit", (event) => {
      event.preventDefault();
      const chosen = new URLSearchParams();
      for (const [name, value] of new FormData(filters)) if (value) chosen.set(name, value);
      location.hash = `#/requests?${chosen}`;
    });
    const exported = h("span", { id: "register-status", class: "muted" });
    const exportButton = h("button", { type: "button", id: "register-export" },
      "Export the register (CSV)");
    exportButton.addEventListener("click", async () => {
      const chosen = new URLSearchParams();
      for (const name of ["status", "subject_id", "model_id"]) {
        if (query.get(name)) chosen.set(name, query.get(name));
      }
      try {
        await download(`/v1/deletion-requests:export?${chosen}`, "deletion-register.csv");
        fill(exported, " Saved deletion-register.csv.");
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        fill(exported, problemNotice(error));
      }
    });
    fill($("#view"), h("h1", {}, "Deletion requests"), filters,
      h("p", { class: "actions" }, exportButton, exported), list.element);

    const modelLink = modelNames(view);
    const apiQuery = new URLSearchParams();
    for (const name of ["status", "subject_id", "model_id", "cursor"]) {
      if (query.get(name)) apiQuery.set(name, query.get(name));
    }
    apiQuery.set("limit", "50");
    feed(view, `/v1/deletion-requests?${apiQuery}`, (page) => {
      const next = new URLSearchParams(query);
      if (page.next_cursor) next.set("cursor", page.next_cursor);
      const first = new URLSearchParams(query);
      first.delete("cursor");
      fill(list.body, table(REQUEST_HEADERS, requestRows(page.items, modelLink),
        "No requests match."),
        h("p", { class: "pager" },
          query.get("cursor") ? link(`#/requests?${first}`, "<- newest") : null, " ",
          page.next_cursor ? link(`#/requests?${next}`, "older ->") : null));
      tickClocks();
    }, list.body);
  }

  function requestView(view, id) {
    const details = panel("Request", "request-details");
    const history = panel("History", "request-history");
    const certificate = panel("Certificate", "request-certificate");
    fill($("#view"), h("h1", {}, "Deletion request ", h("code", {}, id)),
      details.element, history.element, certificate.element);
    const modelLink = modelNames(view);

    feed(view, `/v1/deletion-requests/${id}`, (request) => {
      const owed = OWED.has(request.status);
      const keys = request.sample_keys
        ? h("details", {}, h("summary", {}, `${request.sample_keys.length} sample keys`),
          h("pre", { class: "keys" }, request.sample_keys.join("\n")))
        : null;
      fill(details.body, definitions([
        ["status", h("span", { id: "request-status" }, badge(request.status))],
        ["subject digest", h("code", {}, request.subject_digest)],
        ["model", modelLink(request.model_id)],
        ["samples", request.sample_count],
        keys && ["sample keys", keys],
        request.class_labels && ["classes", request.class_labels.join(", ")],
        ["already forgotten", request.already_forgotten.length],
        ["received", formatTime(request.created_at)],
        ["deadline", h("span", {}, formatTime(request.due_at),
          owed ? [" (", deadline(request.due_at, true), ")"] : null)],
        ["completed", request.completed_at ? `${formatTime(request.completed_at)} (${
          Date.parse(request.completed_at) <= Date.parse(request.due_at) ? "in time" : "LATE"})`
          : "-"],
        ["job", request.job_id ? link(`#/jobs/${request.job_id}`, short(request.job_id)) : "-"],
        ["result version", request.result_version
          ? link(`#/models/${request.model_id}/versions/${request.result_version}`,
            `v${request.result_version}`) : "-"],
        request.error && ["error", h("span", { class: "error-text" }, request.error)],
        ["callback", request.callback_url],
      ]), h("div", { class: "actions" }, cancelButton(request), retryButton(request)));
      fill(history.body, h("ol", { class: "timeline" }, request.history.map((entry) =>
        h("li", {}, badge(entry.status), " ", formatTime(entry.at),
          entry.detail ? h("span", { class: "muted" }, ` - ${entry.detail}`) : null))));
      renderCertificate(certificate.body, request);
      tickClocks();
    }, details.body);
  }

  function renderCertificate(target, request) {
    if (request.status !== "completed") {
      fill(target, h("p", { class: "muted" },
        "A certificate is issued once the request is completed."));
      return;
    }
    const summary = h("div", { id: "certificate-summary" });
    const button = h("button", { type: "button", id: "certificate-download" },
      "Download certificate (JSON)");
    button.addEventListener("click", async () => {
      try {
        const answer = await api(`/v1/deletion-requests/${request.id}/certificate`);
        const cert = answer.body;
        fill(summary, definitions([
          ["evidence", cert.evidence],
          ["met deadline", cert.request.met_deadline ? "yes" : "NO"],
          ["audit verdict", cert.audit ? badge(cert.audit.verdict) : "no audit"],
          ["audit-log entries", cert.audit_log.length],
          ["entries consistent", cert.audit_log_entries_consistent ? "yes" : "NO"],
          ["issued", formatTime(cert.issued_at)],
        ]));
        const blob = new Blob([JSON.stringify(cert, null, 2)], { type: "application/json" });
        const anchor = h("a", { href: URL.createObjectURL(blob),
          download: `certificate-${request.id}.json` });
        document.body.append(anchor);
        anchor.click();
        anchor.remove();
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        fill(summary, problemNotice(error));
      }
    });
    fill(target, h("p", {}, "The evidence that this request was honoured: digests of its " +
      "keys, the job, the versions before and after, the audit, and its hash-chained " +
      "audit-log entries."), h("p", { class: "actions" }, button,
      link(`#/requests/${request.id}/certificate`, "Printable certificate")), summary);
  }

  /** A completed request's certificate as a page to print or save as PDF. */
  async function certificateView(view, id) {
    const page = h("article", { class: "certificate", id: "certificate-page" },
      h("p", { class: "muted" }, "Loading..."));
    fill($("#view"), page);
    let cert;
    try {
      cert = (await api(`/v1/deletion-requests/${id}/certificate`)).body;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      fill(page, problemNotice(error), link(`#/requests/${id}`, "Back to the request"));
      return;
    }
    if (!view.alive) return;
    const request = cert.request;
    const version = (v) => (v ? `v${v.number} (${v.kind}, weights sha256 ${v.artifact_sha256})` : "-");
    const print = h("button", { type: "button", class: "no-print", onclick: () => window.print() },
      "Print or save as PDF");
    fill(page,
      h("h1", {}, "Certificate of erasure"),
      h("p", { class: "evidence", id: "certificate-evidence" }, cert.evidence),
      h("h2", {}, "The request"),
      definitions([
        ["request", h("code", {}, request.id)],
        ["subject (keyed digest)", h("code", {}, request.subject_digest)],
        ["model", h("code", {}, request.model_id)],
        ["samples", request.sample_count],
        request.class_labels && ["classes", request.class_labels.join(", ")],
        ["received", formatTime(request.created_at)],
        ["due", formatTime(request.due_at)],
        ["completed", formatTime(request.completed_at)],
        ["met the deadline", request.met_deadline ? "yes" : "NO"],
      ]),
      h("h2", {}, "The model"),
      definitions([
        ["version before", version(cert.version_before)],
        ["version after", version(cert.version_after)],
        ["job", cert.job ? `${cert.job.id} (${typeof cert.job.unlearner === "string"
          ? cert.job.unlearner : (cert.job.unlearner || {}).name})` : "-"],
      ]),
      h("h2", {}, "The audit"),
      cert.audit ? definitions([
        ["verdict", badge(cert.audit.verdict)],
        ["failed gates", (cert.audit.failed_gates || []).join(", ") || "none"],
        ["audited", formatTime(cert.audit.created_at)],
      ]) : h("p", {}, "No audit of this version is stored."),
      h("h2", {}, "Audit-log entries"),
      table(["entry", "at", "action", "hash", "signed"], cert.audit_log.map((entry) =>
        h("tr", {}, h("td", {}, String(entry.id)), h("td", {}, formatTime(entry.at)),
          h("td", {}, entry.action), h("td", {}, h("code", {}, entry.hash)),
          h("td", {}, entry.signature ? `key ${entry.key_id}` : "no")))),
      h("p", { class: "muted" }, `Entries consistent with the log: ${
        cert.audit_log_entries_consistent ? "yes" : "NO"}. Issued ${formatTime(cert.issued_at)}. ` +
        "Verify independently with `unlearnd audit verify --public-key K --certificate F` " +
        "on the JSON certificate."),
      h("p", { class: "actions no-print" }, print, link(`#/requests/${id}`, "Back to the request")));
  }

  /** This tenant's audit-log entries, and (admin) a verification of the whole chain. */
  function auditLogView(view, params) {
    const query = new URLSearchParams(params);
    const check = panel("Chain verification", "chain-verification");
    const entries = panel("Entries", "audit-log-entries");
    fill($("#view"), h("h1", {}, "Audit log"), check.element, entries.element);
    let broken = null;
    const verify = h("button", { type: "button", id: "verify-chain" }, "Verify the chain now");
    verify.addEventListener("click", async () => {
      fill(check.body, h("p", { class: "muted" }, "Walking the whole chain..."));
      try {
        const result = (await api("/v1/audit-log/verification")).body;
        broken = result.broken;
        fill(check.body, h("p", { id: "chain-result",
          class: result.intact ? "gate-passed" : "error" },
        result.intact
          ? `Intact: every link and hash checked${result.signatures_checked
            ? ", and every signature" : " (no signing key configured: no signatures)"}; ` +
            `${result.entries} entries are this tenant's.`
          : `BROKEN ${result.broken.entry_id === null ? "" : `at entry ${result.broken.entry_id}`}` +
            `: ${result.broken.reason}.`),
        definitions([
          ["latest entry", result.head ? `${result.head.entry_id}, ${result.head.hash}` : "-"],
          ["walked", formatTime(result.verified_at)],
        ]), verify);
        pollNow();
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        fill(check.body, problemNotice(error), verify);
      }
    });
    fill(check.body, h("p", {}, "Every entry carries the hash of the one before it and, with a " +
      "signing key, a signature the database cannot forge. The service walks the whole chain " +
      "(at most once a minute) and says whether it holds, and where it breaks if that is " +
      "one of this tenant's entries."),
    can("admin") ? verify : h("p", { class: "muted" }, "Verifying needs the admin scope."));

    const apiQuery = new URLSearchParams({ limit: "50" });
    if (query.get("cursor")) apiQuery.set("cursor", query.get("cursor"));
    feed(view, `/v1/audit-log?${apiQuery}`, (page) => {
      const next = new URLSearchParams(query);
      if (page.next_cursor) next.set("cursor", page.next_cursor);
      fill(entries.body, table(["entry", "at", "action", "subject", "hash", "signed"],
        page.items.map((entry) => h("tr", {
          class: broken && broken.entry_id === entry.id ? "broken-entry" : "" },
        h("td", {}, String(entry.id)), h("td", {}, formatTime(entry.at)),
        h("td", {}, entry.action), h("td", {}, `${entry.subject_type} ${short(entry.subject_id)}`),
        h("td", { title: entry.hash }, h("code", {}, short(entry.hash))),
        h("td", {}, entry.signature ? "yes" : "no"))), "No entries yet."),
      h("p", { class: "pager" },
        query.get("cursor") ? link("#/audit-log", "<- newest") : null, " ",
        page.next_cursor ? link(`#/audit-log?${next}`, "older ->") : null));
    }, entries.body);
  }

  function modelView(view, id) {
    const head = panel("Model", "model-details");
    const lineage = panel("Lineage", "model-lineage");
    const quality = panel("Accuracy across versions (UA, RA, TA)", "model-quality");
    const pending = panel("Pending requests", "model-pending");
    const jobs = panel("Jobs", "model-jobs");
    const title = h("h1", {}, "Model");
    fill($("#view"), title, head.element, lineage.element, quality.element, pending.element,
      jobs.element);
    let model = null;
    let versions = null;
    const modelLink = (modelId) => link(`#/models/${modelId}`, model ? model.name : short(modelId));

    const renderLineage = () => {
      if (!versions) return;
      const chain = versions.filter((v) => v.in_lineage).sort((a, b) => a.number - b.number);
      const references = versions.filter((v) => !v.in_lineage);
      const headNumber = model ? model.head_version : null;
      fill(lineage.body,
        chain.length ? h("ol", { class: "chain", id: "lineage-chain" }, chain.map((version) =>
          h("li", { class: `version${version.number === headNumber ? " head" : ""}`,
            dataset: { version: version.number } },
          h("a", { href: `#/models/${id}/versions/${version.number}`, class: "version-title" },
            `v${version.number}`),
          version.number === headNumber ? h("span", { class: "head-mark" }, "HEAD") : null,
          h("div", {}, badge(version.kind)),
          h("div", { class: "muted" }, version.unlearner ? version.unlearner.name : "-"),
          h("div", {}, `${version.deletion_request_ids.length} request(s)`),
          h("div", {}, `forgot ${version.forgotten_samples} (total ${version.forgotten_total})`),
          h("div", { class: "metrics-line" },
            `UA ${percent(version.metrics.ua)} · RA ${percent(version.metrics.ra)} · ` +
            `TA ${percent(version.metrics.ta)}`),
          h("div", { class: "muted" }, formatTime(version.created_at)))))
          : h("p", { class: "muted" }, "No version yet (training or waiting for an upload)."),
        references.length ? h("p", { class: "muted" }, "Retrained audit references: ",
          references.map((v) => `v${v.number} (of v${v.parent})`).join(", ")) : null);
      drawQuality(view, quality.body, chain);
    };

    feed(view, `/v1/models/${id}`, (body) => {
      model = body;
      fill(title, "Model ", h("span", { id: "model-name" }, body.name), " ", badge(body.status));
      fill(head.body, definitions([
        ["head version", body.head_version ? `v${body.head_version}` : "-"],
        ["unlearner", `${body.unlearner.name} ${JSON.stringify(body.unlearner.params)}`],
        ["batching", `at ${body.batching.max_requests} pending or after ` +
          `${formatDuration(body.batching.max_wait_seconds)}`],
        ["pending requests", h("span", { id: "model-pending-count" }, body.pending_requests)],
        ["architecture", body.architecture.name],
        ["dataset", h("code", {}, body.dataset_id)],
        ["created", formatTime(body.created_at)],
      ]), h("div", { class: "actions" }, body.pending_requests ? flushButton(body) : null));
      renderLineage();
    }, head.body);
    feed(view, `/v1/models/${id}/versions?limit=500`, (page) => {
      versions = page.items;
      renderLineage();
    }, lineage.body);
    feed(view, `/v1/deletion-requests?model_id=${encodeURIComponent(id)}&status=pending&limit=50`,
      (page) => {
        fill(pending.body, table(REQUEST_HEADERS, requestRows(page.items, modelLink),
          "Nothing pending."));
        tickClocks();
      }, pending.body);
    feed(view, `/v1/jobs?model_id=${encodeURIComponent(id)}&limit=20`, (page) => {
      fill(jobs.body, table(JOB_HEADERS, jobRows(page.items, modelLink), "No jobs yet."));
    }, jobs.body);
  }

  function chartCanvas(view, target, id, label, config) {
    const previous = view.charts.findIndex((chart) => chart.canvas.id === id);
    if (previous >= 0) view.charts.splice(previous, 1)[0].destroy();
    const canvas = h("canvas", { id, role: "img", "aria-label": label });
    fill(target, h("div", { class: "chart" }, canvas));
    const chart = new window.Chart(canvas, config);
    view.charts.push(chart);
    return chart;
  }

  const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

  function drawQuality(view, target, chain) {
    const series = ["ua", "ra", "ta"].map((name, index) => ({
      label: name.toUpperCase(), borderColor: COLOURS[index], backgroundColor: COLOURS[index],
      data: chain.map((v) => (typeof v.metrics[name] === "number" ? v.metrics[name] : null)),
      spanGaps: true,
    }));
    chartCanvas(view, target, "quality-chart", "UA, RA and TA of each version in the lineage", {
      type: "line",
      data: { labels: chain.map((v) => `v${v.number}`), datasets: series },
      options: { animation: false, maintainAspectRatio: false,
        scales: { y: { min: 0, max: 1, title: { display: true, text: "accuracy" } } } },
    });
  }

  function versionView(view, modelId, number) {
    const summary = panel(`Version ${number}`, "version-details");
    const verdict = panel("Audit verdict", "audit-verdict");
    const roc = panel("Loss attack ROC (forget set vs held-out data)", "audit-roc");
    const entropy = panel("Output entropy: forget set vs held-out data", "audit-entropy");
    const gates = panel("Gates", "audit-gates");
    const metrics = panel("Metrics", "audit-metrics");
    const auditJobs = panel("Audit jobs", "audit-jobs");
    const title = h("h1", {}, "Version ", number);
    const charts = h("div", { class: "charts" }, roc.element, entropy.element);
    fill($("#view"), title, summary.element, verdict.element, charts, gates.element,
      metrics.element, auditJobs.element);
    // Without an audit to show, one message in the verdict panel stands for all of them.
    const showAudit = (shown) => {
      for (const element of [charts, gates.element, metrics.element]) element.hidden = !shown;
    };
    let modelName = short(modelId);

    feed(view, `/v1/models/${modelId}`, (model) => {
      modelName = model.name;
      fill(title, link(`#/models/${modelId}`, model.name), ` · version ${number} `,
        model.head_version === number ? h("span", { class: "head-mark inline" }, "HEAD") : null);
    }, summary.body);

    const auditPath = `/v1/models/${modelId}/versions/${number}/audit`;
    feed(view, `/v1/models/${modelId}/versions/${number}`, (version) => {
      fill(summary.body, definitions([
        ["kind", badge(version.kind)],
        ["parent", version.parent ? link(`#/models/${modelId}/versions/${version.parent}`,
          `v${version.parent}`) : "-"],
        ["unlearner", version.unlearner ? `${version.unlearner.name} ` +
          JSON.stringify(version.unlearner.params || {}) : "-"],
        ["requests", version.deletion_request_ids.length ? version.deletion_request_ids.map(
          (requestId) => [link(`#/requests/${requestId}`, short(requestId)), " "]) : "-"],
        ["forgotten samples", `${version.forgotten_samples} (total ${version.forgotten_total})`],
        ["UA / RA / TA", `${percent(version.metrics.ua)} / ${percent(version.metrics.ra)} / ` +
          `${percent(version.metrics.ta)}`],
        ["weights sha256", h("code", {}, version.artifact_sha256)],
        version.unchanged && ["unchanged", h("span", { class: "error-text", id: "unchanged" },
          `the parent's weights, as they were: ${version.unchanged_reason || "no reason given"}`)],
        ["created", formatTime(version.created_at)],
      ]), h("div", { class: "actions" },
        version.forgotten_samples ? action("Re-audit", auditPath,
          { body: { reference: "none" }, scope: "admin", done: () => "Audit job queued." }) : null,
        version.forgotten_samples ? action("Audit against retrained references", auditPath, {
            body: { reference: "retrain" }, scope: "admin", id: "audit-reference",
            confirmText: "This retrains the model from scratch (K times) to compare. Go on?",
            done: () => "Reference audit queued." }) : null));
    }, summary.body);

    feed(view, auditPath, (audit) => {
      showAudit(true);
      renderAudit(view, audit, { verdict, roc, entropy, gates, metrics });
    }, verdict.body, (error) => {
      showAudit(false);
      fill(verdict.body, error.status === 404
        ? h("p", { class: "muted", id: "audit-missing" }, "No audit stored for this version " +
          "yet: versions that forgot nothing have none, and a new version's audit job may " +
          "still be running (see below).")
        : problemNotice(error));
    });

    feed(view, `/v1/jobs?model_id=${encodeURIComponent(modelId)}&limit=50`, (page) => {
      const mine = page.items.filter((job) => job.kind === "audit" && job.base_version === number);
      fill(auditJobs.body, table(JOB_HEADERS, jobRows(mine, (id) => link(`#/models/${id}`,
        modelName)), "No audit job for this version."));
    }, auditJobs.body);
  }

  function renderAudit(view, audit, panels) {
    const reference = audit.reference;
    const control = audit.control;
    const signal = audit.membership_signal;
    fill(panels.verdict.body, h("p", { class: `verdict verdict-${audit.verdict}`, id: "verdict" },
      audit.verdict.replace("_", " ")),
    audit.evidence ? h("p", { id: "audit-evidence" }, audit.evidence) : null, definitions([
      ["forget set", `${audit.forget_set_size} samples`],
      ["failed gates", audit.failed_gates.length
        ? audit.failed_gates.map((gate) => gate.name).join(", ") : "none"],
      ["uninformative gates", audit.uninformative_gates && audit.uninformative_gates.length
        ? audit.uninformative_gates.join(", ") : "none"],
      ["control (the parent)", control ? `v${control.version}: ${control.verdict}` : "-"],
      ["membership signal", signal
        ? `${signal.parent.auc.toFixed(3)} -> ${signal.version.auc.toFixed(3)} ` +
          `(held-out data: ${signal.heldout_value})` : "-"],
      ["FRM", formatNumber(audit.frm)],
      ["average disparity", formatNumber(audit.avg_disparity)],
      ["reference", reference ? `${reference.kind} (v${reference.version}` +
        `${reference.versions && reference.versions.length > 1
          ? `, ${reference.versions.length} models` : ""})` : "none: no gates ran"],
      ["unlearning", audit.unlearning_seconds ? formatDuration(audit.unlearning_seconds) : "-"],
      ["speed-up vs retraining", audit.speedup_vs_reference
        ? `${audit.speedup_vs_reference.toFixed(1)}x` : "-"],
      ["audited", formatTime(audit.created_at)],
    ]));

    const curves = [{ label: "loss attack", points: audit.roc }];
    for (const [name, detail] of Object.entries(audit.attacks || {})) {
      if (name !== "loss_threshold" && detail && Array.isArray(detail.roc) && detail.roc.length) {
        curves.push({ label: name, points: detail.roc });
      }
    }
    chartCanvas(view, panels.roc.body, "roc-chart", "ROC curves of the membership attacks", {
      type: "scatter",
      data: { datasets: [
        ...curves.map((curve, index) => ({
          label: curve.label, showLine: true, pointRadius: 0, borderWidth: 2,
          borderColor: COLOURS[index], backgroundColor: COLOURS[index],
          data: curve.points.map(([x, y]) => ({ x, y })),
        })),
        { label: "chance", showLine: true, pointRadius: 0, borderDash: [6, 4], borderWidth: 1,
          borderColor: "#9ca3af", data: [{ x: 0, y: 0 }, { x: 1, y: 1 }] },
      ] },
      options: { animation: false, maintainAspectRatio: false, scales: {
        x: { min: 0, max: 1, title: { display: true, text: "false-positive rate" } },
        y: { min: 0, max: 1, title: { display: true, text: "true-positive rate" } } } },
    });

    // Histograms as shares of their own set: the forget set and the held-out set differ in size.
    const histograms = [
      ["forget set (this version)", audit.metrics.forget_entropy_histogram],
      ["held-out data", audit.metrics.holdout_entropy_histogram],
      ["forget set (retrained reference)",
        reference && reference.metrics && reference.metrics.forget_entropy_histogram],
    ].filter(([, histogram]) => histogram && histogram.counts && histogram.counts.length);
    if (histograms.length) {
      const bins = histograms[0][1].bins;
      chartCanvas(view, panels.entropy.body, "entropy-chart", "entropy histograms", {
        type: "bar",
        data: {
          labels: bins.slice(0, -1)
            .map((edge, i) => `${edge.toFixed(2)}-${bins[i + 1].toFixed(2)}`),
          datasets: histograms.map(([label, histogram], index) => {
            const total = histogram.counts.reduce((a, b) => a + b, 0) || 1;
            return { label, backgroundColor: COLOURS[index],
              data: histogram.counts.map((count) => count / total) };
          }),
        },
        options: { animation: false, maintainAspectRatio: false, scales: {
          x: { title: { display: true, text: "entropy of the output (nats)" } },
          y: { title: { display: true, text: "share of the set" } } } },
      });
    } else {
      fill(panels.entropy.body, h("p", { class: "muted" }, "This audit has no histogram."));
    }

    // Gates and metrics are rendered from whatever the report holds, so new gates or
    // metrics show up without a change here.
    const gateColumns = [...new Set(audit.gates ? audit.gates.flatMap(Object.keys) : [])];
    fill(panels.gates.body, audit.gates && audit.gates.length
      ? table(gateColumns, audit.gates.map((gate) => h("tr", {
        class: gate.passed === false ? "gate-failed" : gate.passed ? "gate-passed" : "" },
      gateColumns.map((column) => h("td", {}, formatNumber(gate[column]))))))
      : h("p", { class: "muted" }, "No gates ran: gates compare against a retrained " +
        "reference. Ask for a reference audit to get a verdict."),
      audit.skipped_gates && audit.skipped_gates.length
        ? h("p", { class: "muted" }, `Skipped: ${audit.skipped_gates.join(", ")}`) : null);

    const scalar = (value) => value === null || typeof value !== "object";
    const names = Object.keys(audit.metrics).filter((name) => scalar(audit.metrics[name]));
    const referenceMetrics = (reference && reference.metrics) || {};
    fill(panels.metrics.body, table(["metric", "this version", "reference"],
      names.map((name) => h("tr", {}, h("td", {}, name),
        h("td", { class: "num" }, formatNumber(audit.metrics[name])),
        h("td", { class: "num" }, formatNumber(referenceMetrics[name]))))));
  }

  function jobView(view, id) {
    const details = panel("Job", "job-details");
    const effort = panel("What the method did", "job-report");
    fill($("#view"), h("h1", {}, "Job ", h("code", {}, id)), details.element, effort.element);
    const modelLink = modelNames(view);
    feed(view, `/v1/jobs/${id}`, (job) => {
      fill(details.body, definitions([
        ["kind", job.kind],
        ["status", badge(job.status)],
        ["model", ownerOf(job, modelLink)],
        ["progress", job.status === "running" || job.status === "auditing" ? progress(job) : "-"],
        ["base version", job.base_version ? link(`#/models/${job.model_id}/versions/${
          job.base_version}`, `v${job.base_version}`) : "-"],
        ["result version", job.result_version ? link(`#/models/${job.model_id}/versions/${
          job.result_version}`, `v${job.result_version}`) : "-"],
        ["unlearner", job.unlearner ? job.unlearner.name : "-"],
        ["requests", job.request_ids.length ? job.request_ids.map((requestId) =>
          [link(`#/requests/${requestId}`, short(requestId)), " "]) : "-"],
        ["samples", job.sample_count],
        ["attempts", job.attempts],
        ["timings (s)", Object.entries(job.timings || {}).map(([stage, seconds]) =>
          `${stage} ${formatNumber(seconds)}`).join(" · ") || "-"],
        ["created", formatTime(job.created_at)],
        ["started", formatTime(job.started_at)],
        ["finished", formatTime(job.finished_at)],
        ["seed", job.seed === null || job.seed === undefined ? "-" : job.seed],
        job.error && ["error", h("span", { class: "error-text" }, job.error)],
      ]));
      renderReport(effort.body, job.report || {});
    }, details.body);
  }

  // The method's own report: its facts, then one row per stop-rule check (the kept one
  // marked), rendered from whatever the report holds.
  function renderReport(target, report) {
    const { checks, ...facts } = report;
    const shown = Object.entries(facts).filter(([, value]) => value !== null && value !== "");
    if (!shown.length && !(checks && checks.length)) {
      fill(target, h("p", { class: "muted" }, "This job reported nothing of its own."));
      return;
    }
    const columns = checks && checks.length ? [...new Set(checks.flatMap(Object.keys))] : [];
    fill(target, definitions(shown.map(([name, value]) => [name, formatNumber(value)])),
      columns.length ? table(["check", ...columns], checks.map((check, index) => h("tr", {
        class: index === report.kept_check ? "gate-passed" : "" },
      h("td", {}, index === report.kept_check ? `${index} (kept)` : String(index)),
      columns.map((column) => h("td", { class: "num" }, formatNumber(check[column])))))) : null);
  }

  // ---------------------------------------------------------------- routing and sign-in

  const ROUTES = [
    [/^#\/?$/, "overview", (view) => overviewView(view)],
    [/^#\/requests(?:\?(.*))?$/, "requests", (view, query) => requestsView(view, query || "")],
    [/^#\/requests\/([\w-]+)$/, "requests", (view, id) => requestView(view, id)],
    [/^#\/requests\/([\w-]+)\/certificate$/, "requests",
      (view, id) => certificateView(view, id)],
    [/^#\/audit-log(?:\?(.*))?$/, "audit-log", (view, query) => auditLogView(view, query || "")],
    [/^#\/models\/([\w-]+)$/, "overview", (view, id) => modelView(view, id)],
    [/^#\/models\/([\w-]+)\/versions\/(\d+)$/, "overview",
      (view, id, number) => versionView(view, id, Number(number))],
    [/^#\/jobs\/([\w-]+)$/, "overview", (view, id) => jobView(view, id)],
  ];

  function route() {
    if (!me) return;
    for (const note of document.querySelectorAll(".flash")) note.remove();
    const hash = location.hash || "#/";
    for (const [pattern, section, build] of ROUTES) {
      const match = hash.match(pattern);
      if (!match) continue;
      for (const item of document.querySelectorAll("[data-nav]")) {
        item.classList.toggle("active", item.dataset.nav === section);
      }
      startView((view) => build(view, ...match.slice(1).map((part) =>
        part && decodeURIComponent(part))));
      return;
    }
    startView(() => fill($("#view"), h("p", { class: "error" }, "No such page. "),
      link("#/", "Back to the overview")));
  }

  function showSignIn(message) {
    $("#sign-in").hidden = false;
    $("#nav").hidden = true;
    $("#session").hidden = true;
    fill($("#view"));
    const error = $("#sign-in-error");
    error.hidden = !message;
    fill(error, message || "");
    $("#api-key").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_ITEM);
    me = null;
    stopView();
    showSignIn(message);
  }

  async function signIn(key) {
    sessionStorage.setItem(KEY_ITEM, key);
    try {
      me = (await api("/v1/me")).body;
    } catch (error) {
      sessionStorage.removeItem(KEY_ITEM);
      showSignIn(error instanceof ApiError && error.status === 401
        ? "This key is unknown or revoked." : `Cannot reach the API: ${error.message}`);
      return;
    }
    $("#sign-in").hidden = true;
    $("#nav").hidden = false;
    $("#session").hidden = false;
    fill($("#who"), h("span", { class: "tenant", id: "tenant" }, `tenant ${me.tenant}`), " ",
      me.scopes.map((scope) => h("span", { class: "scope" }, scope)));
    route();
  }

  function init() {
    $("#sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("#api-key").value.trim();
      $("#api-key").value = "";
      if (key) signIn(key);
    });
    $("#sign-out").addEventListener("click", () => signOut());
    window.addEventListener("hashchange", route);
    document.addEventListener("visibilitychange", () => document.hidden || pollNow());
    setInterval(tickClocks, 1000);
    const saved = sessionStorage.getItem(KEY_ITEM);
    if (saved) signIn(saved);
    else showSignIn();
  }

  init();
})();
