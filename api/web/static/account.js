// The account page: profile, password, sessions with "end", two-factor setup, activity.
"use strict";

(function () {
  const { api, el, showError, when } = window.Parley;
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

  Promise.all([loadProfile(), loadSessions(), loadMfa(), loadActivity(), loadIdentities()]).catch(showError);
})();
