/**
 * myagent-client.js: a browser client for the myagent-ws WebSocket protocol (v1).
 *
 * A plain ES module with no dependencies and no build step. Import it from any page:
 *
 *     import { MyAgentClient } from "/static/myagent-client.js";
 *
 *     const client = new MyAgentClient();              // ws(s)://<this page's host>/
 *     client.on("agent.partial_answer", (ev) => show(ev.session_id, ev.content));
 *     client.on("state", ({ state }) => badge(state));
 *     await client.connect();
 *     const sid = await client.createSession("weather-assistant");
 *     client.send(sid, "北京今天天气怎么样？");
 *
 * Constructor options (all optional):
 *   url            WebSocket URL. Default: the page's own origin, ws: or wss:, path "/".
 *   token          For servers with auth: before every connection attempt (the first and
 *                  each reconnect: a ticket opens one connection) the client trades it for a
 *                  ticket, `POST <ticketUrl>` with `Authorization: Bearer <token>`, and
 *                  connects with `?ticket=`; the token itself never goes in a URL. A 401
 *                  there (the token is wrong) stops the client in state "unauthorized", a
 *                  403 (origin not allowed) in "offline"; no ticket for any other reason
 *                  (network error, 5xx, 429, no answer within requestTimeoutMs) is retried
 *                  with the backoff. A server with auth off hands out tickets too (and
 *                  ignores them), so one front end fits both. Also a property: set
 *                  `client.token`, then connect() again after "unauthorized".
 *   ticketUrl      Where tickets come from. Default: the http(s) origin of `url` plus
 *                  "/auth/ticket" (e.g. ws://host:8080/ -> http://host:8080/auth/ticket).
 *                  Given without `token`, it is POSTed with the page's cookies instead
 *                  (an app's own backend that hands out tickets to its signed-in users).
 *   getTicket      async ({url, signal}) -> ticket string, called before every connection
 *                  attempt instead of the above, for apps that get tickets their own way.
 *                  Throwing an Error with code "unauthorized" (or status 401) stops the
 *                  client in state "unauthorized"; any other error is retried.
 *   reconnect      Reconnect after an unexpected close (default true).
 *   backoff        {initialMs: 500, maxMs: 15000, factor: 2, jitter: 0.5}: the delay before
 *                  retry n is min(maxMs, initialMs * factor^n), of which a random share up to
 *                  `jitter` is taken off, so many clients do not retry in step.
 *   maxAttempts    Give up (state "offline") after this many failed retries (default: never).
 *   ackIntervalMs  At most one `user.ack` per session per this many ms (default 500).
 *   ack            Send `user.ack` at all (default true; also a property). An ack lets the
 *                  server drop what was acknowledged from its replay buffer, so a later
 *                  attach from seq 0 (a reloaded page, a second tab) gets only what came
 *                  after it. With `ack: false` the server's own bounds (`replay_buffer`,
 *                  `replay_buffer_bytes`, kept compressed) decide how much history it keeps
 *                  for a replay; what they no longer hold is named in `replay_gap`. The web
 *                  console uses `ack: false` to rebuild whole transcripts after a reload.
 *   requestTimeoutMs  createSession() / listAgents() reject after this long, and a ticket
 *                  that has not come after this long counts as a failed attempt (default 15000).
 *   onEvent        Called with every server event (a parsed object).
 *   onStateChange  Called with {state, previous, attempt, delayMs, error} on every state change.
 *   WebSocket      The WebSocket class to use (default: globalThis.WebSocket).
 *
 * Methods:
 *   connect() -> Promise<metadata of system.connected>   (resolves when connected;
 *                                            rejects with `.code` "unauthorized" when the
 *                                            credential is refused, "offline" on giving up)
 *   close()                                  stop; no more reconnects; state "offline"
 *   retryNow()                               skip the backoff wait and reconnect now
 *   createSession(agentName?) -> Promise<session id>   rejects with an Error carrying
 *                                            `.code` (e.g. "agent_required") on system.error
 *   listAgents() -> Promise<[{name, description, tools}]>
 *   send(sessionId, text)                    user.message: run one agent turn
 *   cancel(sessionId)                        user.cancel: stop the running turn
 *   respond(sessionId, stepId, approved, feedback?)   user.response to agent.user_confirm
 *   endSession(sessionId)                    user.end_session
 *   attach(sessionId, {agent?, lastSeq = 0, knownSeq = 0})
 *                                            adopt a session this client did not create
 *                                            (e.g. one a reloaded page kept): it is tracked
 *                                            like a created one and re-attached with
 *                                            user.reconnect from lastSeq now if connected,
 *                                            else once the connection is up (see below).
 *                                            knownSeq: the highest seq the caller knows the
 *                                            session reached (what the page showed before it
 *                                            reloaded); it tells this replay's own
 *                                            agent.session_resumed from older ones
 *   on(type, fn) -> unsubscribe function     fn(detail); see "Events" below
 *   lastSeq(sessionId) -> highest seq received for the session (0 if none)
 *   replaying(sessionId) -> true from its user.reconnect until the agent.session_resumed
 *                                            that answers it: the events in between are a
 *                                            replay
 * The fire-and-forget methods (send, cancel, respond, endSession) throw an Error with
 * code "not_connected" when the socket is not connected; the promise methods reject.
 *
 * Properties: state ("idle" | "connecting" | "connected" | "reconnecting" | "offline" |
 * "unauthorized": the server refused the credential; no reconnects until connect()),
 * error (the Error that stopped the client: code "unauthorized", or e.g.
 * "forbidden_origin" when the ticket endpoint answered 403; null once connected),
 * info (metadata of the last system.connected), agents (names from system.connected),
 * agentDetails (the last system.agents content), sessions (Map id -> {id, agent, lastSeq,
 * knownSeq, replaying}).
 *
 * Events (the client is an EventTarget; listeners get a CustomEvent whose `detail` is the
 * payload, `on()` passes the payload directly):
 *   "event"            every server event, once, in order
 *   "<event name>"     the same, by name, e.g. "agent.final_answer", "system.error"
 *   "state"            {state, previous, attempt, delayMs, error}: `error` is why the
 *                      attempt failed when the client knows it (no ticket: an Error with
 *                      `.code` such as "unauthorized" or "network_error"), else absent.
 *                      "reconnecting" carries `delayMs` when a retry is scheduled: the
 *                      next attempt starts that many ms later (retryNow() starts it now)
 *   "resumed"          the agent.session_resumed that answers this client's own
 *                      user.reconnect, right after its "event": the replay is over and
 *                      replaying(sid) is false. The server sends every resumed of a session
 *                      to every connection attached to it and keeps them in its replay
 *                      buffer, so "agent.session_resumed" also fires for other tabs'
 *                      re-attaches and for older ones replayed; this one does not
 *   "frame-error"      {error, data}: a frame that was not JSON (should never happen)
 *
 * Reconnecting: after an unexpected close the client waits (backoff above), opens a new
 * socket and, once `system.connected` arrives, sends `user.reconnect` with
 * `content.last_seq` for every session it knows (created, or adopted with attach()). The
 * server replays the events the client missed, in order, then answers
 * `agent.session_resumed`; a confirmation still waiting for an answer is sent again after
 * it (same step_id, new seq). Which resumed is the answer: the one whose
 * `metadata.replayed` equals the events that came since the user.reconnect, whose
 * `metadata.last_seq` is the one sent, and whose seq is above `knownSeq` (or, from a server
 * that names it, whose `metadata.connection_id` is this connection's). Every session event
 * carries a per-session `seq`; the client
 * keeps the highest one seen per session and drops any event with a seq at or below it, so
 * a replay never delivers an event twice. It acknowledges what it has with `user.ack`
 * (`content.last_seq`) at most every `ackIntervalMs`, so the server can trim its replay
 * buffer. A session the server no longer knows (`system.error` code "session_not_found") or
 * that ended (`agent.session_end`) is forgotten.
 */

