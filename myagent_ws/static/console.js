// The web console: agents, sessions and live turns on top of MyAgentClient.
// Agent text only ever reaches the page as text nodes or through markdown.js.

import { MyAgentClient, TERMINAL_EVENTS } from "./myagent-client.js";
import { renderMarkdown } from "./markdown.js";

const TERMINAL = new Set(TERMINAL_EVENTS);
const testid = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

/** createElement with properties; children may be strings (text nodes), nodes or arrays. */
function h(tag, props = {}, ...children) {
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

const initial = JSON.parse(document.getElementById("console-data").textContent);
const ui = {
  conn: testid("conn-state"),
  connLabel: testid("conn-label"),
  retry: testid("retry"),
  connectionId: testid("connection-id"),
  agentForm: testid("agent-form"),
  agentList: testid("agent-list"),
  start: testid("start-session"),
  sessionList: testid("session-list"),
  noSessions: testid("no-sessions"),
  globalLog: testid("global-log"),
  empty: testid("empty-state"),
  panels: testid("panels"),
  dialog: testid("confirm-dialog"),
};

const agents = new Map((initial.agents || []).map((agent) => [agent.name, agent]));
const views = new Map(); // session id -> SessionView
let activeId = null;
let starting = false;

const token = new URLSearchParams(location.search).get("token") || undefined;
const client = new MyAgentClient({ token });
window.myagentConsole = { client, views };

const connected = () => client.state === "connected";

// -- formatting ---------------------------------------------------------------------------

function formatJson(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value ?? {}, null, 2);
}

function formatDuration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

const asText = (value) => (typeof value === "string" ? value : value == null ? "" : JSON.stringify(value));
const shortId = (id) => (id.length > 10 ? `…${id.slice(-6)}` : id);

function alertBox(title, code, content, extra) {
  return h(
    "div",
    { class: "alert", testid: "error", role: "alert", "data-code": code || "" },
    h("div", { class: "alert-head" }, h("strong", { text: title }), code ? h("code", { class: "code-tag", text: code }) : null),
    h("div", { class: "alert-text", text: asText(content) || "No details were given." }),
    extra ? h("div", { class: "alert-extra muted small", text: extra }) : null,
  );
}

function errorDetails(event) {
  const meta = event.metadata || {};
  const parts = [];
  if (meta.path) parts.push(`at ${meta.path}`);
  if (meta.reason) parts.push(meta.reason);
  return parts.join(" · ");
}

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
  const labels = { idle: "Connecting…", connecting: "Connecting…", connected: "Connected", offline: "Offline" };
  ui.connLabel.textContent = labels[state] || "Reconnecting…";
  ui.retry.hidden = !(state === "reconnecting" || state === "offline");
  if (state === "reconnecting" && typeof delayMs === "number") {
    retryDeadline = Date.now() + delayMs;
    const tick = () => {
      const left = Math.max(0, Math.ceil((retryDeadline - Date.now()) / 1000));
      ui.connLabel.textContent = left > 0 ? `Reconnecting in ${left} s (attempt ${attempt})…` : "Reconnecting…";
    };
    tick();
    retryTicker = setInterval(tick, 500);
  }
  if (state !== "connected") ui.connectionId.textContent = "";
  updateControls();
}

function onConnected(event) {
  const meta = event.metadata || {};
  ui.connectionId.textContent = meta.connection_id ? ` · ${meta.connection_id}` : "";
  agentNamesChanged(meta.agents);
  client.listAgents().then(updateAgents, () => {});
}

function updateControls() {
  ui.start.disabled = !connected() || starting || !selectedAgent();
  for (const view of views.values()) view.updateControls();
}

// -- sessions ------------------------------------------------------------------------------

