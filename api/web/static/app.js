// Parley's shared page code: the CSRF token, JSON calls with the session cookie, following
// a job to its end, and signing the page out when its session ends. No inline script:
// every page loads files.
"use strict";

window.Parley = (function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";
  document.querySelectorAll("input[data-csrf]").forEach((i) => { i.value = csrf; });

  // A JSON call. State-changing methods repeat the CSRF token; a 401 means the session
  // ended (signed out elsewhere, deactivated): the page goes to the sign-in page.
  async function api(method, url, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(url, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401 && document.body.dataset.signedIn) {
      window.location.assign("/signin");
      throw new Error("signed out");
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) {
      const message = data && data.error ? data.error.message : "request failed (" + res.status + ")";
      const err = new Error(message);
      err.status = res.status;
      err.data = data;
      throw err;
    }
    return data;
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children || []) node.append(c);
    return node;
  }

  function showError(err) {
    const box = document.getElementById("error");
    if (box) box.textContent = err ? (err.message || String(err)) : "";
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString();
  }

  function age(iso) {
    if (!iso) return "";
    const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    return Math.round(s / 3600) + " h";
  }

  // Inline Markdown (code, bold, italics, links) as DOM nodes: text is never parsed as HTML.
  function inline(text, parent) {
    const re = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*)|(\[[^\]\n]+\]\((https?:\/\/[^)\s]+)\))/;
    let rest = text;
    while (rest.length) {
      const m = re.exec(rest);
      if (!m) { parent.append(rest); break; }
      if (m.index > 0) parent.append(rest.slice(0, m.index));
      const tok = m[0];
      if (m[1]) parent.append(el("code", { text: tok.slice(1, -1) }));
      else if (m[2]) parent.append(el("strong", { text: tok.slice(2, -2) }));
      else if (m[3]) parent.append(el("em", { text: tok.slice(1, -1) }));
      else parent.append(el("a", { href: m[5], rel: "noopener noreferrer nofollow", target: "_blank", text: tok.slice(1, tok.indexOf("](")) }));
      rest = rest.slice(m.index + tok.length);
    }
  }

  // Markdown to DOM: fenced code blocks, headings, lists, paragraphs. Every piece of text
  // goes in as a text node, so model output cannot inject markup.
  function markdown(source, target) {
    target.replaceChildren();
    const parts = source.split(/^```/m);
    parts.forEach((part, i) => {
      if (i % 2 === 1) {
        const nl = part.indexOf("\n");
        const lang = nl >= 0 ? part.slice(0, nl).trim() : "";
        const code = nl >= 0 ? part.slice(nl + 1) : part;
        const c = el("code", { text: code.replace(/\n$/, "") });
        if (lang) c.dataset.lang = lang;
        target.append(el("pre", {}, [c]));
        return;
      }
      let list = null;
      for (const block of part.split(/\n{2,}/)) {
        if (!block.trim()) continue;
        const lines = block.split("\n");
        if (lines.every((l) => /^\s*([-*]|\d+\.)\s+/.test(l) || !l.trim())) {
          list = el(/^\s*\d+\./.test(lines[0]) ? "ol" : "ul");
          for (const l of lines) {
            if (!l.trim()) continue;
            const li = el("li");
            inline(l.replace(/^\s*([-*]|\d+\.)\s+/, ""), li);
            list.append(li);
          }
          target.append(list);
          continue;
        }
        const h = /^(#{1,4})\s+(.*)$/.exec(lines[0]);
        if (h && lines.length === 1) {
          const node = el("h" + (h[1].length + 2));
          inline(h[2], node);
          target.append(node);
          continue;
        }
        const p = el("p");
        lines.forEach((l, j) => { if (j) p.append(el("br")); inline(l, p); });
        target.append(p);
      }
    });
  }

  // Follows job `id` until it ends: polls its record (an export's file may take a while;
  // a poll needs no open connection), telling `onUpdate` each time. Resolves with the
  // final record; rejects when the job cannot be read.
  const FINAL = ["succeeded", "failed", "cancelled"];
  async function followJob(id, onUpdate) {
    for (;;) {
      const job = await api("GET", "/api/jobs/" + encodeURIComponent(id) + "/");
      if (onUpdate) onUpdate(job);
      if (FINAL.includes(job.status)) return job;
      await new Promise((resolve) => setTimeout(resolve, 700));
    }
  }

  // A job's status in words, with its progress when it reports one.
  function jobStatus(job) {
    const p = job.progress;
    const done = p && typeof p.done === "number" && typeof p.total === "number" && p.total > 0
      ? " (" + p.done + " of " + p.total + ")" : "";
    return job.status + done;
  }

  // A signed-in page notices at once when its session ends (deactivated, signed out
  // elsewhere): it checks every few seconds and then goes to the sign-in page.
  if (document.body.dataset.signedIn) {
    setInterval(() => { api("GET", "/api/users/me/").catch(() => {}); }, 3000);
  }

  return { api, el, csrf, showError, when, age, markdown, followJob, jobStatus };
})();