const DEFAULT_BACKOFF = { initialMs: 500, maxMs: 15000, factor: 2, jitter: 0.5 };

/** The events that end a turn: exactly one of them closes every turn. */
export const TERMINAL_EVENTS = Object.freeze([
  "agent.final_answer",
  "agent.error",
  "agent.timeout",
  "agent.interrupted",
]);

/** Codes of a system.error that answers a user.create_session. */
const CREATE_ERRORS = new Set([
  "agent_not_found",
  "agent_required",
  "too_many_sessions",
  "rate_limited",
  "forbidden",
  "internal_error",
]);

/** ws(s)://host/ of a page location (the server serves the console and the socket at /). */
export function defaultUrl(location = globalThis.location) {
  if (!location || !/^https?:$/.test(location.protocol)) return "ws://localhost:8080/";
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/`;
}

/** http(s)://host/auth/ticket for a ws(s): URL: where the server hands out tickets. */
export function defaultTicketUrl(url) {
  const parsed = new URL(url);
  const secure = parsed.protocol === "wss:" || parsed.protocol === "https:";
  return `${secure ? "https:" : "http:"}//${parsed.host}/auth/ticket`;
}

/** The URL with `?ticket=` set (replacing one already there). */
function withTicket(url, ticket) {
  const parsed = new URL(url);
  parsed.searchParams.set("ticket", ticket);
  return parsed.href;
}

