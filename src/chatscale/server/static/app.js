// chatscale's chat page: no build step, no dependencies.
// Resuming: every SSE event carries an id; the page remembers the last one of each stream.
// EventSource sends it back as Last-Event-ID on its own reconnects; when the page has to open
// a new EventSource (server restart, `reconnect` event) it passes ?after=<last id>.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  conversation: null,   // current conversation id
  followers: new Map(), // stream id -> Follower
  pending: new Set(),   // client_request_ids of sends in flight (to ignore our own "started")
};

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (init.body !== undefined) init.headers = { "content-type": "application/json" };
  const response = await fetch(path, init);
  let payload = null;
  try { payload = await response.json(); } catch (_) { payload = null; }
  if (!response.ok) {
    throw new ApiError(response.status, (payload && payload.error) || `HTTP ${response.status}`);
  }
  return payload;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setConnection(ok, text) {
  const el = $("connection");
  el.dataset.state = ok ? "ok" : "retrying";
  el.textContent = text;
}

function banner(text) {
  const el = $("banner");
  el.textContent = text || "";
  el.hidden = !text;
}

function bubble(role, text) {
  const el = document.createElement("div");
  el.className = `msg ${role}`;
  el.dataset.role = role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  el.appendChild(body);
  $("messages").appendChild(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

function note(el, text) {
  let n = el.querySelector(".note");
  if (!n) { n = document.createElement("span"); n.className = "note"; el.appendChild(n); }
  n.textContent = text;
}

// Follows one stream to its final event, across dropped connections and restarts.
class Follower {
  constructor(streamId, element) {
    this.id = streamId;
    this.el = element;
    this.el.dataset.streamId = streamId;
    this.el.classList.add("streaming");
    this.text = "";
    this.lastId = null;
    this.failures = 0;
    this.finished = false;
    state.followers.set(streamId, this);
    updateStop();
    this.open();
  }

  url() {
    const base = `/api/chat/stream/${encodeURIComponent(this.id)}`;
    return this.lastId === null ? base : `${base}?after=${encodeURIComponent(this.lastId)}`;
  }

  open() {
    if (this.finished) return;
    const es = new EventSource(this.url());
    this.es = es;
    const seen = (event) => {
      this.failures = 0;
      if (event.lastEventId) this.lastId = event.lastEventId;
      setConnection(true, "connected");
    };
    es.addEventListener("delta", (event) => {
      seen(event);
      this.text += JSON.parse(event.data).text;
      this.el.querySelector(".text").textContent = this.text;
      this.el.scrollIntoView({ block: "end" });
    });
    for (const type of ["status", "tool"]) {
      es.addEventListener(type, (event) => {
        seen(event);
        const data = JSON.parse(event.data);
        note(this.el, type === "tool" ? `tool: ${data.name || "…"}` : data.status || data.message || "");
      });
    }
    es.addEventListener("done", (event) => {
      seen(event);
      const data = JSON.parse(event.data);
      // The displayed text is what the deltas built; the final text is kept for comparison.
      this.el.dataset.finalText = data.text;
      if (data.text !== this.text) console.warn("stream", this.id, "text differs from final");
      this.finish("done", data.finish_reason && data.finish_reason !== "stop" ? `finished: ${data.finish_reason}` : "");
    });
    es.addEventListener("aborted", (event) => { seen(event); this.finish("aborted", "stopped"); });
    es.addEventListener("error", (event) => {
      if (event.data === undefined) return; // a connection error, handled by onerror below
      seen(event);
      const data = JSON.parse(event.data);
      this.el.classList.add("error");
      this.finish("error", `error: ${data.message}`);
    });
    es.addEventListener("reconnect", () => { es.close(); this.retry(100); });
    es.onerror = () => {
      if (this.finished) return;
      setConnection(false, "reconnecting…");
      // CONNECTING: the browser retries by itself and sends Last-Event-ID. CLOSED (e.g. a 503
      // while an instance restarts): open a new EventSource with ?after=.
      if (es.readyState === EventSource.CLOSED) this.retry();
    };
  }

  async retry(delay) {
    this.failures += 1;
    const wait = delay ?? Math.min(5000, 250 * 2 ** Math.min(this.failures, 5));
    await sleep(wait);
    if (this.finished) return;
    try {
      // A 404 means the stream is gone (expired or not ours): stop instead of retrying forever.
      await api(`/api/chat/stream/${encodeURIComponent(this.id)}/status`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.finish("error", "this answer is no longer available");
        return;
      }
    }
    this.open();
  }

  finish(status, text) {
    if (this.finished) return;
    this.finished = true;
    if (this.es) this.es.close();
    this.el.classList.remove("streaming");
    this.el.dataset.status = status;
    if (text) note(this.el, text);
    state.followers.delete(this.id);
    updateStop();
    loadConversations();
  }

  close() {
    this.finished = true;
    if (this.es) this.es.close();
    state.followers.delete(this.id);
    updateStop();
  }
}

function updateStop() {
  const running = state.followers.size > 0;
  $("stop").hidden = !running;
}

async function loadModels() {
  const select = $("model");
  try {
    const { models, default: fallback } = await api("/api/models");
    select.replaceChildren(...models.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.label;
      option.selected = m.id === fallback;
      return option;
    }));
    if (models.some((m) => m.demo)) select.title = "The demo model writes offline sample text";
  } catch (error) {
    banner(`Cannot list models: ${error.message}`);
  }
}

