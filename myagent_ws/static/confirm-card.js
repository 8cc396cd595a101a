// A session's confirmation cards: one per step_id of agent.user_confirm, however often the
// server asks (after a reconnect it replays the ask and then sends it again, both with the
// same step_id), and what becomes of each: shown in the dialog (confirm-dialog.js),
// answered here, settled by the server's agent.tool_result for that step (the tool ran, or
// it was rejected: declined or timed out), refused as confirm_not_pending, or no longer
// needed because its turn ended. The server runs each call at most once whatever the
// console sends; these cards make sure the person sees each question once, and its end.

import { asText, clockTime, h } from "./dom.js";

/**
 * One step's card. state: "waiting" (for an answer), "sent" (answered, here or elsewhere;
 * no outcome yet), "settled" (its agent.tool_result came) or "closed" (its turn ended).
 * The dialog reads session, stepId, tool, args, question and expiresAt.
 */
export class ConfirmCard {
  constructor(event, session) {
    this.session = session; // the SessionView
    this.dialog = session.app.confirms;
    this.stepId = event.step_id;
    this.answer = null; // {approved, feedback} once answered on this page
    this.resent = false;
    this.title = h("strong");
    this.status = h("span", { class: "confirm-status", testid: "confirm-status" });
    this.outcome = h("span", { class: "confirm-outcome", testid: "confirm-outcome", hidden: true });
    this.review = h("button", {
      type: "button",
      class: "button small",
      testid: "confirm-review",
      text: "Review",
      onclick: () => this.ask(),
    });
    this.text = h("div", { class: "muted small", testid: "confirm-text" });
    this.deadline = h("div", { class: "muted small", testid: "confirm-deadline" });
    this.detail = h("div", { class: "confirm-detail small", testid: "confirm-detail", hidden: true });
    this.card = h(
      "div",
      { class: "confirm-card", testid: "confirm-card", "data-step-id": this.stepId || "" },
      h("div", { class: "confirm-line" }, this.title, this.status, this.outcome, this.review),
      this.text,
      this.deadline,
      this.detail,
    );
    this.update(event);
    this.setState("waiting", "waiting for your answer");
  }

  /** The question's facts, from its first ask or a repeat of it. */
  update(event) {
    const meta = event.metadata || {};
    this.tool = meta.tool || "tool";
    this.args = meta.args ?? {};
    this.question = asText(event.content);
    this.expiresAt = meta.expires_at || null;
    this.title.textContent = `Approve ${this.tool}?`;
    this.text.textContent = this.question;
    this.text.hidden = !this.question;
    const at = clockTime(this.expiresAt);
    this.deadline.textContent = at ? `Answer by ${at}; no answer counts as a rejection.` : "";
    if (this.state) this.setState(this.state, this.status.textContent);
  }

  setState(state, text) {
    this.state = state;
    this.card.dataset.state = state;
    this.status.textContent = text;
    this.review.hidden = state !== "waiting";
    this.deadline.hidden = state !== "waiting" || !this.deadline.textContent;
    if (state === "waiting") this.session.turn?.toolStatus(this.stepId, "waiting", "waiting for approval");
  }

  setOutcome(kind, text) {
    this.card.dataset.outcome = kind;
    this.outcome.dataset.kind = kind;
    this.outcome.textContent = text;
    this.outcome.hidden = false;
  }

  /** A line under the card, in words. */
  say(text) {
    this.detail.textContent = text;
    this.detail.hidden = false;
  }

  /** Queues it in the dialog while it waits (shown at once if nothing else is, e.g. from Review). */
  ask() {
    if (this.state === "waiting") this.dialog.queue(this);
  }

  /** The dialog shows it: show its session and the card too, so the question has context. */
  reveal() {
    this.session.app.activate(this.session.id);
    this.card.scrollIntoView({ block: "nearest" });
  }

  /** Sends the person's answer; throws (code "not_connected") when it cannot go out. */
  respond(approved, feedback) {
    this.session.app.client.respond(this.session.id, this.stepId, approved, feedback);
    this.answer = { approved, feedback };
    this.card.dataset.answer = approved ? "approved" : "rejected";
    this.detail.hidden = true;
    this.setState("sent", this.answerText());
    if (approved) this.session.turn?.toolStatus(this.stepId, "running", "running…");
  }