function problem(message, code, event) {
  const error = new Error(message);
  error.code = code;
  if (event) error.event = event;
  return error;
}

export class MyAgentClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.url = options.url ?? defaultUrl();
    this.token = options.token ?? null;
    this.ticketUrl = options.ticketUrl ?? null;
    this.getTicket = options.getTicket ?? null;
    this.reconnect = options.reconnect ?? true;
    this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
    this.maxAttempts = options.maxAttempts ?? Infinity;
    this.ackIntervalMs = options.ackIntervalMs ?? 500;
    this.ack = options.ack ?? true;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 15000;
    this.onEvent = options.onEvent ?? null;
    this.onStateChange = options.onStateChange ?? null;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;

    this.state = "idle";
    this.error = null;
    this.info = null;
    this.agents = [];
    this.agentDetails = null;
    this.sessions = new Map();

    this._ws = null;
    this._ticketing = null; // {abort} while a ticket is being fetched for the next socket
    this._wanted = false; // connect() was called and close() was not
    this._fatal = false; // the server refused us (unauthorized): do not retry
    this._attempt = 0;
    this._retryTimer = null;
    this._ackTimer = null;
    this._waiters = []; // connect() promises
    this._creates = []; // pending createSession() requests, in order
    this._lists = []; // pending listAgents() requests
    this._onOnline = () => this.retryNow();
  }

  // -- connection ---------------------------------------------------------------------

  connect() {
    this._wanted = true;
    this._fatal = false;
    if (this.state === "connected") return Promise.resolve(this.info);
    const waiting = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    if (!this._ws && !this._retryTimer && !this._ticketing) {
      this._attempt = 0;
      this._open();
    }
    globalThis.addEventListener?.("online", this._onOnline);
    return waiting;
  }

  close() {
    this._wanted = false;
    this._clearRetry();
    this._stopTicketing();
    globalThis.removeEventListener?.("online", this._onOnline);
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      this._flushAcks();
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      ws.close(1000, "client closed");
    }
    this._failPending(problem("The client was closed.", "closed"));
    for (const waiter of this._waiters.splice(0)) waiter.reject(problem("Closed.", "closed"));
    this._setState("offline");
  }

  retryNow() {
    if (!this._wanted || this._ws || this._ticketing || this._fatal) return;
    this._clearRetry();
    this._open();
  }

  _open() {
    this._setState(this._attempt === 0 && this.state !== "reconnecting" ? "connecting" : "reconnecting");
    if (!this.token && !this.ticketUrl && !this.getTicket) {
      this._dial(this.url);
      return;
    }
    // A fresh ticket for every socket: each one opens a single connection.
    const controller = new AbortController();
    const run = { abort: () => controller.abort() };
    this._ticketing = run;
    let timer;
    const deadline = new Promise((resolve, reject) => {
      timer = setTimeout(() => {
        controller.abort();
        reject(problem("No ticket came in time; the server may be overloaded.", "timeout"));
      }, this.requestTimeoutMs);
    });
    Promise.race([this._fetchTicket(controller.signal), deadline])
      .finally(() => clearTimeout(timer))
      .then(
        (ticket) => {
          if (this._ticketing !== run) return; // closed (or restarted) meanwhile
          this._ticketing = null;
          this._dial(withTicket(this.url, ticket));
        },
        (error) => {
          if (this._ticketing !== run) return;
          this._ticketing = null;
          this._ticketFailed(error);
        },
      );
  }

  /** A ticket from getTicket(), or from POST ticketUrl; rejects with an Error with `.code`. */
  async _fetchTicket(signal) {
    if (this.getTicket) {
      const ticket = await this.getTicket({ url: this.url, signal });
      if (typeof ticket !== "string" || !ticket) {
        throw problem("getTicket() gave no ticket (it must resolve to a non-empty string).", "ticket_failed");
      }
      return ticket;
    }
    const url = this.ticketUrl ?? defaultTicketUrl(this.url);
    let response;
    let body = null;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: this.token ? { Authorization: `Bearer ${this.token}` } : {},
        cache: "no-store",
        credentials: this.token ? "same-origin" : "include",
        signal,
      });
      body = await response.json().catch(() => null);
    } catch {
      throw problem(
        `Could not get a ticket from ${url}: the server is unreachable, or it does not allow this page's origin.`,
        "network_error",
      );
    }
    if (response.ok && typeof body?.ticket === "string" && body.ticket) return body.ticket;
    const said = typeof body?.message === "string" ? body.message : "";
    const error =
      response.status === 401
        ? problem(said || "The server did not accept the token.", "unauthorized")
        : problem(said || `${url} answered HTTP ${response.status} without a ticket.`, body?.error || "ticket_failed");
    error.status = response.status;
    const retryAfter = Number(response.headers.get("Retry-After"));
    if (retryAfter > 0) error.retryAfterMs = retryAfter * 1000;
    throw error;
  }

  _stopTicketing() {
    const run = this._ticketing;
    this._ticketing = null;
    run?.abort();
  }

  /** No ticket: a refused credential (401) or origin (403) stops; anything else is retried. */
  _ticketFailed(error) {
    if (!(error instanceof Error)) error = problem(String(error), "ticket_failed");
    const refused = error?.code === "unauthorized" || error?.status === 401;
    if (!refused && error?.status !== 403) {
      this._scheduleRetry(error);
      return;
    }
    if (refused) error.code = "unauthorized";
    this._fatal = true;
    this.error = error;
    for (const waiter of this._waiters.splice(0)) waiter.reject(error);
    this._setState(refused ? "unauthorized" : "offline", { error });
  }

  _dial(url) {
    let ws;
    try {
      ws = new this.WebSocket(url);
    } catch (error) {
      this._scheduleRetry(error);
      return;
    }
    this._ws = ws;
    ws.onmessage = (message) => this._onFrame(message.data);
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._stopAcks();
      this._failPending(problem("The connection closed.", "connection_closed"));
      this._scheduleRetry(event);
    };
    ws.onerror = () => {}; // a close event always follows
  }

  _scheduleRetry(cause) {
    const error = cause instanceof Error ? cause : undefined; // a ticket that could not be had
    const why = error ? { error } : {};
    if (!this._wanted || this._fatal || !this.reconnect || this._attempt >= this.maxAttempts) {
      for (const waiter of this._waiters.splice(0)) {
        waiter.reject(problem("Could not connect to the server.", "offline"));
      }
      this._setState("offline", why);
      return;
    }
    if (globalThis.navigator && globalThis.navigator.onLine === false) {
      this._setState("offline", why); // the "online" event calls retryNow()
      return;
    }
    const { initialMs, maxMs, factor, jitter } = this.backoff;
    const ceiling = Math.min(maxMs, initialMs * factor ** this._attempt);
    const delayMs = Math.max(Math.round(ceiling * (1 - jitter * Math.random())), error?.retryAfterMs ?? 0);
    this._attempt += 1;
    this._setState("reconnecting", { delayMs, ...why });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._open();
    }, delayMs);
  }

  _clearRetry() {
    if (this._retryTimer) clearTimeout(this._retryTimer);
    this._retryTimer = null;
  }

  _setState(state, extra = {}) {
    const previous = this.state;
    if (state === previous && extra.delayMs === undefined) return;
    this.state = state;
    const detail = { state, previous, attempt: this._attempt, ...extra };
    try {
      this.onStateChange?.(detail);
    } catch (error) {
      globalThis.reportError ? globalThis.reportError(error) : console.error(error);
    }
    this.dispatchEvent(new CustomEvent("state", { detail }));
  }

  // -- inbound --------------------------------------------------------------------------

  _onFrame(data) {
    let event;
    try {
      event = JSON.parse(data);
      if (!event || typeof event.event !== "string") throw new Error("no event name");
    } catch (error) {
      this.dispatchEvent(new CustomEvent("frame-error", { detail: { error, data } }));
      return;
    }
    if (event.event === "system.connected") {
      this._onConnected(event);
      return;
    }
    const sid = event.session_id;
    const verdict = sid && Number.isInteger(event.seq) ? this._accept(sid, event) : null;
    if (verdict === "duplicate") return;
    this._deliver(event);
    if (verdict === "resumed") {
      this.sessions.get(sid).replaying = false;
      this.dispatchEvent(new CustomEvent("resumed", { detail: event }));
    }
    this._afterDelivery(event, verdict);
  }

  _onConnected(event) {
    const wasReconnect = this._attempt > 0 || this.sessions.size > 0;
    this.info = event.metadata || {};
    this.agents = Array.isArray(this.info.agents) ? this.info.agents : [];
    this._attempt = 0;
    this.error = null;
    // Re-attach before anyone can send: frames are handled in order by the server.
    for (const session of this.sessions.values()) this._reattach(session);
    this._setState("connected", { reconnected: wasReconnect });
    this._scheduleAck(); // anything received but not acknowledged before the drop
    this._deliver(event);
    for (const waiter of this._waiters.splice(0)) waiter.resolve(this.info);
  }

  /** user.reconnect from the session's last seq: the server replays what came after it. */
  _reattach(session) {
    session.replaying = true; // until the agent.session_resumed that answers this
    session.replayFrom = session.lastSeq;
    session.replayCount = 0; // session events since the user.reconnect
    session.knownSeq = Math.max(session.knownSeq ?? 0, session.lastSeq);
    this._send({ event: "user.reconnect", session_id: session.id, content: { last_seq: session.lastSeq } });
  }

  /**
   * Whether an agent.session_resumed that came during a replay answers this client's own
   * user.reconnect. The server keeps every resumed in its replay buffer and sends it to
   * every attached connection, so a replay from seq 0 holds those of earlier re-attaches
   * (a reload before, another tab): each looks like an answer to one made from the same
   * point, so one the caller knew of before (seq <= knownSeq) is not this one.
   */
  _answersReattach(session, event) {
    const meta = event.metadata || {};
    // This server names the connection that reconnected; the checks after it serve older ones.
    if (meta.connection_id !== undefined) return meta.connection_id === this.info?.connection_id;
    if (event.seq <= session.knownSeq) return false;
    if (Number.isInteger(meta.replayed) && meta.replayed !== session.replayCount) return false;
    return !(Number.isInteger(meta.last_seq) && meta.last_seq > session.replayFrom);
  }

  /**
   * Seq bookkeeping for one session event: "duplicate" (dropped), "created" (a session
   * this client did not know until now), "resumed" (the end of its replay) or "ok".
   */
  _accept(sid, event) {
    let session = this.sessions.get(sid);
    let verdict = "ok";
    if (!session) {
      if (event.event !== "agent.session_created") return verdict; // not ours to track
      session = { id: sid, agent: event.content?.agent ?? event.metadata?.agent, lastSeq: 0, ackedSeq: 0, knownSeq: 0 };
      this.sessions.set(sid, session);
      verdict = "created";
    }
    if (session.replaying) {
      if (event.event === "agent.session_resumed" && this._answersReattach(session, event)) verdict = "resumed";
      else session.replayCount += 1;
    }
    // The server replays missed events in seq order before agent.session_resumed, so
    // anything at or below the highest seq seen is a duplicate.
    if (event.seq <= session.lastSeq) return "duplicate";
    session.lastSeq = event.seq;
    this._scheduleAck();
    return verdict;
  }

  _deliver(event) {
    try {
      this.onEvent?.(event);
    } catch (error) {
      globalThis.reportError ? globalThis.reportError(error) : console.error(error);
    }
    // Listener errors are reported by dispatchEvent itself and never stop the client.
    this.dispatchEvent(new CustomEvent("event", { detail: event }));
    this.dispatchEvent(new CustomEvent(event.event, { detail: event }));
  }

  _afterDelivery(event, verdict) {
    const sid = event.session_id;
    const code = event.metadata?.code;
    switch (event.event) {
      case "agent.session_created":
        // Replies come in request order. A replayed one (of a session attached from seq 0,
        // e.g. after a reload) is not an answer: the session was known before it.
        if (verdict === "created" && this._creates.length) this._settle(this._creates, (p) => p.resolve(sid));
        break;
      case "system.agents":
        this.agentDetails = Array.isArray(event.content) ? event.content : [];
        for (const pending of this._lists.splice(0)) pending.resolve(this.agentDetails);
        this._clearTimers(this._lists);
        break;
      case "agent.session_end":
        this.sessions.delete(sid);
        break;
      case "system.error":
        if (code === "unauthorized") this._fatal = true;
        if (sid && code === "session_not_found") this.sessions.delete(sid);
        if (!sid && CREATE_ERRORS.has(code) && this._creates.length) {
          this._settle(this._creates, (p) =>
            p.reject(problem(String(event.content ?? "The session was not created."), code, event)),
          );
        }
        break;
      default:
    }
  }

  // -- acks -----------------------------------------------------------------------------

  _scheduleAck() {
    if (!this.ack || this._ackTimer || this.state !== "connected") return;
    this._ackTimer = setTimeout(() => {
      this._ackTimer = null;
      this._flushAcks();
    }, this.ackIntervalMs);
  }

  _flushAcks() {
    if (!this.ack) return;
    for (const session of this.sessions.values()) {
      if (session.lastSeq > session.ackedSeq && this._isOpen()) {
        this._send({ event: "user.ack", session_id: session.id, content: { last_seq: session.lastSeq } });
        session.ackedSeq = session.lastSeq;
      }
    }
  }

  _stopAcks() {
    if (this._ackTimer) clearTimeout(this._ackTimer);
    this._ackTimer = null;
  }

  // -- outbound -------------------------------------------------------------------------

  _isOpen() {
    return !!this._ws && this._ws.readyState === 1;
  }

  _send(frame) {
    if (!this._isOpen()) {
      throw problem("Not connected to the server; wait for the connection to come back.", "not_connected");
    }
    this._ws.send(JSON.stringify({ ...frame, timestamp: new Date().toISOString() }));
  }

  _sendConnected(frame) {
    if (this.state !== "connected") {
      throw problem("Not connected to the server; wait for the connection to come back.", "not_connected");
    }
    this._send(frame);
  }

  _request(queue, frame, what) {
    return new Promise((resolve, reject) => {
      const pending = { resolve, reject };
      pending.timer = setTimeout(() => {
        const index = queue.indexOf(pending);
        if (index >= 0) queue.splice(index, 1);
        reject(problem(`The server did not answer ${what} in time.`, "timeout"));
      }, this.requestTimeoutMs);
      try {
        this._sendConnected(frame);
      } catch (error) {
        clearTimeout(pending.timer);
        reject(error);
        return;
      }
      queue.push(pending);
    });
  }

  _settle(queue, action) {
    const pending = queue.shift();
    clearTimeout(pending.timer);
    action(pending);
  }

  _clearTimers(list) {
    for (const pending of list) clearTimeout(pending.timer);
  }

  _failPending(error) {
    for (const queue of [this._creates, this._lists]) {
      for (const pending of queue.splice(0)) {
        clearTimeout(pending.timer);
        pending.reject(error);
      }
    }
  }

  createSession(agentName) {
    const frame = { event: "user.create_session" };
    if (agentName) frame.content = { agent: agentName };
    return this._request(this._creates, frame, "user.create_session");
  }

  listAgents() {
    return this._request(this._lists, { event: "user.list_agents" }, "user.list_agents");
  }

  send(sessionId, text) {
    this._sendConnected({ event: "user.message", session_id: sessionId, content: String(text) });
  }

  cancel(sessionId) {
    this._sendConnected({ event: "user.cancel", session_id: sessionId });
  }

  respond(sessionId, stepId, approved, feedback) {
    const content = { approved: Boolean(approved) };
    if (feedback !== undefined && feedback !== null && feedback !== "") content.feedback = String(feedback);
    this._sendConnected({ event: "user.response", session_id: sessionId, step_id: stepId, content });
  }

  endSession(sessionId) {
    this._sendConnected({ event: "user.end_session", session_id: sessionId });
  }

  /**
   * Adopts a session by id, e.g. one a page kept across a reload. From lastSeq 0 the server
   * replays every event it still buffers for it; events it no longer holds are named in
   * agent.session_resumed metadata.replay_gap. knownSeq (e.g. the lastSeq the page kept)
   * marks the events the caller had seen before: an agent.session_resumed among them is an
   * older re-attach's, not the end of this replay. A session the server no longer has
   * answers system.error "session_not_found" and is forgotten, like any other. Attaching a
   * session that is already known does nothing.
   */
  attach(sessionId, { agent, lastSeq = 0, knownSeq = 0 } = {}) {
    if (this.sessions.has(sessionId)) return;
    const session = { id: sessionId, agent, lastSeq, ackedSeq: lastSeq, knownSeq: Math.max(lastSeq, knownSeq) };
    this.sessions.set(sessionId, session);
    // Not connected yet: _onConnected re-attaches every known session, this one included.
    if (this.state === "connected") this._reattach(session);
  }

  // -- helpers --------------------------------------------------------------------------

  on(type, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  lastSeq(sessionId) {
    return this.sessions.get(sessionId)?.lastSeq ?? 0;
  }

  replaying(sessionId) {
    return this.sessions.get(sessionId)?.replaying ?? false;
  }
}

export default MyAgentClient;
