// One agent turn in a session's transcript: the thinking indicator, tool cards and their
// results, alerts and end markers, and the answer as it streams in and settles. The
// confirmation cards placed in it are drawn by confirm-card.js. Agent text only reaches
// the page as text nodes or through markdown.js.

import { renderMarkdown } from "./markdown.js";
import { asText, formatDuration, formatJson, h } from "./dom.js";

export class TurnView {
  /** session: the SessionView whose transcript shows this turn. */
  constructor(session) {
    this.session = session;
    this.thinking = h(
      "div",
      { class: "thinking", testid: "thinking", hidden: true },
      h("span", { class: "dots", "aria-hidden": "true" }, h("i"), h("i"), h("i")),
      h("span", { class: "thinking-label", text: "Thinking…" }),
    );
    this.body = h("div", { class: "agent-turn", testid: "turn" }, this.thinking);
    this.cards = new Map(); // step id -> { card, status, duration, result }
    this.answer = null; // { el, text } of the answer being written
    this.started = true; // false while a sent message waits for the server's first event
  }

  /** Adds a node to the turn, above the thinking indicator (marked if a replay drew it). */
  place(node) {
    this.body.insertBefore(this.session.mark(node), this.thinking);
    this.session.scrollIfNear();
    this.session.markUnread();
    return node;
  }

  showThinking(step) {
    this.thinking.hidden = false;
    this.thinking.lastChild.textContent = step ? `Thinking… (step ${step})` : "Thinking…";
    this.session.scrollIfNear();
  }

  // -- tool calls

  toolCall(event, meta) {
    this.thinking.hidden = true;
    if (this.answer) {
      // Text before a tool call was the model thinking aloud, not the answer.
      this.answer.el.dataset.state = "interim";
      this.answer = null;
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
    this.cards.set(event.step_id || meta.call_id || `${tool}-${this.cards.size}`, { card, status, duration, result });
    this.place(card);
  }

  /** Sets a tool card's state (data-status) and its status words, if the card is here. */
  toolStatus(stepId, status, text) {
    const entry = this.cards.get(stepId);
    if (!entry) return;
    entry.card.dataset.status = status;
    entry.status.textContent = text;
  }

  toolResult(event, meta) {
    const key = event.step_id || meta.call_id;
    let entry = this.cards.get(key);
    if (!entry) {
      this.toolCall({ step_id: key, content: "" }, { tool: meta.tool, args: {} });
      entry = this.cards.get(key);
    }
    if (meta.status === "rejected") {
      // Not run: the person declined, or did not answer in time. Its content says so.
      const why = meta.reason === "timeout" ? "timed out" : meta.reason || "declined";
      this.toolStatus(key, "rejected", `rejected · ${why}`);
      entry.card.dataset.reason = meta.reason || "";
    } else if (meta.status === "error") {
      this.toolStatus(key, "error", "error");
    } else {
      this.toolStatus(key, "success", "done");
    }
    entry.duration.textContent = meta.status === "rejected" ? "" : formatDuration(meta.duration_ms);
    entry.result.textContent = asText(event.content);
    entry.result.hidden = false;
    this.session.mark(entry.card); // a card drawn live may get its result from a replay
    entry.card.querySelector(".result-label").hidden = false;
    this.session.scrollIfNear();
  }

  // -- the answer

  answerBlock() {
    this.thinking.hidden = true;
    if (!this.answer) {
      const el = h("div", { class: "answer md", testid: "answer", "data-state": "streaming" });
      this.answer = { el, text: "" };
      this.place(el);
    }
    return this.answer;
  }

  /** Adds streamed text; the session view schedules renderStreaming(). Returns its element. */
  addToAnswer(delta) {
    const answer = this.answerBlock();
    answer.text += delta;
    return answer.el;
  }

  renderStreaming() {
    const current = this.answer;
    if (current && current.el.dataset.state === "streaming") {
      current.el.replaceChildren(renderMarkdown(current.text));
      this.session.scrollIfNear();
    }
  }

  final(text) {
    const answer = this.answerBlock();
    answer.text = text;
    answer.el.dataset.state = "final";
    answer.el.replaceChildren(renderMarkdown(text));
    this.session.mark(answer.el);
    this.session.scrollIfNear();
  }

  // -- ends

  interrupted(content, reason) {
    this.place(
      h(
        "div",
        { class: "turn-end interrupted", testid: "interrupted", "data-reason": reason || "" },
        h("strong", { text: "Interrupted" }),
        h("span", { text: asText(content) || "The turn was cancelled." }),
      ),
    );
  }

  /** The turn is over: drop the indicator, mark what was still running as cut short. */
  finish() {
    this.thinking.remove();
    if (this.answer && this.answer.el.dataset.state === "streaming") this.answer.el.dataset.state = "cut";
    for (const { card, status } of this.cards.values()) {
      if (card.dataset.status === "running" || card.dataset.status === "waiting") {
        card.dataset.status = "stopped";
        status.textContent = "stopped";
      }
    }
  }
}