  answerText() {
    const { approved, feedback } = this.answer;
    return approved ? "approved" : `rejected${feedback ? `: ${feedback}` : ""}`;
  }

  /** The answer did not go out: the card keeps waiting, with its Review button. */
  notSent(error) {
    this.say(`Your answer was not sent: ${error.message}`);
  }

  /**
   * After a reconnect the server still waits for a step answered here: the answer was lost
   * with the old connection, so it goes again (once; the server runs the call at most once).
   */
  resend() {
    if (this.resent || !this.answer) return;
    this.resent = true;
    try {
      this.session.app.client.respond(this.session.id, this.stepId, this.answer.approved, this.answer.feedback);
      this.say("Your answer was sent again: the server had not received it before the connection dropped.");
    } catch (error) {
      this.notSent(error);
    }
  }

  /** agent.session_resumed says nothing waits for this step: it was answered elsewhere. */
  answeredElsewhere() {
    this.dialog.withdraw(this);
    this.setState("sent", "already answered");
  }

  /** agent.tool_result of this step: what the server did (metadata status and reason). */
  settle(meta) {
    this.dialog.withdraw(this);
    if (meta.status === "rejected") {
      const timeout = meta.reason === "timeout";
      const said = this.answer && !this.answer.approved ? this.answerText() : timeout ? "no answer in time" : "rejected";
      this.setState("settled", said);
      this.setOutcome("rejected", timeout ? "not run: timed out" : "not run: declined");
    } else {
      this.setState("settled", this.answer ? this.answerText() : "approved");
      if (meta.status === "error") this.setOutcome("failed", "ran and failed");
      else this.setOutcome("ran", "ran");
    }
  }

  /** The server refused an answer to this step (confirm_not_pending): say why, in words. */
  notPending(text) {
    this.card.dataset.notPending = "true";
    this.say(`Your answer was not used: ${text || "nothing was waiting for it any more."}`);
  }

  /** Its turn (or session) ended: a question still open is no longer needed. */
  close(why) {
    if (this.state === "settled" || this.state === "closed") return;
    this.dialog.withdraw(this);
    if (this.state === "waiting") {
      this.setState("closed", `no longer needed (${why})`);
    } else {
      this.setState("closed", this.answer ? this.answerText() : "already answered");
      this.setOutcome("stopped", `not run: ${why} first`);
    }
  }
}

/** The cards of one session, by step id. */
export class Confirmations {
  constructor(session) {
    this.session = session;
    this.cards = new Map();
  }

  /**
   * agent.user_confirm. A known step reuses its card, and a step already answered is not
   * asked again. hold: a replay is under way, so the dialog waits: agent.session_resumed
   * says what still waits (see resumed()), and the server then asks each of those again.
   */
  ask(event, hold = false) {
    const key = event.step_id ?? event.event_id;
    let card = this.cards.get(key);
    if (card) {
      card.update(event);
      this.session.mark(card.card);
    } else {
      card = new ConfirmCard(event, this.session);
      this.cards.set(key, card);
      this.session.place(card.card);
    }
    if (!hold) card.ask();
  }

  /** agent.tool_result: the outcome of a step that asked (others have no card). */
  result(event) {
    this.cards.get(event.step_id)?.settle(event.metadata || {});
  }

  /** system.error confirm_not_pending: shown on the card of the step it names (its
   * step_id); false when this session shows no such card. */
  notPending(event) {
    const card = this.cards.get(event.step_id);
    card?.notPending(asText(event.content));
    return Boolean(card);
  }

  /** The turn or the session ended: whatever still waits is closed. */
  closeAll(why) {
    for (const card of this.cards.values()) card.close(why);
  }

  /**
   * agent.session_resumed, after the replay. pending is its metadata.pending_confirm; the
   * server asks each of those again right after it, which asks a waiting card. A waiting card
   * the server no longer waits for was answered elsewhere; one answered here that it still
   * waits for lost its answer on the way.
   */
  resumed(pending = []) {
    for (const card of this.cards.values()) {
      const waits = pending.includes(card.stepId);
      if (card.state === "waiting" && !waits) card.answeredElsewhere();
      else if (card.state === "sent" && waits) card.resend();
    }
  }
}
