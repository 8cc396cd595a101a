// The web console page: wires its fixed parts (connection status, agent picker, session
// list, global log) to MyAgentClient and keeps the app state: agents, session views and
// which one is shown. A session is drawn by session-view.js (its turns by turn-view.js),
// the tool-call approval dialog by confirm-dialog.js. The open sessions are kept in
// sessionStorage (session-store.js), so a reload, or a tab opened from this one, re-attaches
// them and rebuilds their transcripts from the server's replay. With no session yet, the
// first message typed starts one (see "quick start"). On a server with auth the page asks
// for a token first (see "sign-in" below). Agent text only ever reaches the page as text
// nodes or through markdown.js.

import { MyAgentClient } from "./myagent-client.js";
import { ConfirmDialog } from "./confirm-dialog.js";
import { alertBox, asText, errorDetails, h, shortId, testid } from "./dom.js";
import { SessionView } from "./session-view.js";
import { loadSessions, saveSessions } from "./session-store.js";

const initial = JSON.parse(document.getElementById("console-data").textContent);
const ui = {
  conn: testid("conn-state"),
  connLabel: testid("conn-label"),
  retry: testid("retry"),
  connectionId: testid("connection-id"),
  agentForm: testid("agent-form"),
  agentList: testid("agent-list"),
  start: testid("start-session"),
  quickForm: testid("start-form"),
  quickInput: testid("start-composer"),
  quickHint: testid("start-hint"),
  sessionList: testid("session-list"),
  noSessions: testid("no-sessions"),
  globalLog: testid("global-log"),
  empty: testid("empty-state"),
  panels: testid("panels"),
  dialog: testid("confirm-dialog"),
  // Only on a server with auth:
  auth: testid("auth-panel"),
  authForm: testid("auth-form"),
  authToken: testid("auth-token"),
  authError: testid("auth-error"),
  signOut: testid("sign-out"),
};

const agents = new Map((initial.agents || []).map((agent) => [agent.name, agent]));
const views = new Map(); // session id -> SessionView
let activeId = null;
let starting = false;

const authRequired = initial.auth_required === true;
// No acks: the server then keeps a session's events up to its replay bounds, so a reload
// or a second tab can rebuild whole transcripts (what the bounds drop is said as a gap).
// With auth, client.token is set once the page has one.
const client = new MyAgentClient({ ack: false });
window.myagentConsole = { client, views };

const connected = () => client.state === "connected";

// -- global log (connection-level errors and notices) ---------------------------------------

function logGlobal(kind, title, code, content, extra) {
  const close = h("button", { type: "button", class: "icon-button", "aria-label": "Dismiss", text: "×" });
  const item =
    kind === "error"
      ? alertBox(title, code, content, extra)
      : h("div", { class: "note", testid: "notice" }, h("span", { text: asText(content) }));
  item.classList.add("global-item");
  item.prepend(close);
  close.addEventListener("click", () => item.remove());
  ui.globalLog.prepend(item);
  while (ui.globalLog.children.length > 4) ui.globalLog.lastChild.remove();
  if (kind !== "error") setTimeout(() => item.remove(), 10000);
}

// -- agents ------------------------------------------------------------------------------

function selectedAgent() {
  return ui.agentList.querySelector("input[name=agent]:checked")?.value ?? null;
}

function renderAgents() {
  const selected = selectedAgent();
  const cards = [...agents.values()].map((agent) =>
    h(
      "label",
      { class: "agent-card", "data-agent": agent.name },
      h("input", { type: "radio", name: "agent", value: agent.name, testid: "agent-option" }),
      h("span", { class: "agent-name", text: agent.name }),
      agent.description ? h("span", { class: "agent-desc", text: agent.description }) : null,
      agent.tools?.length ? h("span", { class: "chips" }, agent.tools.map((t) => h("span", { class: "chip", text: t }))) : null,
    ),
  );
  ui.agentList.replaceChildren(...(cards.length ? cards : [h("p", { class: "muted", text: "No agents are served." })]));
  const inputs = [...ui.agentList.querySelectorAll("input[name=agent]")];
  const keep = inputs.find((input) => input.value === selected) || inputs[0];
  if (keep) keep.checked = true;
  updateControls();
}

