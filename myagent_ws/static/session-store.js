// Which sessions this tab has open, kept in sessionStorage so that a reload can re-attach
// them: each session's id, agent name and lastSeq (the highest seq the page had shown), and
// which one was shown. Only these facts are kept, never the transcript: after a reload the
// page re-attaches from seq 0 and the server replays what it still buffers; lastSeq says
// which of those events the page had shown before. Chromium copies a tab's sessionStorage
// into a tab opened from it (window.open, "Duplicate"), so that one restores them too.

const KEY = "myagent-console.sessions.v1";

/** {sessions: [{id, agent, lastSeq}], active}; empty when nothing (or nothing valid) is kept. */
export function loadSessions(storage = globalThis.sessionStorage) {
  try {
    const saved = JSON.parse(storage?.getItem(KEY) || "null");
    const sessions = Array.isArray(saved?.sessions) ? saved.sessions : [];
    return {
      sessions: sessions
        .filter((s) => s && typeof s.id === "string" && s.id)
        .map((s) => ({
          id: s.id,
          agent: typeof s.agent === "string" ? s.agent : undefined,
          lastSeq: Number.isInteger(s.lastSeq) && s.lastSeq > 0 ? s.lastSeq : 0,
        })),
      active: typeof saved?.active === "string" ? saved.active : null,
    };
  } catch {
    return { sessions: [], active: null }; // storage blocked or garbled: start afresh
  }
}

/** Keeps the given sessions ({id, agent, lastSeq}); an empty list clears the key. */
export function saveSessions(sessions, active, storage = globalThis.sessionStorage) {
  try {
    if (!sessions.length) storage?.removeItem(KEY);
    else storage?.setItem(KEY, JSON.stringify({ sessions, active }));
  } catch {
    // Storage blocked (privacy settings) or full: the page works, a reload starts afresh.
  }
}
