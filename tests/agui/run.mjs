// The official AG-UI client (@ag-ui/client's HttpAgent) against POST /agui/{agent}: one
// run per step of a plan, all on one thread, then what it saw as one JSON line.
//
//   node run.mjs NPM_ROOT URL PLAN [TOKEN]
//
// NPM_ROOT holds node_modules/@ag-ui/client (the Makefile installs it under .venv/npm).
// PLAN is JSON: [{"message": "text"} | {"resume": payload} | {"cancel": true}, ...]; a
// resume answers every interrupt the previous run left open with that payload, a cancel
// answers them with status "cancelled".
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const [npmRoot, url, planText, token] = process.argv.slice(2);
const require = createRequire(resolve(npmRoot, "package.json"));
const { HttpAgent } = require("@ag-ui/client");

const agent = new HttpAgent({
  url,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});
const runs = [];
for (const step of JSON.parse(planText)) {
  const params = {};
  if (step.message !== undefined) {
    agent.addMessage({ id: randomUUID(), role: "user", content: step.message });
  } else {
    params.resume = agent.pendingInterrupts.map((interrupt) =>
      step.cancel
        ? { interruptId: interrupt.id, status: "cancelled" }
        : { interruptId: interrupt.id, status: "resolved", payload: step.resume },
    );
  }
  const events = [];
  let error = null;
  try {
    await agent.runAgent(params, {
      onEvent: ({ event }) => {
        events.push(event);
      },
    });
  } catch (exc) {
    error = String(exc?.message ?? exc);
  }
  runs.push({
    events,
    error,
    pendingInterrupts: structuredClone(agent.pendingInterrupts),
    messages: structuredClone(agent.messages),
  });
}
console.log(JSON.stringify({ threadId: agent.threadId, runs }));
