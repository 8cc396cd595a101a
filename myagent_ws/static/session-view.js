// One session: its tab in the sidebar and its panel (header, transcript, composer), the
// composer's controls and actions, and the session's server events, dispatched to the
// transcript. Each turn's contents are drawn by turn-view.js, its confirmation cards by
// confirm-card.js.
//
// Replays: after a reload (or in a second tab) the page re-attaches from seq 0 and the
// server replays what it still buffers, so the transcript is rebuilt from the same events
// as it was drawn live. While a replay runs, whatever it draws or changes carries
// data-replayed (and the panel data-replaying), so a person can tell history from news;
// the replay's own agent.session_resumed clears every mark.

import { TERMINAL_EVENTS } from "./myagent-client.js";
import { Confirmations } from "./confirm-card.js";
import { alertBox, asText, errorDetails, h, shortId } from "./dom.js";
import { TurnView } from "./turn-view.js";

const TERMINAL = new Set(TERMINAL_EVENTS);

/**
 * app is what the page gives each session view: client, confirms (a ConfirmDialog),
 * connected(), log(kind, title, code, content, extra), isActive(id), activate(id),
 * remove(view) and mount(view), which puts the tab and panel on the page.
 * restored: "reload" or "open" when the session was re-attached as the page loaded (after
 * a reload, or in a tab opened from another), else false.
 * knownSeq: the highest seq the page had shown before it loaded (kept in sessionStorage);
 * replayed events up to it were seen before, later ones are news.
 */
export class SessionView {
  constructor(id, agentName, app, { restored = false, knownSeq = 0 } = {}) {
    this.app = app;
    this.id = id;
    this.agent = agentName || "agent";
    this.busy = false;
    this.ended = false;
    this.turn = null; // the running TurnView
    this.renderPending = false;
    this.restored = restored;
    this.knownSeq = knownSeq;
    this.seenBefore = false; // the event being handled was shown before the page loaded
    this.replay = null; // {anchor, fresh} while a replay runs
    this.confirms = new Confirmations(this);

    this.tabButton = h(
      "button",
      {
        type: "button",
        role: "tab",
        class: "session-tab",
        testid: "session-tab",
        "data-session-id": id,
        "aria-selected": "false",
        onclick: () => app.activate(id),
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
    this.replayBadge = h("span", {
      class: "badge badge-replay",
      testid: "replay-status",
      title: "Events the server kept for this session are being replayed.",
      text: "replaying…",
      hidden: true,
    });
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
        h(
          "div",
          { class: "panel-title" },
          h("h2", { text: this.agent }),
          this.offlineBadge,
          this.modelLabel,
          this.replayBadge,
        ),
        h("div", { class: "panel-meta" }, h("code", { class: "sid", title: "session id", text: id }), this.endButton),
      ),
      this.transcript,
      this.form,
    );
    app.mount(this);
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
    for (const node of nodes) this.mark(node);
    t.append(...nodes);
    if (stick) t.scrollTop = t.scrollHeight;
    this.markUnread();
  }

  /** Marks what a replayed event draws or changes, until the replay ends. */
  mark(node) {
    // Called for every streamed token: write only when the mark changes (at most once,
    // from "seen" to "new", as seqs rise), so the browser restyles nothing per token.
    const mark = this.seenBefore ? "seen" : "new";
    if (this.replay && node?.dataset && node.dataset.replayed !== mark) {
      node.dataset.replayed = mark;
      node.classList.add("replayed");
    }
    return node;
  }

  scrollIfNear() {
    const t = this.transcript;
    if (t.scrollHeight - t.scrollTop - t.clientHeight < 200) t.scrollTop = t.scrollHeight;
  }

  markUnread() {
    // What the page showed before it reloaded is not news.
    if (!this.app.isActive(this.id) && !this.seenBefore) this.tabButton.dataset.unread = "true";
  }

  note(text, kind = "") {
    this.append(h("div", { class: `note ${kind}`, testid: "notice", text }));
  }

  /**
   * The running turn's view. One made for an event that arrives without a message sent
   * from this page shows the message the turn's first agent.thinking repeats
   * (metadata.user_message), marked as sent before this page loaded or from another tab.
   */
  ensureTurn(userMessage) {
    if (!this.turn) {
      const where = this.restored ? "Sent before this page loaded" : "Sent from another tab";
      const text = typeof userMessage === "string" ? userMessage : `(${where.toLowerCase()})`;
      this.append(
        h(
          "div",
          { class: "msg-user elsewhere", testid: "user-message-elsewhere" },
          h("div", { class: "bubble", text, title: where }),
        ),
      );
      this.startTurn();
    }
    return this.turn;
  }

