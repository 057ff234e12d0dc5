// The admin exports page: starts an export of accounts, token usage or the audit log
// (`POST /api/admin/exports/`), follows its job to the end and then links its file
// (`/api/exports/{id}/download/`, which takes the session cookie).
"use strict";

(function () {
  const { api, el, showError, when, followJob, jobStatus } = window.Parley;
  const byId = (id) => document.getElementById(id);
  const kind = byId("x-kind");

  // Only the filters of the chosen kind show (and are sent).
  function showFilters() {
    document.querySelectorAll("fieldset[data-kind]").forEach((f) => {
      f.hidden = !f.dataset.kind.split(" ").includes(kind.value);
    });
  }

  function filters() {
    const f = {};
    const text = (id) => byId(id).value.trim();
    const flag = (id) => (byId(id).value === "" ? undefined : byId(id).value === "true");
    if (kind.value === "users") {
      if (text("x-search")) f.search = text("x-search");
      f.is_active = flag("x-active");
      f.is_admin = flag("x-admin");
    } else {
      if (text("x-from")) f.from = text("x-from");
      if (text("x-to")) f.to = text("x-to");
    }
    if (kind.value === "usage") {
      if (text("x-user")) f.user_id = text("x-user");
      if (text("x-model")) f.model = text("x-model");
      f.group_by = byId("x-group").value;
    } else if (kind.value === "audit") {
      if (text("x-action")) f.action = text("x-action");
      if (byId("x-result").value) f.result = byId("x-result").value;
      if (text("x-actor")) f.actor_id = text("x-actor");
    }
    return f;
  }

  byId("export-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(null);
    const what = kind.options[kind.selectedIndex].text;
    const format = byId("x-format").value;
    const button = byId("x-start");
    button.disabled = true;
    try {
      const started = await api("POST", "/api/admin/exports/", { kind: kind.value, format, filters: filters() });
      const status = el("td", { class: "status", text: "queued" });
      const file = el("td", { class: "file" });
      const row = el("tr", {}, [el("td", { text: when(new Date().toISOString()) }), el("td", { text: what }),
        el("td", { text: format.toUpperCase() }), status, file]);
      row.dataset.jobId = started.job_id;
      byId("exports-body").prepend(row);
      button.disabled = false;
      const job = await followJob(started.job_id, (j) => { status.textContent = jobStatus(j); });
      row.dataset.status = job.status;
      if (job.status === "succeeded" && job.result && job.result.download_url) {
        const size = typeof job.result.size_bytes === "number" ? " (" + job.result.size_bytes + " bytes)" : "";
        file.append(el("a", { href: job.result.download_url, class: "download", download: "",
          text: (job.result.file_name || "Download") + size }));
        if (job.result.expires_at) file.append(el("span", { class: "notice", text: " until " + when(job.result.expires_at) }));
      } else {
        file.textContent = job.error || "No file.";
      }
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
    }
  });

  kind.addEventListener("change", showFilters);
  showFilters();
})();
