// The server's documented REST API (docs/server.md), and nothing else.

const KEY_STORE = "modelplex.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || null;
  }
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
}

function headers(json) {
  const h = {};
  const key = localStorage.getItem(KEY_STORE);
  if (key) h.Authorization = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function call(method, path, body) {
  const resp = await fetch(path, {
    method, headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

export const api = {
  models: (refresh) => call("GET", "/api/models" + (refresh ? "?refresh=true" : "")),
  search: (params) => call("GET", "/api/models/search?" + new URLSearchParams(params)),
  providers: () => call("GET", "/api/providers"),
  // every conversation of the key (pages of 1000, newest first; at most 10 pages)
  conversations: async () => {
    const all = [];
    let after = null;
    for (let pages = 0; pages < 10; pages++) {
      const query = new URLSearchParams({ limit: "1000" });
      if (after) query.set("after", after);
      const page = await call("GET", "/api/conversations?" + query);
      all.push(...page.conversations);
      if (!page.has_more || !page.last_id) break;
      after = page.last_id;
    }
    return { conversations: all };
  },
  conversation: (id) => call("GET", "/api/conversations/" + encodeURIComponent(id)),
  createConversation: (body) => call("POST", "/api/conversations", body),
  updateConversation: (id, changes) =>
    call("PATCH", "/api/conversations/" + encodeURIComponent(id), changes),
  deleteConversation: (id) => call("DELETE", "/api/conversations/" + encodeURIComponent(id)),
};

/**
 * POST /api/chat and call `on(event, data)` for each Server-Sent Event (`chunk`, `done`,
 * `error`) as it arrives. `signal` aborts the request (the server then cancels the upstream).
 */
export async function streamChat(body, on, signal) {
  const resp = await fetch("/api/chat", {
    method: "POST", headers: headers(true), body: JSON.stringify(body), signal,
  });
  if (!resp.ok) {
    let data = null;
    try { data = await resp.json(); } catch { /* not JSON */ }
    throw new ApiError(resp.status, data);
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) on(name, JSON.parse(data.join("\n")));
    }
  }
}
