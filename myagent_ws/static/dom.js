// Small helpers shared by the console modules: building elements (never from HTML strings)
// and turning protocol values into display text, including the alert box for errors.

/** The element with data-testid="id" under root. */
export const testid = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

/** createElement with properties; children may be strings (text nodes), nodes or arrays. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

// -- formatting ---------------------------------------------------------------------------

export function formatJson(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value ?? {}, null, 2);
}

export function formatDuration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

/** The local clock time of an ISO timestamp ("19:42:10"); "" when it is not one. */
export function clockTime(iso) {
  const at = iso ? Date.parse(iso) : NaN;
  if (Number.isNaN(at)) return "";
  return new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** How long until an ISO timestamp, in words ("4 min 5 s"); "" when passed or unknown. */
export function timeLeft(iso, now = Date.now()) {
  const at = iso ? Date.parse(iso) : NaN;
  const left = Math.ceil((at - now) / 1000);
  if (Number.isNaN(left) || left <= 0) return "";
  const minutes = Math.floor(left / 60);
  return minutes ? `${minutes} min ${left % 60} s` : `${left} s`;
}

export const asText = (value) => (typeof value === "string" ? value : value == null ? "" : JSON.stringify(value));
export const shortId = (id) => (id.length > 10 ? `…${id.slice(-6)}` : id);

export function alertBox(title, code, content, extra) {
  return h(
    "div",
    { class: "alert", testid: "error", role: "alert", "data-code": code || "" },
    h("div", { class: "alert-head" }, h("strong", { text: title }), code ? h("code", { class: "code-tag", text: code }) : null),
    h("div", { class: "alert-text", text: asText(content) || "No details were given." }),
    extra ? h("div", { class: "alert-extra muted small", text: extra }) : null,
  );
}

export function errorDetails(event) {
  const meta = event.metadata || {};
  const parts = [];
  if (meta.path) parts.push(`at ${meta.path}`);
  if (meta.reason) parts.push(meta.reason);
  return parts.join(" · ");
}