function updateAgents(list) {
  if (!Array.isArray(list)) return;
  agents.clear();
  for (const agent of list) {
    if (agent && typeof agent.name === "string") agents.set(agent.name, agent);
  }
  renderAgents();
}

function agentNamesChanged(names) {
  if (!Array.isArray(names)) return;
  const same = names.length === agents.size && names.every((name) => agents.has(name));
  if (same) return;
  const old = new Map(agents);
  agents.clear();
  for (const name of names) agents.set(name, old.get(name) || { name, description: "", tools: [] });
  renderAgents();
}

// -- connection state ----------------------------------------------------------------------

let retryDeadline = 0;
let retryTicker = null;

function showState({ state, delayMs, attempt }) {
  ui.conn.dataset.state = state;
  clearInterval(retryTicker);
  retryTicker = null;
  const labels = {
    idle: "Connecting…",
    connecting: "Connecting…",
    connected: "Connected",
    offline: "Offline",
    unauthorized: "Token needed",
  };
  ui.connLabel.textContent = labels[state] || "Reconnecting…";
  ui.retry.hidden = !(state === "reconnecting" || state === "offline");
  if (state === "reconnecting" && typeof delayMs === "number") {
    // The client waits delayMs before its next attempt: count down to it.
    retryDeadline = Date.now() + delayMs;
    const tick = () => {
      const left = Math.max(0, Math.ceil((retryDeadline - Date.now()) / 1000));
      ui.connLabel.textContent =
        left > 0 ? `Reconnecting… retrying in ${left} s (attempt ${attempt})` : `Reconnecting… trying now (attempt ${attempt})`;
      if (!left) clearInterval(retryTicker);
    };
    tick();
    retryTicker = setInterval(tick, 250);
  }
  if (state !== "connected") ui.connectionId.textContent = "";
  updateControls();
}

function onConnected(event) {
  const meta = event.metadata || {};
  ui.connectionId.textContent = meta.connection_id ? ` · ${meta.connection_id}` : "";
  agentNamesChanged(meta.agents);
  client.listAgents().then(updateAgents, () => {});
  if (quickText !== null) quickStart(); // typed before the connection was up
}

function updateControls() {
  ui.start.disabled = !connected() || starting || !selectedAgent();
  updateQuickStart();
  for (const view of views.values()) view.updateControls();
}

// -- sessions ------------------------------------------------------------------------------

const confirms = new ConfirmDialog(ui.dialog, { log: logGlobal });

/** What each SessionView gets from the page. */
const app = {
  client,
  confirms,
  connected,
  log: logGlobal,
  isActive: (id) => activeId === id,
  activate,
  remove: removeView,
  mount(view) {
    ui.sessionList.append(view.tab);
    ui.panels.append(view.panel);
  },
};

function ensureView(id, agentName, options) {
  let view = views.get(id);
  if (!view) {
    view = new SessionView(id, agentName, app, options);
    views.set(id, view);
    ui.noSessions.hidden = true;
    persist();
  }
  return view;
}

// -- quick start: the first message starts a session ---------------------------------------

// What was typed before the connection was up; sent once it is (null: nothing waits).
let quickText = null;

/** The first message goes to the agent picked on the left, which starts out as the
 * server's default agent. */
function updateQuickStart() {
  const name = selectedAgent();
  ui.quickInput.disabled = !name;
  ui.quickInput.placeholder = name ? `Message ${name}…` : "No agents are served.";
  ui.quickInput.setAttribute("aria-label", name ? `First message to ${name}` : "First message");
  ui.quickHint.textContent =
    quickText !== null
      ? "Sends as soon as the connection is up…"
      : name
        ? `Enter starts a session with ${name} and sends · Shift+Enter adds a line`
        : "";
}

