// The agent.user_confirm dialog: the queue of tool calls waiting for the person's approval,
// shown one at a time in the page's <dialog>: the question, the tool, its arguments and
// how long is left. A request is a ConfirmCard (confirm-card.js), which sends the answer
// and shows what became of it; the dialog only asks.

import { clockTime, formatJson, shortId, testid, timeLeft } from "./dom.js";

export class ConfirmDialog {
  constructor(dialog, { log }) {
    this.dialog = dialog;
    this.log = log;
    this.pending = []; // cards waiting for an answer, in the order they asked
    this.shown = null;
    this.ticker = null;
    this.parts = {
      question: testid("confirm-question", dialog),
      where: testid("confirm-where", dialog),
      expires: testid("confirm-expires", dialog),
      args: testid("confirm-args", dialog),
      feedback: testid("confirm-feedback", dialog),
    };
    dialog.addEventListener("close", () => this.closed());
  }

  /** Adds a card (once); shows it if nothing else is shown. */
  queue(request) {
    if (!this.pending.includes(request)) this.pending.push(request);
    if (!this.shown) this.open(request);
  }

  /** Fills the dialog with a request and opens it; only when nothing is shown (the dialog is
   * modal, so no other card's Review button can be pressed while it is open). */
  open(request) {
    this.shown = request;
    request.reveal();
    const { session, tool } = request;
    this.dialog.dataset.stepId = request.stepId || "";
    this.dialog.dataset.sessionId = session.id;
    this.parts.question.textContent = request.question || `The agent wants to run ${tool || "a tool"}.`;
    this.parts.where.textContent = `${session.agent} · session ${shortId(session.id)} · tool ${tool || "?"}`;
    this.parts.args.textContent = formatJson(request.args);
    this.parts.feedback.value = "";
    this.showDeadline();
    clearInterval(this.ticker);
    this.ticker = request.expiresAt ? setInterval(() => this.showDeadline(), 1000) : null;
    if (!this.dialog.open) this.dialog.showModal();
  }

  showDeadline() {
    const request = this.shown;
    const at = clockTime(request?.expiresAt);
    const left = timeLeft(request?.expiresAt);
    this.parts.expires.hidden = !at;
    this.parts.expires.textContent = !at
      ? ""
      : left
        ? `Expires at ${at} (in ${left}); no answer by then counts as a rejection.`
        : `Expired at ${at}; waiting for the server to close it.`;
  }

  /** Takes a card off the queue (answered elsewhere, settled, its turn ended). */
  withdraw(request) {
    const index = this.pending.indexOf(request);
    if (index >= 0) this.pending.splice(index, 1);
    if (this.shown === request && this.dialog.open) this.dialog.close("withdrawn");
  }

  closed() {
    const request = this.shown;
    const answer = this.dialog.returnValue;
    this.dialog.returnValue = "";
    this.shown = null;
    clearInterval(this.ticker);
    this.ticker = null;
    if (request && this.pending.includes(request) && (answer === "approve" || answer === "reject")) {
      const feedback = this.parts.feedback.value.trim();
      try {
        request.respond(answer === "approve", feedback || undefined);
        this.pending.splice(this.pending.indexOf(request), 1);
      } catch (error) {
        request.notSent(error); // still pending: its card keeps a Review button
        this.log("error", "Answer not sent", error.code, error.message);
        return;
      }
    }
    // Escape (no answer) leaves the rest for later; otherwise the next question follows.
    const next = this.pending.find((r) => r !== request);
    if (next && answer !== "") this.open(next);
  }
}
