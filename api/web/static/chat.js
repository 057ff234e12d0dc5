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

  // Each keystroke in the filters reloads the list: only the latest answer is shown.
  let listRequest = 0;
  async function loadSessions() {
    const ticket = ++listRequest;
    const search = byId("session-search").value.trim();
    const tag = byId("tag-filter").value.trim();
    let q = "?limit=100";
    if (search) q += "&search=" + encodeURIComponent(search);
    if (tag) q += "&tag=" + encodeURIComponent(tag);
    try {
      const page = await api("GET", "/api/llm/sessions/" + q);
      if (ticket !== listRequest) return;
      list.replaceChildren();
      for (const s of page.items) {
        const label = (s.title || "Untitled") + (s.tags.length ? " · " + s.tags.join(", ") : "");
        const button = el("button", { type: "button", class: "session-link", text: label,
          "aria-current": s.id === current ? "page" : null, onclick: () => openSession(s.id) });
        button.dataset.sessionId = s.id;
        if (s.id === current) title.textContent = s.title || "Untitled";
        list.append(el("li", {}, [button]));
      }
    } catch (err) { showError(err); }
  }

  function sessionActions(shown) {
    for (const id of ["rename", "tags", "export-md", "export-json", "share", "delete"]) byId(id).hidden = !shown;
    byId("share-box").hidden = true;
  }

  // A public read-only link to the open conversation, up to its latest complete message.
  async function share() {
    if (!current) return;
    showError(null);
    try {
      const link = await api("POST", "/api/llm/sessions/" + encodeURIComponent(current) + "/share/", {});
      // The API's `url` is the snapshot's JSON; people get its page.
      const url = window.location.origin + "/shared/" + encodeURIComponent(link.share_id);
      byId("share-url").value = url;
      byId("share-open").href = url;
      byId("share-copy").textContent = "Copy link";
      byId("share-box").hidden = false;
      byId("share-url").focus();
      byId("share-url").select();
    } catch (err) { showError(err); }
  }

  function showTags(tags) {
    byId("chat-tags").textContent = tags && tags.length ? "Tags: " + tags.join(", ") : "";
  }

  // Offers `text` as a file download, made in the page (nothing leaves the browser).
  function download(name, type, text) {
    const link = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name, id: "download-link" });
    link.hidden = true;
    byId("download-link")?.remove();
    document.body.append(link);
    link.click();
  }

  async function exportSession(format) {
    if (!current) return;
    try {
      const page = await api("GET", "/api/llm/messages/?limit=100&session_id=" + encodeURIComponent(current));
      const name = (title.textContent || "conversation").replace(/[^\w.-]+/g, "_").slice(0, 60);
      if (format === "json") {
        download(name + ".json", "application/json", JSON.stringify({ title: title.textContent, messages: page.items }, null, 2));
      } else {
        const parts = ["# " + title.textContent];
        for (const m of page.items) parts.push("**" + (m.role === "user" ? "You" : "Assistant") + "**\n\n" + m.content);
        download(name + ".md", "text/markdown", parts.join("\n\n") + "\n");
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

  function copyButton(b) {
    const button = el("button", { type: "button", class: "copy", text: "Copy", "aria-label": "Copy this reply",
      onclick: async () => {
        try { await navigator.clipboard.writeText(b.body.innerText); button.textContent = "Copied"; }
        catch (_) { button.textContent = "Copy failed"; }
      } });
    b.item.append(button);
  }

  function renderMessage(m) {
    const b = bubble(m.role, m.status);
    if (m.role === "assistant") copyButton(b);
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
      sessionActions(true);
      showTags(session.tags);
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
    sessionActions(false);
    showTags([]);
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
      // A new session's title is written by a job after the first reply: look again shortly.
      if (status === "complete") for (const ms of [1500, 4000]) setTimeout(loadSessions, ms);
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
        sessionActions(true);
        showTags([]);
        title.textContent = "Untitled";
      }
      const u = bubble("user");
      u.body.textContent = text;
      const reply = bubble("assistant", "pending");
      copyButton(reply);
      follow(res.job_id, reply);
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
  byId("share").addEventListener("click", share);
  byId("share-close").addEventListener("click", () => { byId("share-box").hidden = true; byId("share").focus(); });
  byId("share-copy").addEventListener("click", async () => {
    const button = byId("share-copy");
    try { await navigator.clipboard.writeText(byId("share-url").value); button.textContent = "Copied"; }
    catch (_) { byId("share-url").select(); button.textContent = "Press Ctrl+C to copy"; }
  });
  byId("session-search").addEventListener("input", () => loadSessions());
  byId("tag-filter").addEventListener("input", () => loadSessions());
  byId("export-md").addEventListener("click", () => exportSession("markdown"));
  byId("export-json").addEventListener("click", () => exportSession("json"));
  byId("tags").addEventListener("click", async () => {
    if (!current) return;
    const text = window.prompt("Tags, separated by commas", byId("chat-tags").textContent.replace(/^Tags: /, ""));
    if (text === null) return;
    const tags = text.split(",").map((t) => t.trim()).filter(Boolean);
    try {
      const s = await api("PATCH", "/api/llm/sessions/" + encodeURIComponent(current) + "/", { tags });
      showTags(s.tags);
      loadSessions();
    } catch (err) { showError(err); }
  });
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
