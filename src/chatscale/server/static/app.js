// chatscale's chat page: no build step, no dependencies.
// Resuming: every SSE event carries an id; the page remembers the last one of each stream.
// EventSource sends it back as Last-Event-ID on its own reconnects; when the page has to open
// a new EventSource (server restart, `reconnect` event) it passes ?after=<last id>.
// Each answer this tab follows keeps its resume token (sessionStorage): if the server loses
// the session (its Redis store was reset), the token still proves the answer is ours.
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

// Running answers of this tab: stream id -> {token, conversation, message}. Kept until the
// answer ends, so a reload (or a lost session) can still resume them.
const saved = {
  key: "chatscale.streams",
  all() {
    try { return JSON.parse(sessionStorage.getItem(this.key) || "{}"); } catch (_) { return {}; }
  },
  write(entries) {
    try { sessionStorage.setItem(this.key, JSON.stringify(entries)); } catch (_) { /* full or off */ }
  },
  remember(streamId, token, conversation, message) {
    if (!token) return;
    const entries = this.all();
    const known = entries[streamId] || {};
    entries[streamId] = { token, conversation: conversation || known.conversation, message: message || known.message };
    this.write(entries);
  },
  forget(streamId) {
    const entries = this.all();
    if (!(streamId in entries)) return;
    delete entries[streamId];
    this.write(entries);
  },
  token(streamId) { return (this.all()[streamId] || {}).token || null; },
};

const LOST_CONVERSATION = "The server lost this conversation's history (its Redis store was reset); the answer below is what was received.";
const LOST_ANSWER = "The server no longer has this answer (it expired, or its Redis store was reset); the text above is what was received.";

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
  constructor(streamId, element, token) {
    this.id = streamId;
    this.token = token || saved.token(streamId);
    this.missing = 0;
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

  url(path = "") {
    const query = new URLSearchParams();
    if (this.lastId !== null && !path) query.set("after", this.lastId);
    if (this.token) query.set("token", this.token);
    const base = `/api/chat/stream/${encodeURIComponent(this.id)}${path}`;
    const search = query.toString();
    return search ? `${base}?${search}` : base;
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
      // The displayed text is what the deltas built (the final event carries no copy).
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
      await api(this.url("/status"));
      this.missing = 0;
    } catch (error) {
      // After a Redis reset the producing instance rebuilds its streams within about a
      // second: with a token, a 404 is looked at again a few times before giving up.
      if (error instanceof ApiError && error.status === 404 && this.token && this.missing < 6) {
        this.missing += 1;
        this.retry(500);
        return;
      }
      // A 404 (or a refused token) means the stream is gone: say what was lost and stop.
      if (error instanceof ApiError && (error.status === 404 || error.status === 403)) {
        this.finish("error", await explainLoss());
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
    saved.forget(this.id);
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

// What a stream's 404 means for the reader: its whole conversation is gone (a Redis reset)
// or only this answer (it expired).
async function explainLoss() {
  if (!state.conversation) return LOST_ANSWER;
  try {
    await api(`/api/conversations/${encodeURIComponent(state.conversation)}`);
    return LOST_ANSWER;
  } catch (error) {
    return error instanceof ApiError && error.status === 404 ? LOST_CONVERSATION : LOST_ANSWER;
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
    for (const s of streams) {
      live.add(s.conversation_id);
      const follower = state.followers.get(s.stream_id);
      if (follower) {
        follower.token = follower.token || s.resume_token; // one another tab started
        saved.remember(s.stream_id, s.resume_token, s.conversation_id);
      }
    }
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
          saved.remember(s.stream_id, s.resume_token, s.conversation_id);
          new Follower(s.stream_id, bubble("assistant", ""), s.resume_token);
        }
      }
      // Answers this tab started that the server does not list (its session was lost).
      followSaved(id, stored);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        // The conversation is gone; answers this tab started in it may still be running.
        if (followSaved(id, new Set())) banner(LOST_CONVERSATION);
        else {
          state.conversation = null;
          history.replaceState(null, "", "#");
          banner("The server has no record of this conversation (its Redis store was reset, or it expired).");
        }
      } else banner(`Cannot load the conversation: ${error.message}`);
    }
  }
  loadConversations();
}

// Follows the saved (token-holding) answers of conversation `id` not stored or followed yet;
// true when there was one.
function followSaved(id, stored) {
  let found = false;
  for (const [streamId, entry] of Object.entries(saved.all())) {
    if (entry.conversation !== id) continue;
    if (stored.has(streamId)) { saved.forget(streamId); continue; } // ended while away
    found = true;
    if (state.followers.has(streamId)) continue;
    if (entry.message && !stored.size) bubble("user", entry.message);
    new Follower(streamId, bubble("assistant", ""), entry.token);
  }
  return found;
}

async function send(text) {
  const requestId = crypto.randomUUID();
  state.pending.add(requestId);
  let conversation = state.conversation || undefined;
  const model = $("model").value || undefined;
  bubble("user", text);
  const answer = bubble("assistant", "");
  // The same client_request_id makes a retried POST return the same stream, never a second one.
  for (let attempt = 0; ; attempt += 1) {
    try {
      const body = JSON.stringify({
        message: text, conversation_id: conversation, model, client_request_id: requestId,
      });
      const started = await api("/api/chat", { method: "POST", body });
      if (state.conversation !== started.conversation_id) {
        state.conversation = started.conversation_id;
        history.replaceState(null, "", `#c=${encodeURIComponent(started.conversation_id)}`);
      }
      saved.remember(started.stream_id, started.resume_token, started.conversation_id, text);
      if (!state.followers.has(started.stream_id)) new Follower(started.stream_id, answer, started.resume_token);
      banner("");
      break;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404 && conversation) {
        // The conversation is gone (its Redis data was lost, or it was deleted): the server
        // creates none under a given id, so the message starts a new one.
        conversation = undefined;
        continue;
      }
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
    for (const follower of [...state.followers.values()]) {
      try { await api(follower.url("/abort"), { method: "POST" }); }
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