/** Starts a session with the picked agent and sends the typed text as its first turn. */
async function quickStart() {
  const text = quickText ?? ui.quickInput.value;
  const name = selectedAgent();
  if (!text.trim() || !name || starting) return;
  if (!connected()) {
    quickText = text; // onConnected() comes back here
    updateQuickStart();
    return;
  }
  quickText = null;
  // The server's default agent is asked for by no name, as any client would.
  const view = await startSession(name, { byName: name !== initial.default_agent });
  if (view?.sendText(text) && ui.quickInput.value === text) ui.quickInput.value = "";
}

/** A new session of `name` (asked for by no name when not `byName`), shown and active;
 * null when it could not start (what went wrong is logged). */
async function startSession(name, { byName = true } = {}) {
  starting = true;
  updateControls();
  try {
    const id = await client.createSession(byName ? name : undefined);
    const view = ensureView(id, name);
    activate(id);
    return view;
  } catch (error) {
    // A system.error is already shown by the event handler; say what else went wrong.
    if (!error.event) logGlobal("error", "Could not start a session", error.code, error.message);
    return null;
  } finally {
    starting = false;
    updateControls();
  }
}

function activate(id) {
  activeId = id;
  persist();
  for (const view of views.values()) {
    const on = view.id === id;
    view.panel.hidden = !on;
    view.tabButton.setAttribute("aria-selected", String(on));
    if (on) delete view.tabButton.dataset.unread;
  }
  ui.empty.hidden = views.has(id);
  const view = views.get(id);
  if (view && !view.input.disabled) view.input.focus();
}

function removeView(view) {
  views.delete(view.id);
  view.tab.remove();
  view.panel.remove();
  if (activeId === view.id) {
    activeId = null;
    const next = [...views.keys()].pop();
    if (next) activate(next);
    else ui.empty.hidden = false;
  }
  ui.noSessions.hidden = views.size > 0;
  persist();
}

// -- kept across a reload ---------------------------------------------------------------------

// Sessions the previous page had open, not yet heard from since this page connected: each
// gets its view at its first event (the replay), or is forgotten if the server no longer
// has it. Until then they stay kept, in case the page reloads again meanwhile.
const saved = loadSessions();
const restoring = new Map(saved.sessions.map((s) => [s.id, s]));
// A reload, or a page opened with this tab's sessionStorage (window.open, Duplicate).
const restoredAs = performance.getEntriesByType?.("navigation")[0]?.type === "reload" ? "reload" : "open";

// lastSeq changes with every event: it is written at most once a second, and at pagehide.
let persistTimer = null;
function persistSoon() {
  persistTimer ??= setTimeout(persist, 1000);
}

/** Keeps the open sessions (id, agent, the highest seq shown) and the shown one. */
function persist() {
  clearTimeout(persistTimer);
  persistTimer = null;
  const open = [...views.values()]
    .filter((view) => !view.ended)
    .map((view) => ({ id: view.id, agent: view.agent, lastSeq: Math.max(view.knownSeq, client.lastSeq(view.id)) }));
  saveSessions([...open, ...restoring.values()], activeId ?? saved.active);
}

/** The view of a kept session, made at its first event after the reload; null if gone. */
function restoreView(event) {
  const kept = restoring.get(event.session_id);
  restoring.delete(event.session_id);
  if (event.event === "system.error" && event.metadata?.code === "session_not_found") {
    const name = kept.agent ? `${kept.agent} session` : "Session";
    logGlobal("notice", "", "", `${name} ${shortId(kept.id)} is no longer on the server (it ended or expired).`);
    persist();
    return null;
  }
  const options = { restored: restoredAs, knownSeq: kept.lastSeq };
  const view = ensureView(kept.id, kept.agent ?? event.content?.agent, options);
  if (!activeId || kept.id === saved.active) activate(kept.id);
  return view;
}

// Re-attach from seq 0: the reloaded page has no transcript, so the server replays all it
// still buffers, then sends agent.session_resumed and asks again what still waits. The kept
// lastSeq says which of those events the page had shown before.
for (const kept of saved.sessions) client.attach(kept.id, { agent: kept.agent, knownSeq: kept.lastSeq });

// -- sign-in (servers with auth) ----------------------------------------------------------------