  startTurn() {
    this.turn = new TurnView(this);
    this.append(this.turn.body);
    this.setBusy(true);
    return this.turn;
  }

  place(node) {
    return this.ensureTurn().place(node);
  }

  setBusy(busy) {
    this.busy = busy;
    this.tabButton.dataset.busy = String(busy);
    this.panel.dataset.busy = String(busy);
    this.updateControls();
  }

  updateControls() {
    const connected = this.app.connected();
    const live = connected && !this.ended;
    this.sendButton.disabled = !live || this.busy;
    this.cancelButton.hidden = !this.busy || this.ended;
    this.cancelButton.disabled = !live;
    this.input.disabled = this.ended;
    this.endButton.textContent = this.ended ? "Close" : "End session";
    this.endButton.disabled = !this.ended && !connected;
  }

  autosize() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 220)}px`;
  }

  // -- user actions

  submit() {
    if (this.sendText(this.input.value)) {
      this.input.value = "";
      this.autosize();
    }
  }

  /** Sends a message as a new turn; false when it could not go (nothing is drawn then). */
  sendText(text) {
    if (!text.trim() || this.busy || this.ended || !this.app.connected()) return false;
    try {
      this.app.client.send(this.id, text);
    } catch (error) {
      this.app.log("error", "Not sent", error.code, error.message);
      return false;
    }
    this.append(h("div", { class: "msg-user", testid: "user-message" }, h("div", { class: "bubble", text })));
    this.startTurn().started = false; // until the server's first event for it
    return true;
  }

  cancel() {
    try {
      this.app.client.cancel(this.id);
      this.cancelButton.disabled = true;
      this.cancelButton.textContent = "Cancelling…";
    } catch (error) {
      this.app.log("error", "Could not cancel", error.code, error.message);
    }
  }

  endOrClose() {
    if (this.ended) {
      this.app.remove(this);
      return;
    }
    try {
      this.app.client.endSession(this.id);
      this.endButton.disabled = true;
    } catch (error) {
      this.app.log("error", "Could not end the session", error.code, error.message);
    }
  }

  // -- server events

  handle(event) {
    const meta = event.metadata || {};
    this.seenBefore = Number.isInteger(event.seq) && event.seq <= this.knownSeq;
    if (!this.replay && this.app.client.replaying(this.id)) this.beginReplay();
    // Resumes (other connections', earlier ones) are not news; everything else past knownSeq is.
    if (this.replay && !this.seenBefore && event.event !== "agent.session_resumed") this.replay.fresh += 1;
    if (this.turn && event.event.startsWith("agent.")) this.turn.started = true;
    switch (event.event) {
      case "agent.session_created":
        this.created(event);
        break;
      case "agent.thinking":
        this.ensureTurn(meta.user_message).showThinking(meta.step);
        break;
      case "agent.tool_call":
        this.ensureTurn().toolCall(event, meta);
        break;
      case "agent.tool_result":
        this.ensureTurn().toolResult(event, meta);
        this.confirms.result(event);
        break;
      case "agent.partial_answer":
        this.partial(asText(event.content));
        break;
      case "agent.final_answer":
        this.ensureTurn().final(asText(event.content));
        break;
      case "agent.user_confirm": {
        const turn = this.ensureTurn();
        turn.thinking.hidden = true;
        // Its agent.tool_call may be gone (acknowledged before a reload): draw the tool card
        // from the question, which names the same tool and arguments.
        if (event.step_id && !turn.cards.has(event.step_id)) turn.toolCall(event, meta);
        // A question in a replay waits for agent.session_resumed to say whether it still waits.
        this.confirms.ask(event, this.app.client.replaying(this.id));
        break;
      }
      case "agent.error":
        this.place(alertBox("The turn failed", meta.code, event.content, errorDetails(event)));
        break;
      case "agent.timeout":
        this.place(
          alertBox("The turn timed out", "timeout", event.content, meta.timeout_s ? `limit ${meta.timeout_s} s` : ""),
        );
        break;
      case "agent.interrupted":
        // A message queued behind the stopped turn ends too, without having run.
        if (meta.queued) this.note(asText(event.content) || "A queued message did not run.", "queued");
        else this.ensureTurn().interrupted(event.content, meta.reason);
        break;
      case "agent.session_resumed":
        // Another connection's re-attach (a second tab), or an earlier one kept in the
        // replay: not news for this transcript. This page's own comes to resumed().
        break;
      case "agent.session_end":
        this.endReplay(); // no agent.session_resumed will come for it
        this.confirms.closeAll("the session ended");
        this.finishTurn();
        this.ended = true;
        this.tabButton.dataset.ended = "true";
        this.note(asText(event.content) || "Session ended.", "end");
        this.updateControls();
        break;
      case "system.error":
        // An answer to a question that no longer waits: said on that question's card.
        if (meta.code === "confirm_not_pending" && this.confirms.notPending(event)) break;
        this.append(
          alertBox(
            meta.code === "confirm_not_pending" ? "Your answer was not used" : "Request rejected",
            meta.code,
            event.content,
            errorDetails(event),
          ),
        );
        // A refused user.message never started a turn; a turn that is streaming goes on.
        if (this.turn && !this.turn.started) this.finishTurn();
        if (meta.code === "session_not_found") {
          this.endReplay();
          this.finishTurn();
          this.ended = true;
          this.tabButton.dataset.ended = "true";
          this.updateControls();
        }
        break;
      case "system.notice":
        // metadata.queued: the message waits behind the running turn (on_busy=queue).
        this.note(asText(event.content), meta.queued ? "queued" : "quiet");
        break;
      default:
        break;
    }
    if (TERMINAL.has(event.event)) this.finishTurn();
  }

  /** A replay starts (the client re-attached the session): mark what it draws. */
  beginReplay() {
    // Where the replay starts: a gap the server reports goes there.
    const anchor = document.createComment("replay");
    this.transcript.append(anchor);
    this.replay = { anchor, fresh: 0 };
    this.panel.dataset.replaying = "true";
    this.replayBadge.hidden = false;
  }

  /** The replay is over (or cannot end: the session ended): every mark goes. */
  endReplay() {
    this.replay?.anchor.remove();
    this.replay = null;
    for (const node of this.panel.querySelectorAll("[data-replayed]")) {
      delete node.dataset.replayed;
      node.classList.remove("replayed");
    }
    this.panel.dataset.replaying = "false";
    this.replayBadge.hidden = true;
  }

  /**
   * The agent.session_resumed that answers this page's own user.reconnect: the replay is
   * over. Unmark it, say what came back (and what the server no longer had), and settle the
   * questions that still wait.
   */
  resumed(event) {
    const meta = event.metadata || {};
    const gap = meta.replay_gap;
    if (!this.replay) this.beginReplay(); // nothing came before it
    if (gap) {
      // Said out loud, where the missing events would have been.
      const where = this.restored && gap.from <= 1 ? "Earlier events" : `Events ${gap.from}–${gap.to}`;
      this.replay.anchor.before(
        h("div", {
          class: "note replay-gap",
          testid: "replay-gap",
          text: `${where} of this session are no longer kept by the server, so they are not shown.`,
        }),
      );
    }
    const { fresh } = this.replay;
    this.endReplay();
    const n = meta.replayed ?? 0;
    let replayed = n ? `${n} event${n === 1 ? "" : "s"} replayed` : "nothing to replay";
    // knownSeq (kept across the reload) tells what this page had shown before.
    if (n && this.restored === "reload" && this.knownSeq) {
      replayed += `, ${fresh} of them new since this page last showed it`;
    }
    const lost = gap ? ` Events ${gap.from}–${gap.to} are no longer kept by the server, so they are not shown.` : "";
    const what = { reload: "Re-attached after the page reloaded", open: "Re-attached when this page opened" };
    this.note(`${what[this.restored] || "Reconnected"}; ${replayed}.${lost}`, "quiet");
    this.restored = false;
    this.seenBefore = false;
    this.confirms.resumed(meta.pending_confirm);
  }

  /** Streamed answer text, drawn at most once a frame. */
  partial(delta) {
    this.mark(this.ensureTurn().addToAnswer(delta));
    if (this.renderPending) return;
    this.renderPending = true;
    requestAnimationFrame(() => {
      this.renderPending = false;
      this.turn?.renderStreaming();
    });
  }

  finishTurn() {
    this.confirms.closeAll("the turn ended");
    if (this.turn) {
      this.turn.finish();
      this.turn = null;
    }
    this.cancelButton.textContent = "Cancel";
    this.setBusy(false);
  }
}
