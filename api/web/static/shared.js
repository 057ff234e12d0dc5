// The public page of a shared conversation (`/shared/{share_id}`): reads its snapshot from
// `GET /api/shared/{share_id}/`, no sign-in needed. The title and the user's messages go in
// as text, the replies as Markdown built from text nodes, so nothing in them is markup.
"use strict";

(function () {
  const { api, el, showError, when, markdown } = window.Parley;
  const byId = (id) => document.getElementById(id);
  const token = decodeURIComponent(window.location.pathname.split("/")[2] || "");
  let cursor = null;

  async function load(more) {
    let url = "/api/shared/" + encodeURIComponent(token) + "/?limit=100";
    if (more && cursor) url += "&cursor=" + encodeURIComponent(cursor);
    try {
      const snap = await api("GET", url);
      byId("shared-title").textContent = snap.title || "Untitled";
      document.title = (snap.title || "Untitled") + " · Parley";
      byId("shared-when").textContent = "Shared " + when(snap.shared_at) + ".";
      const list = byId("messages");
      for (const m of snap.items) {
        const body = el("div", { class: "body" });
        if (m.role === "user") body.textContent = m.content;
        else markdown(m.content || "", body);
        list.append(el("li", { class: "msg " + m.role }, [
          el("span", { class: "role", text: (m.role === "user" ? "User" : "Assistant") + " · " + when(m.created_at) }),
          body]));
      }
      cursor = snap.next_cursor;
      byId("shared-more").hidden = !cursor;
    } catch (err) {
      if (err.status === 404) {
        byId("shared-title").textContent = "This link does not work";
        showError(new Error("It was revoked, it expired, or it never existed."));
      } else showError(err);
    }
  }

  byId("shared-more").addEventListener("click", () => load(true));
  load(false);
})();