// The token is kept in sessionStorage: this tab only, gone when it closes, never in a URL or
// in localStorage. The client trades it for a single-use ticket before every connection.
const TOKEN_KEY = "myagent-console.token.v1";

function keptToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || null;
  } catch {
    return null; // storage blocked: the page asks on every load
  }
}

function keepToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage blocked: this page still connects, a reload asks again.
  }
}

/** Shows the token form, with why it is shown again (a refused token), if it is. */
function askForToken(why) {
  client.token = null;
  ui.auth.hidden = false;
  ui.signOut.hidden = true;
  ui.authError.replaceChildren(
    ...(why ? [h("strong", { text: "The server did not accept this token. " }), h("span", { text: why })] : []),
  );
  ui.authError.hidden = !why;
  ui.authToken.value = "";
  showState({ state: "unauthorized" });
  ui.authToken.focus();
}

function signIn(token) {
  keepToken(token);
  client.token = token;
  ui.auth.hidden = true;
  ui.signOut.hidden = false;
  client.connect().catch(() => {}); // a refused token comes back as state "unauthorized"
}

if (authRequired) {
  ui.authForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const token = ui.authToken.value.trim();
    if (token) signIn(token);
  });
  client.on("state", ({ state, error }) => {
    if (state !== "unauthorized") return;
    keepToken(null);
    askForToken(error?.message || "");
  });
  // Signing out forgets the token and the sessions it opened (they are its principal's),
  // and starts the page afresh.
  ui.signOut.addEventListener("click", () => {
    client.close();
    keepToken(null);
    restoring.clear();
    views.clear(); // so that pagehide's persist() keeps nothing either
    saveSessions([], null);
    location.reload();
  });
}

// -- wiring ------------------------------------------------------------------------------------

client.on("state", showState);
client.on("event", (event) => {
  const sid = event.session_id;
  // A kept session's first event (its replay) makes its view; one the server no longer has
  // is dropped.
  if (restoring.has(sid) && !restoreView(event)) return;
  switch (event.event) {
    case "system.connected":
      onConnected(event);
      return;
    case "system.agents":
      updateAgents(event.content);
      return;
    case "system.heartbeat":
      return;
    case "agent.session_created":
      ensureView(sid, event.content?.agent ?? event.metadata?.agent);
      break;
    default:
  }
  const view = sid ? views.get(sid) : null;
  if (view) {
    const ended = view.ended;
    view.handle(event);
    if (view.ended !== ended) persist(); // a reload need not re-attach it
    else persistSoon(); // its lastSeq moved
  } else if (event.event === "system.error") {
    const meta = event.metadata || {};
    logGlobal("error", "The server refused a request", meta.code, event.content, errorDetails(event));
  } else if (event.event === "system.notice") {
    logGlobal("notice", "", "", event.content);
  }
});

// The end of this page's own replay of a session (not another tab's re-attach).
client.on("resumed", (event) => views.get(event.session_id)?.resumed(event));

ui.agentForm.addEventListener("change", updateControls);
ui.quickInput.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    quickStart();
  }
});
ui.quickForm.addEventListener("submit", (e) => {
  e.preventDefault();
  quickStart();
});
ui.agentList.addEventListener("dblclick", (e) => {
  if (e.target.closest(".agent-card") && !ui.start.disabled) ui.agentForm.requestSubmit();
});
ui.agentForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = selectedAgent();
  if (name && !starting) await startSession(name);
});
const mayConnect = () => !authRequired || !!client.token;
ui.retry.addEventListener("click", () => {
  if (client.state === "offline" && mayConnect()) client.connect().catch(() => {});
  else client.retryNow();
});
// Leaving the page keeps each session's lastSeq and closes the socket (the server keeps the
// sessions for a while); coming back from the back/forward cache re-attaches them.
window.addEventListener("pagehide", () => {
  persist();
  client.close();
});
window.addEventListener("pageshow", (e) => {
  if (e.persisted && mayConnect()) client.connect().catch(() => {});
});

renderAgents();
if (!authRequired) client.connect().catch(() => {});
else if (keptToken()) signIn(keptToken()); // a reload of this tab: no need to ask again
else askForToken();
