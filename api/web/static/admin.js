// Admin pages: users (search, deactivate, grant admin), jobs and queues (live counts,
// running jobs with cancel, failed jobs with retry), models (the key is write-only).
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
            "aria-label": "Remove the second factor of " + label, onclick: () => removeFactor(u.id, label) })]),
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
