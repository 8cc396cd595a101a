// The agent.user_confirm dialog: the queue of tool calls waiting for the user's approval,
// shown one at a time in the page's <dialog>, and the answers sent back through the client.
// The confirmation cards in the transcript are drawn by turn-view.js.

import { asText, formatJson, shortId, testid } from "./dom.js";

/** A request is { view, stepId, tool, args, question, card, status, review }. */
export class ConfirmDialog {
  constructor(dialog, { client, log }) {
    this.dialog = dialog;
    this.client = client;
    this.log = log;
    this.pending = [];
    this.shown = null;
    this.parts = {
      question: testid("confirm-question", dialog),
      where: testid("confirm-where", dialog),
      args: testid("confirm-args", dialog),
      feedback: testid("confirm-feedback", dialog),
    };
    dialog.addEventListener("close", () => this.closed());
  }

  queue(request) {
    this.pending.push(request);
    if (!this.shown) this.open(request);
  }

  open(request) {
    if (!this.pending.includes(request)) return;
    if (this.shown && this.shown !== request && this.dialog.open) this.dialog.close("defer");
    this.shown = request;
    this.parts.question.textContent = asText(request.question) || `The agent wants to run ${request.tool || "a tool"}.`;
    this.parts.where.textContent = `${request.view.agent} · session ${shortId(request.view.id)} · tool ${request.tool || "?"}`;
    this.parts.args.textContent = formatJson(request.args);
    this.parts.feedback.value = "";
    if (!this.dialog.open) this.dialog.showModal();
  }

  closed() {
    const request = this.shown;
    const answer = this.dialog.returnValue;
    this.dialog.returnValue = "";
    this.shown = null;
    if (request && (answer === "approve" || answer === "reject")) {
      const approved = answer === "approve";
      const feedback = this.parts.feedback.value.trim();
      try {
        this.client.respond(request.view.id, request.stepId, approved, feedback || undefined);
        this.pending.splice(this.pending.indexOf(request), 1);
        request.status.textContent = approved ? "approved" : `rejected${feedback ? `: ${feedback}` : ""}`;
        request.card.dataset.answer = approved ? "approved" : "rejected";
        request.review.remove();
      } catch (error) {
        this.log("error", "Answer not sent", error.code, error.message);
      }
    }
    const next = this.pending.find((c) => c !== request);
    if (next && answer !== "") this.open(next);
  }

  /** Forgets a session's pending requests (onlyTurn: because its turn ended). */
  drop(sessionId, onlyTurn = false) {
    for (const request of this.pending.filter((c) => c.view.id === sessionId)) {
      this.pending.splice(this.pending.indexOf(request), 1);
      request.status.textContent = onlyTurn ? "no longer needed (the turn ended)" : "no longer needed";
      request.review.remove();
      if (this.shown === request) {
        this.shown = null;
        this.dialog.close("");
      }
    }
  }
}
