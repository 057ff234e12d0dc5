// The chat page: sessions in the sidebar, the conversation, and the reply streamed from the
// job's event stream. A reload (or a dropped connection) resumes without repeating text:
// the stream is read again from its first event into an empty bubble, and EventSource's own
// reconnects send Last-Event-ID so the server continues after the last event seen.
"use strict";

(function () {
  const { api, el, showError, markdown } = window.Parley;
  const byId = (id) => document.getElementById(id);
  const list = byId("sessions");
  const messages = byId("messages");
  const title = byId("chat-title");
  const form = byId("composer");
  const input = byId("message");
  const stopButton = byId("stop");
  const sendButton = byId("send");
  const modelPicker = byId("model");
  let current = null;   // the open session's id
  let streaming = null; // { jobId, source }

  function sessionFromUrl() {
    return new URLSearchParams(window.location.search).get("session");
  }

  async function loadModels() {
    try {
      const page = await api("GET", "/api/llm/models/");
      modelPicker.replaceChildren();
      for (const m of page.items) {
        const option = el("option", { value: m.id, text: m.name + " (" + m.model + ")" });
        if (m.is_default) option.selected = true;
        modelPicker.append(option);
      }
    } catch (err) { showError(err); }
  }

  async function loadSessions() {
    const search = byId("session-search").value.trim();
    const q = search ? "?limit=100&search=" + encodeURIComponent(search) : "?limit=100";
    try {
      const page = await api("GET", "/api/llm/sessions/" + q);
      list.replaceChildren();
      for (const s of page.items) {
        const button = el("button", { type: "button", class: "session-link", text: s.title || "Untitled",
          "aria-current": s.id === current ? "page" : null, onclick: () => openSession(s.id) });
        button.dataset.sessionId = s.id;
        if (s.id === current) title.textContent = s.title || "Untitled";
        list.append(el("li", {}, [button]));
      }
    } catch (err) { showError(err); }
  }

  function bubble(role, status) {
    const body = el("div", { class: "body" });
    const item = el("li", { class: "msg " + role }, [el("span", { class: "role", text: role === "user" ? "You" : "Assistant" }), body]);
    item.dataset.status = status || "complete";
    messages.append(item);
    return { item, body };
  }

  function renderMessage(m) {
    const b = bubble(m.role, m.status);
    if (m.role === "user") b.body.textContent = m.content;
    else markdown(m.content || "", b.body);
    if (m.role === "assistant" && (m.status === "pending" || m.status === "streaming") && m.job_id) {
      follow(m.job_id, b);
    } else if (m.status === "failed" || m.status === "cancelled") {
      b.item.append(el("p", { class: "note", text: m.status === "failed" ? "The reply failed." : "Stopped." }));
    }
  }

  async function openSession(id) {
    stopFollowing();
    current = id;
    history.replaceState(null, "", "/chat?session=" + encodeURIComponent(id));
    messages.replaceChildren();
    showError(null);
    try {
      const session = await api("GET", "/api/llm/sessions/" + encodeURIComponent(id) + "/");
      title.textContent = session.title || "Untitled";
      byId("rename").hidden = false;
      byId("delete").hidden = false;
      const page = await api("GET", "/api/llm/messages/?limit=100&session_id=" + encodeURIComponent(id));
      page.items.forEach(renderMessage);
      loadSessions();
    } catch (err) { showError(err); }
  }

  function newChat() {
    stopFollowing();
    current = null;
    history.replaceState(null, "", "/chat");
    messages.replaceChildren();
    title.textContent = "New chat";
    byId("rename").hidden = true;
    byId("delete").hidden = true;
    input.focus();
  }

  function stopFollowing() {
    if (streaming) streaming.source.close();
    streaming = null;
    stopButton.hidden = true;
    sendButton.disabled = false;
  }

  // Follows job `jobId` into bubble `b`, from its first event.
  function follow(jobId, b) {
    stopFollowing();
    let text = "";
    const source = new EventSource("/api/jobs/" + encodeURIComponent(jobId) + "/events/");
    streaming = { jobId, source };
    stopButton.hidden = false;
    sendButton.disabled = true;
    b.item.dataset.status = "streaming";
    const show = () => markdown(text, b.body);
    const end = (status, note) => {
      source.close();
      if (streaming && streaming.source === source) stopFollowing();
      b.item.dataset.status = status;
      if (note) b.item.append(el("p", { class: "note", text: note }));
      loadSessions();
    };
    source.addEventListener("delta", (e) => { text += JSON.parse(e.data).text || ""; show(); });
    source.addEventListener("status", (e) => {
      const status = JSON.parse(e.data).status;
      if (status === "restarted") { text = ""; show(); }
      if (status === "cancelled") end("cancelled", "Stopped.");
    });
    source.addEventListener("done", () => end("complete"));
    source.addEventListener("error", (e) => {
      if (e.data) {
        let message = "The reply failed.";
        try { message = JSON.parse(e.data).error || message; } catch (_) { /* keep the default */ }
        end("failed", message);
      } else if (source.readyState === EventSource.CLOSED) {
        end("failed", "The connection to the server was lost.");
      }
      // Otherwise the browser reconnects by itself with Last-Event-ID.
    });
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim() || streaming) return;
    showError(null);
    const body = { message: text };
    if (current) body.session_id = current;
    if (modelPicker.value) body.config_id = modelPicker.value;
    sendButton.disabled = true;
    try {
      const res = await api("POST", "/api/llm/chat/", body);
      input.value = "";
      if (current !== res.session_id) {
        current = res.session_id;
        history.replaceState(null, "", "/chat?session=" + encodeURIComponent(current));
        byId("rename").hidden = false;
        byId("delete").hidden = false;
        title.textContent = "Untitled";
      }
      const u = bubble("user");
      u.body.textContent = text;
      follow(res.job_id, bubble("assistant", "pending"));
      loadSessions();
    } catch (err) {
      sendButton.disabled = false;
      showError(err);
    }
  });

  // Enter sends, Shift+Enter breaks the line.
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });

  stopButton.addEventListener("click", async () => {
    if (!streaming) return;
    try { await api("POST", "/api/jobs/" + encodeURIComponent(streaming.jobId) + "/cancel/"); }
    catch (err) { showError(err); }
  });

  byId("new-chat").addEventListener("click", newChat);
  byId("session-search").addEventListener("input", () => loadSessions());
  byId("rename").addEventListener("click", async () => {
    const name = window.prompt("New title", title.textContent);
    if (!name || !current) return;
    try {
      const s = await api("PATCH", "/api/llm/sessions/" + encodeURIComponent(current) + "/", { title: name });
      title.textContent = s.title;
      loadSessions();
    } catch (err) { showError(err); }
  });
  byId("delete").addEventListener("click", async () => {
    if (!current || !window.confirm("Delete this conversation?")) return;
    try {
      await api("DELETE", "/api/llm/sessions/" + encodeURIComponent(current) + "/");
      newChat();
      loadSessions();
    } catch (err) { showError(err); }
  });

  loadModels();
  loadSessions();
  const initial = sessionFromUrl();
  if (initial) openSession(initial);
})();