class SessionView {
  constructor(id, agentName) {
    this.id = id;
    this.agent = agentName || "agent";
    this.busy = false;
    this.ended = false;
    this.turn = null;
    this.renderPending = false;

    this.tabButton = h(
      "button",
      {
        type: "button",
        role: "tab",
        class: "session-tab",
        testid: "session-tab",
        "data-session-id": id,
        "aria-selected": "false",
        onclick: () => activate(id),
      },
      h("span", { class: "tab-dot", "aria-hidden": "true" }),
      h("span", { class: "tab-name", text: this.agent }),
      h("span", { class: "tab-id", text: shortId(id) }),
    );
    this.tab = h("li", { role: "presentation" }, this.tabButton);

    this.offlineBadge = h("span", {
      class: "badge badge-offline",
      testid: "offline-badge",
      title: "No LLM is configured: the server answers with its built-in offline model.",
      text: "offline model",
      hidden: true,
    });
    this.modelLabel = h("span", { class: "model-label muted small", testid: "model-label" });
    this.endButton = h("button", {
      type: "button",
      class: "button ghost small",
      testid: "end-session",
      text: "End session",
      onclick: () => this.endOrClose(),
    });
    this.transcript = h("div", { class: "transcript", testid: "transcript", role: "log", "aria-live": "polite" });
    this.input = h("textarea", {
      rows: 1,
      testid: "composer",
      "aria-label": `Message to ${this.agent}`,
      placeholder: `Message ${this.agent}…`,
      title: "Enter sends · Shift+Enter adds a line",
      onkeydown: (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
          e.preventDefault();
          this.submit();
        }
      },
      oninput: () => this.autosize(),
    });
    this.sendButton = h("button", { type: "submit", class: "button primary", testid: "send", text: "Send" });
    this.cancelButton = h("button", {
      type: "button",
      class: "button danger-outline",
      testid: "cancel",
      text: "Cancel",
      hidden: true,
      onclick: () => this.cancel(),
    });
    this.form = h(
      "form",
      { class: "composer", onsubmit: (e) => (e.preventDefault(), this.submit()) },
      h(
        "div",
        { class: "composer-field" },
        this.input,
        h("div", { class: "composer-hint muted", text: "Enter sends · Shift+Enter adds a line" }),
      ),
      h("div", { class: "composer-actions" }, this.cancelButton, this.sendButton),
    );
    this.panel = h(
      "section",
      { class: "panel", testid: "session-panel", "data-session-id": id, role: "tabpanel", hidden: true },
      h(
        "header",
        { class: "panel-head" },
        h("div", { class: "panel-title" }, h("h2", { text: this.agent }), this.offlineBadge, this.modelLabel),
        h("div", { class: "panel-meta" }, h("code", { class: "sid", title: "session id", text: id }), this.endButton),
      ),
      this.transcript,
      this.form,
    );
    ui.sessionList.append(this.tab);
    ui.panels.append(this.panel);
  }

  created(event) {
    const llm = event.metadata?.llm || {};
    this.offlineBadge.hidden = llm.offline !== true;
    const model = [llm.provider, llm.model].filter(Boolean).join(" · ");
    this.modelLabel.textContent = model && llm.offline !== true ? model : "";
    this.note(`Session started with ${this.agent}.`, "start");
  }

  // -- transcript helpers

  append(...nodes) {
    const t = this.transcript;
    const stick = t.scrollHeight - t.scrollTop - t.clientHeight < 120;
    t.append(...nodes);
    if (stick) t.scrollTop = t.scrollHeight;
    if (activeId !== this.id) this.tabButton.dataset.unread = "true";
  }

  scrollIfNear() {
    const t = this.transcript;
    if (t.scrollHeight - t.scrollTop - t.clientHeight < 200) t.scrollTop = t.scrollHeight;
  }

  note(text, kind = "") {
    this.append(h("div", { class: `note ${kind}`, testid: "notice", text }));
  }

  /** The running turn's view; one is made for events that arrive without a user message. */
  ensureTurn() {
    if (!this.turn) {
      const thinking = h(
        "div",
        { class: "thinking", testid: "thinking", hidden: true },
        h("span", { class: "dots", "aria-hidden": "true" }, h("i"), h("i"), h("i")),
        h("span", { class: "thinking-label", text: "Thinking…" }),
      );
      const body = h("div", { class: "agent-turn", testid: "turn" }, thinking);
      this.turn = { body, thinking, cards: new Map(), answer: null, started: true };
      this.append(body);
      this.setBusy(true);
    }
    return this.turn;
  }

  place(node) {
    const turn = this.ensureTurn();
    turn.body.insertBefore(node, turn.thinking);
    this.scrollIfNear();
    if (activeId !== this.id) this.tabButton.dataset.unread = "true";
    return node;
  }

  setBusy(busy) {
    this.busy = busy;
    this.tabButton.dataset.busy = String(busy);
    this.panel.dataset.busy = String(busy);
    this.updateControls();
  }

  updateControls() {
    const live = connected() && !this.ended;
    this.sendButton.disabled = !live || this.busy;
    this.cancelButton.hidden = !this.busy || this.ended;
    this.cancelButton.disabled = !live;
    this.input.disabled = this.ended;
    this.endButton.textContent = this.ended ? "Close" : "End session";
    this.endButton.disabled = !this.ended && !connected();
  }

  autosize() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 220)}px`;
  }

  // -- user actions

  submit() {
    const text = this.input.value;
    if (!text.trim() || this.busy || this.ended || !connected()) return;
    try {
      client.send(this.id, text);
    } catch (error) {
      logGlobal("error", "Not sent", error.code, error.message);
      return;
    }
    this.input.value = "";
    this.autosize();
    this.turn = null;
    this.append(h("div", { class: "msg-user", testid: "user-message" }, h("div", { class: "bubble", text })));
    this.ensureTurn().started = false; // until the server's first event for it
  }

  cancel() {
    try {
      client.cancel(this.id);
      this.cancelButton.disabled = true;
      this.cancelButton.textContent = "Cancelling…";
    } catch (error) {
      logGlobal("error", "Could not cancel", error.code, error.message);
    }
  }

  endOrClose() {
    if (this.ended) {
      removeView(this);
      return;
    }
    try {
      client.endSession(this.id);
      this.endButton.disabled = true;
    } catch (error) {
      logGlobal("error", "Could not end the session", error.code, error.message);
    }
  }

  // -- server events

  handle(event) {
    const meta = event.metadata || {};
    if (this.turn && event.event.startsWith("agent.")) this.turn.started = true;
    switch (event.event) {
      case "agent.thinking": {
        const turn = this.ensureTurn();
        turn.thinking.hidden = false;
        turn.thinking.lastChild.textContent = meta.step ? `Thinking… (step ${meta.step})` : "Thinking…";
        this.scrollIfNear();
        break;
      }
      case "agent.tool_call":
        this.toolCall(event, meta);
        break;
      case "agent.tool_result":
        this.toolResult(event, meta);
        break;
      case "agent.partial_answer":
        this.partial(asText(event.content));
        break;
      case "agent.final_answer":
        this.final(asText(event.content));
        break;
      case "agent.user_confirm":
        this.confirm(event, meta);
        break;
      case "agent.error":
        this.place(alertBox("The turn failed", meta.code, event.content, errorDetails(event)));
        break;
      case "agent.timeout":
        this.place(
          alertBox("The turn timed out", "timeout", event.content, meta.timeout_s ? `limit ${meta.timeout_s} s` : ""),
        );
        break;
      case "agent.interrupted":
        this.place(
          h(
            "div",
            { class: "turn-end interrupted", testid: "interrupted" },
            h("strong", { text: "Interrupted" }),
            h("span", { text: asText(event.content) || "The turn was cancelled." }),
          ),
        );
        break;
      case "agent.session_resumed": {
        const n = meta.replayed ?? 0;
        this.note(n ? `Reconnected; ${n} missed event${n === 1 ? "" : "s"} replayed.` : "Reconnected.", "quiet");
        break;
      }
      case "agent.session_end":
        this.finishTurn();
        this.ended = true;
        this.tabButton.dataset.ended = "true";
        dropConfirms(this.id);
        this.note(asText(event.content) || "Session ended.", "end");
        this.updateControls();
        break;
      case "system.error":
        this.append(alertBox("Request rejected", meta.code, event.content, errorDetails(event)));
        // A refused user.message never started a turn; a turn that is streaming goes on.
        if (this.turn && !this.turn.started) this.finishTurn();
        if (meta.code === "session_not_found") {
          this.finishTurn();
          this.ended = true;
          this.tabButton.dataset.ended = "true";
          this.updateControls();
        }
        break;
      case "system.notice":
        this.note(asText(event.content), "quiet");
        break;
      default:
        break;
    }
    if (TERMINAL.has(event.event)) this.finishTurn();
  }

  toolCall(event, meta) {
    const turn = this.ensureTurn();
    turn.thinking.hidden = true;
    if (turn.answer) {
      // Text before a tool call was the model thinking aloud, not the answer.
      turn.answer.el.dataset.state = "interim";
      turn.answer = null;
    }
    const tool = meta.tool || asText(event.content).replace(/^Calling tool:\s*/, "") || "tool";
    const status = h("span", { class: "tool-status", testid: "tool-status", text: "running…" });
    const duration = h("span", { class: "tool-duration muted", testid: "tool-duration" });
    const result = h("pre", { class: "tool-result", testid: "tool-result", hidden: true });
    const card = h(
      "details",
      { class: "tool-card", testid: "tool-card", "data-tool": tool, "data-status": "running", open: true },
      h(
        "summary",
        {},
        h("span", { class: "tool-icon", "aria-hidden": "true", text: "⚙" }),
        h("span", { class: "tool-name", testid: "tool-name", text: tool }),
        status,
        duration,
      ),
      h(
        "div",
        { class: "tool-body" },
        h("div", { class: "label", text: "Arguments" }),
        h("pre", { class: "json", testid: "tool-args", text: formatJson(meta.args) }),
        h("div", { class: "label result-label", text: "Result", hidden: true }),
        result,
      ),
    );
    turn.cards.set(event.step_id || meta.call_id || `${tool}-${turn.cards.size}`, { card, status, duration, result });
    this.place(card);
  }

  toolResult(event, meta) {
    const turn = this.ensureTurn();
    const key = event.step_id || meta.call_id;
    let entry = turn.cards.get(key);
    if (!entry) {
      this.toolCall({ step_id: key, content: "" }, { tool: meta.tool, args: {} });
      entry = turn.cards.get(key);
    }
    const ok = meta.status !== "error";
    entry.card.dataset.status = ok ? "success" : "error";
    entry.status.textContent = ok ? "done" : "error";
    entry.duration.textContent = formatDuration(meta.duration_ms);
    entry.result.textContent = asText(event.content);
    entry.result.hidden = false;
    entry.card.querySelector(".result-label").hidden = false;
    this.scrollIfNear();
  }

  answerBlock() {
    const turn = this.ensureTurn();
    turn.thinking.hidden = true;
    if (!turn.answer) {
      const el = h("div", { class: "answer md", testid: "answer", "data-state": "streaming" });
      turn.answer = { el, text: "" };
      this.place(el);
    }
    return turn.answer;
  }

  partial(delta) {
    const answer = this.answerBlock();
    answer.text += delta;
    if (this.renderPending) return;
    this.renderPending = true;
    requestAnimationFrame(() => {
      this.renderPending = false;
      const current = this.turn?.answer;
      if (current && current.el.dataset.state === "streaming") {
        current.el.replaceChildren(renderMarkdown(current.text));
        this.scrollIfNear();
      }
    });
  }

  final(text) {
    const answer = this.answerBlock();
    answer.text = text;
    answer.el.dataset.state = "final";
    answer.el.replaceChildren(renderMarkdown(text));
    this.scrollIfNear();
  }

  confirm(event, meta) {
    const turn = this.ensureTurn();
    turn.thinking.hidden = true;
    const status = h("span", { class: "confirm-status", testid: "confirm-status", text: "waiting for your answer" });
    const review = h("button", { type: "button", class: "button small", text: "Review", onclick: () => openConfirm(request) });
    const card = h(
      "div",
      { class: "confirm-card", testid: "confirm-card", "data-step-id": event.step_id || "" },
      h("div", { class: "confirm-line" }, h("strong", { text: `Approve ${meta.tool || "tool"}?` }), status, review),
      event.content ? h("div", { class: "muted small", text: asText(event.content) }) : null,
    );
    const request = { view: this, stepId: event.step_id, tool: meta.tool, args: meta.args, question: event.content, card, status, review };
    this.place(card);
    queueConfirm(request);
  }

  finishTurn() {
    const turn = this.turn;
    if (turn) {
      turn.thinking.remove();
      if (turn.answer && turn.answer.el.dataset.state === "streaming") turn.answer.el.dataset.state = "cut";
      for (const { card, status } of turn.cards.values()) {
        if (card.dataset.status === "running") {
          card.dataset.status = "stopped";
          status.textContent = "stopped";
        }
      }
      this.turn = null;
    }
    dropConfirms(this.id, true);
    this.cancelButton.textContent = "Cancel";
    this.setBusy(false);
  }
}

function ensureView(id, agentName) {
  let view = views.get(id);
  if (!view) {
    view = new SessionView(id, agentName);
    views.set(id, view);
    ui.noSessions.hidden = true;
  }
  return view;
}

function activate(id) {
  activeId = id;
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
}

// -- confirmations ---------------------------------------------------------------------------

const confirms = [];
let shownConfirm = null;
const dialogParts = {
  question: testid("confirm-question", ui.dialog),
  where: testid("confirm-where", ui.dialog),
  args: testid("confirm-args", ui.dialog),
  feedback: testid("confirm-feedback", ui.dialog),
};

function queueConfirm(request) {
  confirms.push(request);
  if (!shownConfirm) openConfirm(request);
}

function openConfirm(request) {
  if (!confirms.includes(request)) return;
  if (shownConfirm && shownConfirm !== request && ui.dialog.open) ui.dialog.close("defer");
  shownConfirm = request;
  dialogParts.question.textContent = asText(request.question) || `The agent wants to run ${request.tool || "a tool"}.`;
  dialogParts.where.textContent = `${request.view.agent} · session ${shortId(request.view.id)} · tool ${request.tool || "?"}`;
  dialogParts.args.textContent = formatJson(request.args);
  dialogParts.feedback.value = "";
  if (!ui.dialog.open) ui.dialog.showModal();
}

ui.dialog.addEventListener("close", () => {
  const request = shownConfirm;
  const answer = ui.dialog.returnValue;
  ui.dialog.returnValue = "";
  shownConfirm = null;
  if (request && (answer === "approve" || answer === "reject")) {
    const approved = answer === "approve";
    const feedback = dialogParts.feedback.value.trim();
    try {
      client.respond(request.view.id, request.stepId, approved, feedback || undefined);
      confirms.splice(confirms.indexOf(request), 1);
      request.status.textContent = approved ? "approved" : `rejected${feedback ? `: ${feedback}` : ""}`;
      request.card.dataset.answer = approved ? "approved" : "rejected";
      request.review.remove();
    } catch (error) {
      logGlobal("error", "Answer not sent", error.code, error.message);
    }
  }
  const next = confirms.find((c) => c !== request);
  if (next && answer !== "") openConfirm(next);
});

function dropConfirms(sessionId, onlyTurn = false) {
  for (const request of confirms.filter((c) => c.view.id === sessionId)) {
    confirms.splice(confirms.indexOf(request), 1);
    request.status.textContent = onlyTurn ? "no longer needed (the turn ended)" : "no longer needed";
    request.review.remove();
    if (shownConfirm === request) {
      shownConfirm = null;
      ui.dialog.close("");
    }
  }
}

// -- wiring ------------------------------------------------------------------------------------

client.on("state", showState);
client.on("event", (event) => {
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
      ensureView(event.session_id, event.content?.agent ?? event.metadata?.agent).created(event);
      return;
    default:
  }
  const view = event.session_id ? views.get(event.session_id) : null;
  if (view) {
    view.handle(event);
  } else if (event.event === "system.error") {
    const meta = event.metadata || {};
    logGlobal("error", "The server refused a request", meta.code, event.content, errorDetails(event));
  } else if (event.event === "system.notice") {
    logGlobal("notice", "", "", event.content);
  }
});

ui.agentForm.addEventListener("change", updateControls);
ui.agentList.addEventListener("dblclick", (e) => {
  if (e.target.closest(".agent-card") && !ui.start.disabled) ui.agentForm.requestSubmit();
});
ui.agentForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = selectedAgent();
  if (!name || starting) return;
  starting = true;
  updateControls();
  try {
    const id = await client.createSession(name);
    ensureView(id, name);
    activate(id);
  } catch (error) {
    // A system.error is already shown by the event handler; say what else went wrong.
    if (!error.event) logGlobal("error", "Could not start a session", error.code, error.message);
  } finally {
    starting = false;
    updateControls();
  }
});
ui.retry.addEventListener("click", () => {
  if (client.state === "offline") client.connect().catch(() => {});
  else client.retryNow();
});
// Leaving the page closes the socket (the server keeps the sessions for a while); coming
// back from the back/forward cache re-attaches them.
window.addEventListener("pagehide", () => client.close());
window.addEventListener("pageshow", (e) => {
  if (e.persisted) client.connect().catch(() => {});
});

renderAgents();
client.connect().catch(() => {});
