// The account page: profile, password, sessions with "end", two-factor setup, the export of
// one's data (its job followed to the download link), shared links with "revoke", activity.
"use strict";

(function () {
  const { api, el, showError, when, followJob, jobStatus } = window.Parley;
  const byId = (id) => document.getElementById(id);
  const notice = (t) => { byId("notice").textContent = t; };

  async function loadProfile() {
    const me = await api("GET", "/api/users/me/");
    byId("profile-email").textContent = me.email;
    byId("profile-verified").textContent = me.email_verified ? "(verified)" : "(not verified)";
    byId("display_name").value = me.display_name;
    byId("bio").value = me.bio;
    showAvatar(me.avatar_url);
  }

  function showAvatar(url) {
    const img = byId("avatar");
    // Same origin whatever PARLEY_PUBLIC_URL says, so the page's image policy allows it.
    if (url) { img.src = new URL(url).pathname + "?v=" + Date.now(); img.hidden = false; }
    else img.hidden = true;
  }

  async function loadIdentities() {
    const data = await api("GET", "/api/users/me/identities/");
    const ul = byId("identities");
    ul.replaceChildren();
    if (!data.items.length) ul.append(el("li", { text: "None." }));
    for (const i of data.items) {
      ul.append(el("li", {}, [i.provider + " (" + i.email + ") ", el("button", { type: "button", text: "Unlink",
        "aria-label": "Unlink " + i.provider, onclick: async () => {
          try { await api("DELETE", "/api/users/me/identities/" + encodeURIComponent(i.id) + "/"); } catch (err) { showError(err); }
          loadIdentities();
        } })]));
    }
  }

  // The avatar is processed by a job: its status shows until it is done.
  byId("avatar-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(null);
    const file = byId("avatar-file").files[0];
    if (!file) return;
    const status = byId("avatar-status");
    const body = new FormData();
    body.append("file", file);
    try {
      const res = await fetch("/api/users/me/avatar/", { method: "POST", body, credentials: "same-origin",
        headers: { "X-CSRF-Token": window.Parley.csrf, Accept: "application/json" } });
      const data = await res.json();
      if (!res.ok) throw new Error(data.error ? data.error.message : "upload failed");
      status.textContent = "Uploaded; processing…";
      const source = new EventSource("/api/jobs/" + encodeURIComponent(data.job_id) + "/events/");
      source.addEventListener("status", (ev) => { status.textContent = "Processing: " + JSON.parse(ev.data).status; });
      source.addEventListener("done", async () => {
        source.close();
        status.textContent = "Done.";
        showAvatar((await api("GET", "/api/users/me/")).avatar_url);
      });
      source.addEventListener("error", (ev) => {
        if (ev.data) { source.close(); status.textContent = "The image could not be processed."; }
      });
    } catch (err) { showError(err); }
  });

  async function loadSessions() {
    const data = await api("GET", "/api/auth/sessions/?limit=100");
    const body = byId("sessions-body");
    body.replaceChildren();
    for (const s of data.items) {
      const end = s.current ? el("span", { text: "this browser" }) : el("button", { type: "button", text: "End",
        "aria-label": "End the session of " + (s.user_agent || "an unknown device"),
        onclick: async () => {
          try { await api("DELETE", "/api/auth/sessions/" + encodeURIComponent(s.id) + "/"); } catch (err) { showError(err); }
          loadSessions();
        } });
      body.append(el("tr", {}, [el("td", { text: s.user_agent || "unknown" }), el("td", { text: s.client_address }),
        el("td", { text: when(s.last_used_at) }), el("td", {}, [end])]));
    }
  }

  async function loadMfa() {
    const status = await api("GET", "/api/auth/mfa/");
    byId("mfa-status").textContent = status.totp === "enabled"
      ? "On (" + status.recovery_codes_left + " recovery codes left)." : "Off.";
    byId("mfa-start").hidden = status.totp === "enabled";
  }

  async function loadActivity() {
    const data = await api("GET", "/api/users/me/activity/?limit=20");
    const ul = byId("activity");
    ul.replaceChildren();
    for (const a of data.items) ul.append(el("li", { text: when(a.occurred_at) + " · " + a.action + " · " + a.result }));
  }

  byId("profile-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(null);
    try {
      await api("PATCH", "/api/users/me/", { display_name: byId("display_name").value, bio: byId("bio").value });
      notice("Profile saved.");
    } catch (err) { showError(err); }
  });

  byId("password-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(null);
    try {
      await api("POST", "/api/auth/password/change/", {
        current_password: byId("current_password").value, new_password: byId("new_password").value });
      e.target.reset();
      notice("Password changed; your other sessions were ended.");
      loadSessions();
    } catch (err) { showError(err); }
  });

  byId("mfa-start").addEventListener("click", async () => {
    showError(null);
    try {
      let enrol;
      try { enrol = await api("POST", "/api/auth/mfa/totp/", {}); }
      catch (err) {
        if (err.status !== 401 && err.status !== 403 && err.status !== 422) throw err;
        const password = window.prompt("Your current password");
        if (!password) return;
        enrol = await api("POST", "/api/auth/mfa/totp/", { password });
      }
      byId("mfa-qr").src = enrol.qr_code;
      byId("mfa-secret").textContent = enrol.secret;
      byId("mfa-setup").hidden = false;
      byId("mfa-code").focus();
    } catch (err) { showError(err); }
  });

  byId("mfa-confirm").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(null);
    try {
      const res = await api("POST", "/api/auth/mfa/totp/confirm/", { code: byId("mfa-code").value.trim() });
      byId("mfa-codes").textContent = res.recovery_codes.join("\n");
      byId("mfa-recovery").hidden = false;
      byId("mfa-confirm").hidden = true;
      loadMfa();
    } catch (err) { showError(err); }
  });

  // One's data: a job writes the zip; the link shows when it is done.
  byId("data-export").addEventListener("click", async () => {
    showError(null);
    const button = byId("data-export");
    const status = byId("data-status");
    const file = byId("data-file");
    button.disabled = true;
    file.replaceChildren();
    try {
      const started = await api("POST", "/api/users/me/export/");
      const job = await followJob(started.job_id, (j) => { status.textContent = "Export: " + jobStatus(j); });
      if (job.status === "succeeded" && job.result && job.result.download_url) {
        status.textContent = "Your export is ready.";
        file.append(el("a", { href: job.result.download_url, id: "data-download", download: "",
          text: "Download " + (job.result.file_name || "the export") }));
        if (job.result.expires_at) file.append(" (until " + when(job.result.expires_at) + ")");
      } else {
        status.textContent = "The export did not finish: " + (job.error || job.status) + ".";
      }
    } catch (err) { showError(err); }
    button.disabled = false;
  });

  // The public page of a link (the API's `url` is the snapshot's JSON).
  const sharedPage = (s) => window.location.origin + "/shared/" + encodeURIComponent(s.share_id);

  async function loadShares() {
    const data = await api("GET", "/api/llm/shares/?limit=100");
    const body = byId("shares-body");
    body.replaceChildren();
    for (const s of data.items) {
      const expired = s.expires_at && new Date(s.expires_at).getTime() <= Date.now();
      const row = el("tr", {}, [
        el("td", { text: s.title || "Untitled" }),
        el("td", {}, [el("a", { href: sharedPage(s), rel: "noopener noreferrer", target: "_blank", text: "Open" })]),
        el("td", { text: when(s.created_at) }),
        el("td", { text: s.expires_at ? (expired ? "expired " : "") + when(s.expires_at) : "never" }),
        el("td", {}, [el("button", { type: "button", text: "Revoke", class: "revoke",
          "aria-label": "Revoke the link to " + (s.title || "Untitled"), onclick: async () => {
            showError(null);
            try {
              await api("DELETE", "/api/llm/shares/" + encodeURIComponent(s.id) + "/");
              notice("The link was revoked.");
            } catch (err) { showError(err); }
            loadShares().catch(showError);
          } })]),
      ]);
      row.dataset.shareId = s.share_id;
      body.append(row);
    }
    byId("shares-empty").textContent = data.items.length ? "" : "You have not shared a conversation.";
  }

  Promise.all([loadProfile(), loadSessions(), loadMfa(), loadActivity(), loadIdentities(), loadShares()])
    .catch(showError);
})();
