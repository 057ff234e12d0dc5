// Admin pages: users (search, deactivate, grant admin, quotas), jobs and queues (live counts,
// each queue's depth, the last hour's outcomes, running jobs with cancel, failed jobs with
// retry), models (the key is write-only), the audit log.
"use strict";

(function () {
  const { api, el, showError, age, when } = window.Parley;
  const byId = (id) => document.getElementById(id);
  const page = document.body.dataset.page;

  // ---- users
  let usersRequest = 0;
  async function loadUsers() {
    const ticket = ++usersRequest;
    const search = byId("search").value.trim();
    let q = "?limit=100" + (search ? "&search=" + encodeURIComponent(search) : "");
    if (byId("f-active").value) q += "&is_active=" + byId("f-active").value;
    if (byId("f-admin").value) q += "&is_admin=" + byId("f-admin").value;
    try {
      const data = await api("GET", "/api/admin/users/" + q);
      if (ticket !== usersRequest) return;
      const body = byId("users-body");
      body.replaceChildren();
      for (const u of data.items) {
        const label = u.email;
        const toggle = el("button", { type: "button", text: u.is_active ? "Deactivate" : "Reactivate",
          "aria-label": (u.is_active ? "Deactivate " : "Reactivate ") + label,
          onclick: () => patchUser(u.id, { is_active: !u.is_active }) });
        const admin = el("button", { type: "button", text: u.is_admin ? "Revoke admin" : "Grant admin",
          "aria-label": (u.is_admin ? "Revoke admin from " : "Grant admin to ") + label,
          onclick: () => patchUser(u.id, { is_admin: !u.is_admin }) });
        const row = el("tr", {}, [
          el("td", { text: u.email }), el("td", { text: u.display_name }),
          el("td", { text: u.is_active ? "yes" : "no" }), el("td", { text: u.is_admin ? "yes" : "no" }),
          el("td", { class: "actions" }, [toggle, admin, el("button", { type: "button", text: "Remove 2FA",
            "aria-label": "Remove the second factor of " + label, onclick: () => removeFactor(u.id, label) }),
          el("button", { type: "button", text: "Quota", class: "quota", "aria-label": "Quota of " + label,
            onclick: () => editQuota(u.id, label) })]),
        ]);
        row.dataset.email = u.email;
        body.append(row);
      }
    } catch (err) { showError(err); }
  }

  async function patchUser(id, change) {
    showError(null);
    try { await api("PATCH", "/api/admin/users/" + encodeURIComponent(id) + "/", change); }
    catch (err) { showError(err); }
    loadUsers();
  }

  async function removeFactor(id, label) {
    if (!window.confirm("Remove the second factor of " + label + "?")) return;
    showError(null);
    try {
      await api("DELETE", "/api/admin/users/" + encodeURIComponent(id) + "/mfa/");
      byId("notice").textContent = "The second factor of " + label + " was removed.";
    } catch (err) { showError(err); }
  }

  // ---- quotas: token budgets and allowed models of one account
  let quotaUser = null;
  async function editQuota(id, label) {
    showError(null);
    try {
      const [user, configs] = await Promise.all([
        api("GET", "/api/admin/users/" + encodeURIComponent(id) + "/"),
        api("GET", "/api/llm/configs/?limit=100"),
      ]);
      quotaUser = { id, label };
      const quota = user.quota || {};
      byId("quota-h").textContent = "Quota of " + label;
      byId("q-daily").value = quota.token_budget_daily ?? "";
      byId("q-monthly").value = quota.token_budget_monthly ?? "";
      const allowed = quota.allowed_config_ids;
      byId("q-all-models").checked = allowed === null || allowed === undefined;
      const list = byId("q-models");
      list.replaceChildren();
      for (const c of configs.items) {
        const box = el("input", { type: "checkbox", id: "q-model-" + c.id, value: c.id });
        box.checked = Array.isArray(allowed) && allowed.includes(c.id);
        list.append(el("li", {}, [el("label", { class: "check", for: box.id }, [box,
          c.name + " (" + c.model + ")" + (c.enabled ? "" : " (disabled)")])]));
      }
      modelChoice();
      byId("quota-card").hidden = false;
      byId("q-daily").focus();
    } catch (err) { showError(err); }
  }

  // "Every enabled model" makes the single choices moot.
  function modelChoice() {
    const all = byId("q-all-models").checked;
    byId("q-models").querySelectorAll("input").forEach((i) => { i.disabled = all; });
  }

  function budget(id) {
    const v = byId(id).value.trim();
    return v === "" ? null : Number(v);
  }

  async function saveQuota() {
    if (!quotaUser) return;
    showError(null);
    const allowed = byId("q-all-models").checked ? null
      : [...byId("q-models").querySelectorAll("input:checked")].map((i) => i.value);
    const change = { token_budget_daily: budget("q-daily"), token_budget_monthly: budget("q-monthly"),
      allowed_config_ids: allowed };
    try {
      await api("PATCH", "/api/admin/users/" + encodeURIComponent(quotaUser.id) + "/", change);
      byId("notice").textContent = "The quota of " + quotaUser.label + " was saved.";
      closeQuota();
    } catch (err) { showError(err); }
  }

  function closeQuota() {
    quotaUser = null;
    byId("quota-card").hidden = true;
  }

  // ---- audit log
  let auditCursor = null;
  async function loadAudit(more) {
    let q = "?limit=50";
    const add = (k, v) => { if (v) q += "&" + k + "=" + encodeURIComponent(v); };
    add("action", byId("f-action").value.trim());
    add("result", byId("f-result").value);
    add("since", byId("f-since").value ? byId("f-since").value + "T00:00:00Z" : "");
    add("until", byId("f-until").value ? byId("f-until").value + "T00:00:00Z" : "");
    add("actor", byId("f-actor").value.trim());
    if (more && auditCursor) add("cursor", auditCursor);
    try {
      const data = await api("GET", "/api/admin/audit/" + q);
      const body = byId("audit-body");
      if (!more) body.replaceChildren();
      for (const e of data.items) {
        body.append(el("tr", {}, [
          el("td", { text: when(e.occurred_at) }), el("td", { text: e.action }), el("td", { text: e.result }),
          el("td", { text: e.actor_id || "" }), el("td", { text: e.target_id || "" }), el("td", { text: e.client_address }),
          el("td", { text: e.details ? JSON.stringify(e.details) : "" }),
        ]));
      }
      auditCursor = data.next_cursor;
      byId("audit-more").hidden = !auditCursor;
    } catch (err) { showError(err); }
  }

  // ---- jobs and queues
  // Polls and actions overlap: only the latest load may draw.
  let jobsRequest = 0;
  async function loadJobs() {
    const ticket = ++jobsRequest;
    try {
      const stats = await api("GET", "/api/admin/queues/");
      const running = [];
      for (const status of ["running", "queued", "retrying"]) {
        const data = await api("GET", "/api/admin/jobs/?limit=50&status=" + status);
        running.push(...data.items);
      }
      const failed = await api("GET", "/api/admin/jobs/?limit=50&status=failed");
      if (ticket !== jobsRequest) return;
      byId("queue-reachable").textContent = stats.queue_reachable ? "The queue answers." : "The queue does not answer.";
      const counts = byId("queue-counts");
      counts.replaceChildren();
      for (const [status, n] of Object.entries(stats.jobs)) {
        counts.append(el("div", { class: "count" }, [el("dt", { text: status }), el("dd", { text: String(n) })]));
      }
      showQueues(stats);
      const rbody = byId("running-body");
      rbody.replaceChildren();
      for (const j of running) {
        const row = el("tr", {}, [
          el("td", { text: j.kind }), el("td", { text: j.status }), el("td", { text: age(j.started_at || j.created_at) }),
          el("td", { class: "actions" }, [el("button", { type: "button", text: "Cancel", "aria-label": "Cancel job " + j.id,
            onclick: () => jobAction(j.id, "/api/jobs/" + encodeURIComponent(j.id) + "/cancel/") })]),
        ]);
        row.dataset.jobId = j.id;
        rbody.append(row);
      }
      const fbody = byId("failed-body");
      fbody.replaceChildren();
      for (const j of failed.items) {
        const row = el("tr", {}, [
          el("td", { text: j.kind }), el("td", { text: j.error_detail || j.error || "" }), el("td", { text: when(j.finished_at) }),
          el("td", { class: "actions" }, [el("button", { type: "button", text: "Retry", class: "retry", "aria-label": "Retry job " + j.id,
            onclick: () => jobAction(j.id, "/api/admin/jobs/" + encodeURIComponent(j.id) + "/retry/") })]),
        ]);
        row.dataset.jobId = j.id;
        fbody.append(row);
      }
    } catch (err) { showError(err); }
  }

  // Each queue's load now, and what each kind's jobs came to in the last hour.
  function showQueues(stats) {
    const qbody = byId("queues-body");
    qbody.replaceChildren();
    for (const q of stats.queues || []) {
      const oldest = q.oldest_waiting_secs === null ? "none due" : seconds(q.oldest_waiting_secs);
      const row = el("tr", {}, [el("th", { scope: "row", text: q.name }), el("td", { text: String(q.waiting) }),
        el("td", { text: String(q.running) }), el("td", { text: oldest })]);
      row.dataset.queue = q.name;
      qbody.append(row);
    }
    const hbody = byId("last-hour-body");
    hbody.replaceChildren();
    for (const k of stats.last_hour || []) {
      const row = el("tr", {}, [el("th", { scope: "row", text: k.kind }), el("td", { text: k.queue }),
        el("td", { text: String(k.succeeded) }), el("td", { text: String(k.failed) }),
        el("td", { text: String(k.cancelled) }), el("td", { text: String(k.retried) })]);
      row.dataset.kind = k.kind;
      row.dataset.queue = k.queue;
      hbody.append(row);
    }
    byId("last-hour-empty").textContent = (stats.last_hour || []).length ? "" : "No job ended in the last hour.";
  }

  function seconds(s) {
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  async function jobAction(id, url) {
    showError(null);
    try { await api("POST", url); } catch (err) { showError(err); }
    loadJobs();
  }

  // ---- models
  async function loadModels() {
    try {
      const data = await api("GET", "/api/llm/configs/?limit=100");
      const body = byId("models-body");
      body.replaceChildren();
      for (const c of data.items) {
        body.append(el("tr", {}, [
          el("td", { text: c.name }), el("td", { text: c.provider }), el("td", { text: c.model }),
          el("td", { text: c.has_api_key ? "yes" : "no" }),
          el("td", { text: c.is_default ? "yes" : "no" }), el("td", { text: c.enabled ? "yes" : "no" }),
          el("td", { class: "actions" }, [el("button", { type: "button", text: "Edit", "aria-label": "Edit " + c.name,
            onclick: () => editModel(c) }), el("button", { type: "button", text: c.enabled ? "Disable" : "Enable",
            "aria-label": (c.enabled ? "Disable " : "Enable ") + c.name,
            onclick: async () => {
              try { await api("PATCH", "/api/llm/configs/" + encodeURIComponent(c.id) + "/", { enabled: !c.enabled }); }
              catch (err) { showError(err); }
              loadModels();
            } })]),
        ]));
      }
    } catch (err) { showError(err); }
  }

  let editing = null;
  function editModel(c) {
    editing = c.id;
    byId("m-name").value = c.name;
    byId("m-provider").value = c.provider;
    byId("m-model").value = c.model;
    byId("m-base-url").value = c.base_url || "";
    byId("m-key").value = "";
    byId("m-default").checked = c.is_default;
    byId("new-model-h").textContent = "Edit " + c.name;
    byId("m-submit").textContent = "Save";
    byId("m-cancel").hidden = false;
    byId("m-name").focus();
  }
  function stopEditing() {
    editing = null;
    byId("model-form").reset();
    byId("new-model-h").textContent = "Add a model";
    byId("m-submit").textContent = "Add";
    byId("m-cancel").hidden = true;
  }

  if (page === "admin_audit") {
    byId("audit-filter").addEventListener("submit", (e) => { e.preventDefault(); loadAudit(false); });
    byId("audit-more").addEventListener("click", () => loadAudit(true));
    loadAudit(false);
  } else if (page === "admin_users") {
    byId("user-search").addEventListener("submit", (e) => { e.preventDefault(); loadUsers(); });
    byId("quota-form").addEventListener("submit", (e) => { e.preventDefault(); saveQuota(); });
    byId("q-all-models").addEventListener("change", modelChoice);
    byId("q-cancel").addEventListener("click", closeQuota);
    loadUsers();
  } else if (page === "admin_jobs") {
    let polling = false;
    loadJobs();
    setInterval(async () => {
      if (polling) return;
      polling = true;
      try { await loadJobs(); } finally { polling = false; }
    }, 2000);
  } else if (page === "admin_models") {
    byId("model-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      showError(null);
      const body = { name: byId("m-name").value, provider: byId("m-provider").value, model: byId("m-model").value,
        is_default: byId("m-default").checked };
      if (byId("m-base-url").value) body.base_url = byId("m-base-url").value;
      else if (editing) body.base_url = null;
      if (byId("m-key").value) body.api_key = byId("m-key").value;
      try {
        if (editing) await api("PATCH", "/api/llm/configs/" + encodeURIComponent(editing) + "/", body);
        else await api("POST", "/api/llm/configs/", body);
        stopEditing();
      } catch (err) { showError(err); }
      loadModels();
    });
    byId("m-cancel").addEventListener("click", stopEditing);
    loadModels();
  }
})();