async function loadConversations() {
  let conversations;
  try {
    ({ conversations } = await api("/api/conversations"));
  } catch (_) {
    return;
  }
  const live = new Set();
  try {
    const { streams } = await api("/api/chat/active");
    for (const s of streams) live.add(s.conversation_id);
  } catch (_) { /* the list is still useful without live markers */ }
  $("conversations").replaceChildren(...conversations.map((c) => {
    const li = document.createElement("li");
    li.textContent = c.title || "Untitled";
    li.dataset.id = c.id;
    li.classList.toggle("current", c.id === state.conversation);
    li.classList.toggle("live", live.has(c.id));
    li.addEventListener("click", () => openConversation(c.id));
    return li;
  }));
}

async function openConversation(id) {
  for (const follower of [...state.followers.values()]) follower.close();
  state.conversation = id;
  history.replaceState(null, "", id ? `#c=${encodeURIComponent(id)}` : "#");
  $("messages").replaceChildren();
  banner("");
  if (id) {
    try {
      // Active streams first: a stream that ends in between is then found stored.
      const { streams } = await api("/api/chat/active");
      const conversation = await api(`/api/conversations/${encodeURIComponent(id)}`);
      const stored = new Set();
      for (const m of conversation.messages) {
        const el = bubble(m.role, m.content);
        if (m.stream_id) { stored.add(m.stream_id); el.dataset.streamId = m.stream_id; el.dataset.status = m.status || "done"; }
        if (m.status && m.status !== "done") note(el, m.status === "aborted" ? "stopped" : `error: ${m.error || ""}`);
      }
      for (const s of streams) {
        if (s.conversation_id === id && !stored.has(s.stream_id) && !state.followers.has(s.stream_id)) {
          new Follower(s.stream_id, bubble("assistant", ""));
        }
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) state.conversation = null;
      else banner(`Cannot load the conversation: ${error.message}`);
    }
  }
  loadConversations();
}

async function send(text) {
  const requestId = crypto.randomUUID();
  state.pending.add(requestId);
  const body = JSON.stringify({
    message: text,
    conversation_id: state.conversation || undefined,
    model: $("model").value || undefined,
    client_request_id: requestId,
  });
  bubble("user", text);
  const answer = bubble("assistant", "");
  // The same client_request_id makes a retried POST return the same stream, never a second one.
  for (let attempt = 0; ; attempt += 1) {
    try {
      const started = await api("/api/chat", { method: "POST", body });
      if (state.conversation !== started.conversation_id) {
        state.conversation = started.conversation_id;
        history.replaceState(null, "", `#c=${encodeURIComponent(started.conversation_id)}`);
      }
      if (!state.followers.has(started.stream_id)) new Follower(started.stream_id, answer);
      banner("");
      break;
    } catch (error) {
      const retriable = !(error instanceof ApiError) || error.status === 409 || error.status >= 502;
      if (!retriable || attempt >= 8) {
        answer.classList.add("error");
        note(answer, `not sent: ${error.message}`);
        break;
      }
      setConnection(false, "retrying…");
      await sleep(Math.min(4000, 300 * 2 ** attempt));
    }
  }
  state.pending.delete(requestId);
  loadConversations();
}

// Announcements of this session's streams starting and ending, from any tab or instance.
function listenForEvents() {
  const es = new EventSource("/api/events");
  es.addEventListener("started", (event) => {
    const s = JSON.parse(event.data);
    if (state.pending.has(s.client_request_id) || state.followers.has(s.stream_id)) return;
    if (s.conversation_id === state.conversation) {
      if (s.message) bubble("user", s.message);
      new Follower(s.stream_id, bubble("assistant", ""));
    } else if (state.conversation === null && !$("messages").children.length) {
      openConversation(s.conversation_id); // an empty tab shows what another tab started
      return;
    }
    loadConversations();
  });
  es.addEventListener("ended", () => loadConversations());
  es.addEventListener("reconnect", () => { es.close(); setTimeout(listenForEvents, 200); });
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) setTimeout(listenForEvents, 1000);
  };
}

function init() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("input").value.trim();
    if (!text) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", async () => {
    for (const id of state.followers.keys()) {
      try { await api(`/api/chat/stream/${encodeURIComponent(id)}/abort`, { method: "POST" }); }
      catch (error) { banner(`Cannot stop: ${error.message}`); }
    }
  });
  $("new-chat").addEventListener("click", () => openConversation(null));
  const match = /^#c=(.+)$/.exec(location.hash);
  loadModels();
  openConversation(match ? decodeURIComponent(match[1]) : null);
  listenForEvents();
}

init();
