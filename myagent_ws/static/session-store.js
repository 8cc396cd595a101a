// Which sessions this tab has open, kept in sessionStorage so that a reload can re-attach
// them: each session's id and agent name, and which one was shown. Only these facts are
// kept, never the transcript: after a reload the page re-attaches from seq 0 and the server
// replays what it still buffers. sessionStorage is per tab, so a second tab starts with no
// sessions.

const KEY = "myagent-console.sessions.v1";

/** {sessions: [{id, agent}], active}; empty when nothing (or nothing valid) is kept. */
export function loadSessions(storage = globalThis.sessionStorage) {
  try {
    const saved = JSON.parse(storage?.getItem(KEY) || "null");
    const sessions = Array.isArray(saved?.sessions) ? saved.sessions : [];
    return {
      sessions: sessions
        .filter((s) => s && typeof s.id === "string" && s.id)
        .map((s) => ({ id: s.id, agent: typeof s.agent === "string" ? s.agent : undefined })),
      active: typeof saved?.active === "string" ? saved.active : null,
    };
  } catch {
    return { sessions: [], active: null }; // storage blocked or garbled: start afresh
  }
}

/** Keeps the given sessions; an empty list clears the key. */
export function saveSessions(sessions, active, storage = globalThis.sessionStorage) {
  try {
    if (!sessions.length) storage?.removeItem(KEY);
    else storage?.setItem(KEY, JSON.stringify({ sessions, active }));
  } catch {
    // Storage blocked (privacy settings) or full: the page works, a reload starts afresh.
  }
}
