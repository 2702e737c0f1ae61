// chatscale's chat page: no build step; third-party code is vendored (static/vendor/).
// Resuming: every SSE event carries an id; the page remembers the last one of each stream.
// EventSource sends it back as Last-Event-ID on its own reconnects; when the page has to open
// a new EventSource (server restart, `reconnect` event) it passes ?after=<last id>.
// Each answer this tab follows keeps its resume token (sessionStorage): if the server loses
// the session (its Redis store was reset), the token still proves the answer is ours.
import { codeOf, renderMarkdown } from "./markdown.js";
import {
  ANSWER_RUNNING, ApiError, CONVERSATION_GONE, LOST_ANSWER, LOST_CONVERSATION, retryAfterOf, whyAnswerFailed, whyNotSent,
} from "./words.js";

const $ = (id) => document.getElementById(id);
const state = {
  conversation: null,   // current conversation id
  title: "",            // its title
  followers: new Map(), // stream id -> Follower (all in the current conversation)
  pending: new Set(),   // client_request_ids of sends in flight (to ignore our own "started")
};
// Status words of a finished answer: the API may say either.
const DONE = new Set(["done", "complete"]);
const FINISHED = new Set(["done", "complete", "aborted", "error"]);
// How often a streaming answer is rendered again (ms): Markdown is rendered whole.
const RENDER_EVERY_MS = 60;

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (init.body !== undefined) init.headers = { "content-type": "application/json" };
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  let payload = null;
  try { payload = await response.json(); } catch (_) { payload = null; }
  if (!response.ok) {
    const message = (payload && payload.error) || `HTTP ${response.status}`;
    throw new ApiError(response.status, message, retryAfterOf(response));
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

// The footer says "reconnecting…" while any connection of the page (the event feed, an
// answer, a send) is failing, and "connected" once every one of them works again.
const connection = {
  failing: new Set(),
  ok(source) { this.failing.delete(source); this.show(); },
  lost(source) { this.failing.add(source); this.show(); },
  show() {
    const el = $("connection");
    const ok = this.failing.size === 0;
    el.dataset.state = ok ? "ok" : "retrying";
    el.textContent = ok ? "connected" : "reconnecting…";
  },
};

function banner(text) {
  const el = $("banner");
  el.textContent = text || "";
  el.hidden = !text;
}

// --- messages ---------------------------------------------------------------------------

function bubble(role, text, model) {
  const el = document.createElement("article");
  el.className = `msg ${role}`;
  el.dataset.role = role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : "Assistant";
  if (model) label.title = `model: ${model}`;
  const body = document.createElement("div");
  body.className = role === "user" ? "text" : "text markdown";
  el.append(label, body);
  setText(el, text);
  $("messages").appendChild(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

// The answer's Markdown source stays in data-raw: what "Copy" copies, and what a resumed
// stream appends to.
function setText(el, text, streaming = false) {
  el.dataset.raw = text;
  const body = el.querySelector(".text");
  if (el.dataset.role === "user") body.textContent = text;
  else renderMarkdown(body, text, streaming);
}

// A streaming answer keeps the view at its end unless the reader scrolled up to read.
function nearBottom() {
  const list = $("messages");
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

function note(el, text) {
  let n = el.querySelector(".note");
  if (!n) {
    n = document.createElement("p");
    n.className = "note";
    el.querySelector(".text").after(n);
  }
  n.textContent = text;
  n.hidden = !text;
}

// The buttons under an answer: Copy always, Retry after a failure, Regenerate on the last.
function actions(el) {
  let bar = el.querySelector(".actions");
  if (!bar) {
    bar = document.createElement("div");
    bar.className = "actions";
    el.appendChild(bar);
  }
  const status = el.dataset.status;
  const buttons = [];
  if (el.dataset.raw) buttons.push(action("copy", "Copy"));
  if (status === "error" || status === "unsent") buttons.push(action("retry", "Retry"));
  else if (status && isLastAnswer(el)) buttons.push(action("regenerate", "Regenerate"));
  bar.replaceChildren(...buttons);
  updateComposer();
}

function action(kind, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `action ${kind}`;
  button.dataset.action = kind;
  button.textContent = label;
  return button;
}

function isLastAnswer(el) {
  const answers = $("messages").querySelectorAll(".msg.assistant");
  return answers[answers.length - 1] === el;
}

function refreshActions() {
  for (const el of $("messages").querySelectorAll(".msg.assistant[data-status]")) actions(el);
}

// The user message an answer replies to.
function questionOf(answer) {
  let el = answer.previousElementSibling;
  while (el && el.dataset.role !== "user") el = el.previousElementSibling;
  return el;
}

// --- following an answer ------------------------------------------------------------------

// Follows one stream to its final event, across dropped connections and restarts.
class Follower {
  constructor(streamId, element, token) {
    this.id = streamId;
    this.token = token || saved.token(streamId);
    this.missing = 0;
    this.el = element;
    this.el.dataset.streamId = streamId;
    this.el.classList.add("streaming");
    this.el.setAttribute("aria-busy", "true"); // screen readers read it once, at its end
    delete this.el.dataset.status;
    this.text = this.el.dataset.raw || "";
    this.lastId = null;
    this.failures = 0;
    this.finished = false;
    this.renderTimer = null;
    this.renderCost = 0;
    state.followers.set(streamId, this);
    updateComposer();
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

  source() { return `stream:${this.id}`; }

  render() {
    if (this.renderTimer !== null) return;
    this.renderTimer = setTimeout(() => {
      const started = performance.now();
      const follow = nearBottom();
      setText(this.el, this.text, true);
      if (follow) this.el.scrollIntoView({ block: "end" });
      // A render that takes long (a very long answer, a slow device) spaces the next ones
      // out, leaving the page at least two thirds of its time.
      this.renderCost = performance.now() - started;
      this.renderTimer = null;
    }, Math.max(RENDER_EVERY_MS, 2 * this.renderCost));
  }

  open() {
    if (this.finished) return;
    const es = new EventSource(this.url());
    this.es = es;
    const seen = (event) => {
      this.failures = 0;
      if (event.lastEventId) this.lastId = event.lastEventId;
      connection.ok(this.source());
    };
    es.addEventListener("delta", (event) => {
      seen(event);
      this.text += JSON.parse(event.data).text;
      this.render();
    });
    for (const type of ["status", "tool"]) {
      es.addEventListener(type, (event) => {
        seen(event);
        const data = JSON.parse(event.data);
        note(this.el, type === "tool" ? `Using a tool: ${data.name || "…"}` : data.status || data.message || "");
      });
    }
    for (const type of DONE) {
      es.addEventListener(type, (event) => {
        seen(event);
        const data = JSON.parse(event.data || "{}");
        // The displayed text is what the deltas built (the final event carries no copy).
        const reason = data.finish_reason;
        this.finish("done", reason === "length" ? "The answer reached its length limit." : "");
      });
    }
    es.addEventListener("aborted", (event) => { seen(event); this.finish("aborted", "Stopped."); });
    es.addEventListener("error", (event) => {
      if (event.data === undefined) return; // a connection error, handled by onerror below
      seen(event);
      const data = JSON.parse(event.data);
      this.finish("error", whyAnswerFailed(data.message));
    });
    es.addEventListener("reconnect", () => { es.close(); this.retry(100); });
    es.onerror = () => {
      if (this.finished) return;
      connection.lost(this.source());
      // CONNECTING: the browser retries by itself and sends Last-Event-ID. CLOSED (a 503
      // while an instance restarts, or a 204: nothing more to read): ask the status.
      if (es.readyState === EventSource.CLOSED) this.retry();
    };
  }

  async retry(delay) {
    this.failures += 1;
    const wait = delay ?? Math.min(5000, 250 * 2 ** Math.min(this.failures, 5));
    await sleep(wait);
    if (this.finished) return;
    let info;
    try {
      info = await api(this.url("/status"));
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
        this.finish("gone", await explainLoss());
        return;
      }
    }
    if (info && FINISHED.has(info.status)) {
      // It ended while we were away (a resume may then answer 204): the status has the
      // whole text, exactly what the events would have added up to.
      connection.ok(this.source());
      this.text = info.text;
      const status = DONE.has(info.status) ? "done" : info.status;
      this.finish(status, status === "aborted" ? "Stopped." : status === "error" ? whyAnswerFailed(null) : "");
      return;
    }
    this.open();
  }

  finish(status, text) {
    if (this.finished) return;
    this.finished = true;
    if (this.es) this.es.close();
    clearTimeout(this.renderTimer);
    this.renderTimer = null;
    connection.ok(this.source());
    setText(this.el, this.text);
    this.el.classList.remove("streaming");
    this.el.removeAttribute("aria-busy");
    this.el.dataset.status = status === "gone" ? "error" : status;
    this.el.classList.toggle("error", status === "error" || status === "gone");
    note(this.el, text);
    saved.forget(this.id);
    state.followers.delete(this.id);
    refreshActions();
    loadConversations();
  }

  close() {
    this.finished = true;
    if (this.es) this.es.close();
    clearTimeout(this.renderTimer);
    connection.ok(this.source());
    state.followers.delete(this.id);
    updateComposer();
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

// One answer at a time per conversation: a second one would not see the first (each is
// written from the history stored when it starts).
function busy() {
  return state.followers.size > 0 || state.pending.size > 0;
}

function updateComposer() {
  const running = busy();
  $("stop").hidden = state.followers.size === 0;
  $("send").hidden = state.followers.size > 0;
  $("send").disabled = running;
  $("composer").dataset.busy = running ? "true" : "false";
  for (const button of $("messages").querySelectorAll(".action.retry, .action.regenerate")) {
    button.disabled = running || Number(button.dataset.wait || 0) > 0;
  }
}

// --- sending --------------------------------------------------------------------------------

// Whether a failed start may be sent again as it is: no answer from the server, a start
// with the same id still under way (409), or the server or Redis unavailable.
function transient(error) {
  return !(error instanceof ApiError) || [409, 502, 503, 504].includes(error.status);
}

// POST /api/chat with `body()` until the server takes it or refuses it for good. The same
// client_request_id makes a retried POST return the same stream, never a second one.
// `explain(error)` says why a try failed: {again: true} sends again at once (the body
// changed), else {text, wait, final, retriable} (retried with a growing delay, at most 8
// times). Resolves to {started} or {why}.
async function startChat(body, explain) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      const started = await api("/api/chat", { method: "POST", body: JSON.stringify(body()) });
      connection.ok("send");
      return { started };
    } catch (error) {
      const why = explain(error);
      if (why.again) continue;
      if (!why.retriable || attempt >= 8) {
        connection.ok("send");
        return { why };
      }
      connection.lost("send");
      await sleep(Math.min(4000, (why.wait ? why.wait * 1000 : 300 * 2 ** attempt)));
    }
  }
}

async function send(text, retrying) {
  if (busy()) return;
  const requestId = retrying ? retrying.requestId : crypto.randomUUID();
  state.pending.add(requestId);
  updateComposer();
  let conversation = state.conversation || undefined;
  const model = $("model").value || undefined;
  let answer;
  if (retrying) {
    answer = retrying.answer;
    note(answer, "");
    delete answer.dataset.status;
    answer.classList.remove("error");
    actions(answer);
  } else {
    bubble("user", text);
    answer = bubble("assistant", "", $("model").value);
    refreshActions(); // Regenerate moves to the new last answer
  }
  answer.classList.add("streaming");
  const { started, why } = await startChat(
    () => ({ message: text, conversation_id: conversation, model, client_request_id: requestId }),
    (error) => {
      if (error instanceof ApiError && error.status === 404 && conversation) {
        // The conversation is gone (its Redis data was lost, or it was deleted): the server
        // creates none under a given id, so the message starts a new one.
        conversation = undefined;
        return { again: true };
      }
      console.warn("send failed:", error);
      return { ...whyNotSent(error), retriable: transient(error) };
    },
  );
  state.pending.delete(requestId);
  if (started) {
    if (state.conversation !== started.conversation_id) {
      state.conversation = started.conversation_id;
      history.replaceState(null, "", `#c=${encodeURIComponent(started.conversation_id)}`);
      showTitle(text);
    }
    saved.remember(started.stream_id, started.resume_token, started.conversation_id, text);
    if (!state.followers.has(started.stream_id)) new Follower(started.stream_id, answer, started.resume_token);
    banner("");
  } else {
    notSent(answer, { text, requestId }, why);
  }
  state.pending.delete(requestId);
  updateComposer();
  loadConversations();
}

// A message the server did not take: say why, and offer Retry (after the wait a limit asks).
// `retry` is what Retry sends again: {text, requestId} (a message) or {regenerate, requestId}.
function notSent(answer, retry, why, what = "Not sent.") {
  answer.classList.remove("streaming");
  answer.classList.add("error");
  answer.dataset.status = "unsent";
  answer.retry = why.final ? null : retry;
  const until = Date.now() + (why.wait || 0) * 1000;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    note(answer, left > 0 ? `${what} ${why.text} Retry in ${left} s.` : `${what} ${why.text}`);
    const button = answer.querySelector(".action.retry");
    if (button) { button.dataset.wait = String(Math.max(0, left)); updateComposer(); }
    if (left > 0 && answer.isConnected) setTimeout(tick, 1000);
  };
  actions(answer);
  if (why.final) answer.querySelector(".action.retry")?.remove();
  tick();
}

// Regenerate (and Retry of a failed answer) when it is the conversation's last answer: the
// server drops that answer and writes a new one to the same question, which replaces it
// here in place. Idempotent like a send: a retried POST drops no second answer.
async function regenerate(answer, retrying) {
  if (busy() || !state.conversation) return;
  const requestId = retrying ? retrying.requestId : crypto.randomUUID();
  const conversation = state.conversation;
  state.pending.add(requestId);
  answer.retry = null;
  note(answer, "");
  delete answer.dataset.status;
  answer.classList.remove("error");
  answer.classList.add("streaming");
  actions(answer);
  const { started, why } = await startChat(
    () => ({
      regenerate: true, conversation_id: conversation, model: $("model").value || undefined,
      client_request_id: requestId,
    }),
    (error) => {
      console.warn("regenerate failed:", error);
      // An answer running in the conversation (another tab's) is not waited for: it becomes
      // the last answer, and this one is no longer the one to replace.
      const running = error instanceof ApiError && error.status === 409 && /running/.test(error.message);
      const reason = error instanceof ApiError && error.status === 404
        ? { text: CONVERSATION_GONE, wait: null, final: true }
        : running ? { text: ANSWER_RUNNING, wait: null } : whyNotSent(error);
      return { ...reason, retriable: !running && transient(error) };
    },
  );
  state.pending.delete(requestId);
  if (started) {
    if (state.conversation === conversation) { // (else another one was opened meanwhile)
      if (answer.dataset.streamId) saved.forget(answer.dataset.streamId);
      saved.remember(started.stream_id, started.resume_token, started.conversation_id);
      setText(answer, ""); // the new answer starts from nothing, in the old one's place
      if (!state.followers.has(started.stream_id)) new Follower(started.stream_id, answer, started.resume_token);
      banner("");
    }
  } else {
    // The old answer's text stays, with why it was not replaced and a Retry.
    notSent(answer, { regenerate: true, requestId }, why, "Not regenerated.");
  }
  state.pending.delete(requestId);
  updateComposer();
  loadConversations();
}

// Retry and Regenerate: a message not taken by the server is sent again with its request id;
// the last answer is regenerated in place; an earlier failed answer's question is asked
// again as a new turn (regenerating replaces only the last answer).
function again(answer) {
  if (busy()) return;
  if (answer.dataset.status === "unsent" && answer.retry && !answer.retry.regenerate) {
    send(answer.retry.text, { requestId: answer.retry.requestId, answer });
    return;
  }
  if (answer.retry?.regenerate && isLastAnswer(answer)) {
    regenerate(answer, answer.retry);
    return;
  }
  if (isLastAnswer(answer) && answer.dataset.status !== "unsent") {
    regenerate(answer);
    return;
  }
  const question = questionOf(answer);
  if (question) send(question.dataset.raw);
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    // No clipboard API (a plain-http page on another host): the old way.
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 1500);
}

// --- conversations --------------------------------------------------------------------------

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
    console.warn("models:", error);
    banner("The list of models cannot be loaded; the default model is used.");
  }
}

function showTitle(title) {
  state.title = title || "";
  $("title").textContent = state.conversation ? (title || "Untitled") : "New chat";
  document.title = state.conversation && title ? `${title} · chatscale` : "chatscale";
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
  const editing = $("conversations").querySelector("input.rename");
  if (editing) return; // do not pull the field from under the user's fingers
  $("conversations").replaceChildren(...conversations.map((c) => listItem(c, live.has(c.id))));
  const current = conversations.find((c) => c.id === state.conversation);
  if (current) showTitle(current.title);
}

function listItem(c, live) {
  const li = document.createElement("li");
  li.dataset.id = c.id;
  li.classList.toggle("current", c.id === state.conversation);
  li.classList.toggle("live", live);
  const open = document.createElement("button");
  open.type = "button";
  open.className = "open";
  open.title = c.title || "Untitled";
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = c.title || "Untitled";
  open.append(title);
  if (live) {
    const marker = document.createElement("span");
    marker.className = "live-marker";
    marker.textContent = "●";
    marker.title = "An answer is being written";
    open.append(marker);
  }
  open.addEventListener("click", () => { closeDrawer(); openConversation(c.id, c.title); });
  const rename = tool("rename", `Rename "${c.title || "Untitled"}"`);
  rename.addEventListener("click", () => startRename(li, c));
  const remove = tool("delete", `Delete "${c.title || "Untitled"}"`);
  remove.addEventListener("click", () => confirmDelete(li, remove, c));
  li.append(open, rename, remove);
  return li;
}

// Icons drawn in the page (no icon font: any system font lacks some glyph).
const ICONS = {
  rename: "M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4",
  delete: "M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13M10 11v6M14 11v6",
};

function icon(kind) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "16");
  svg.setAttribute("height", "16");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[kind]);
  svg.appendChild(path);
  return svg;
}

function tool(kind, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `tool ${kind}`;
  button.append(icon(kind));
  button.title = label;
  button.setAttribute("aria-label", label);
  return button;
}

function startRename(li, c) {
  const input = document.createElement("input");
  input.className = "rename";
  input.value = c.title || "";
  input.maxLength = 80;
  input.setAttribute("aria-label", "New title");
  li.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title && title !== c.title) {
      try {
        await api(`/api/conversations/${encodeURIComponent(c.id)}`, {
          method: "PATCH", body: JSON.stringify({ title }),
        });
      } catch (error) {
        console.warn("rename:", error);
        banner(error instanceof ApiError && error.status === 404 ? CONVERSATION_GONE : "The conversation could not be renamed. Retry in a moment.");
      }
    }
    input.remove();
    loadConversations();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); finish(true); }
    if (event.key === "Escape") { event.preventDefault(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
}

// Deleting asks once more on the same button (no blocking dialog).
function confirmDelete(li, button, c) {
  if (!button.classList.contains("confirm")) {
    button.classList.add("confirm");
    button.textContent = "Delete?";
    setTimeout(() => {
      if (button.isConnected) { button.classList.remove("confirm"); button.replaceChildren(icon("delete")); }
    }, 4000);
    return;
  }
  deleteConversation(c.id);
}

async function deleteConversation(id) {
  try {
    await api(`/api/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) {
      console.warn("delete:", error);
      banner("The conversation could not be deleted. Retry in a moment.");
      return;
    }
  }
  for (const [streamId, entry] of Object.entries(saved.all())) {
    if (entry.conversation === id) saved.forget(streamId);
  }
  if (state.conversation === id) openConversation(null);
  else loadConversations();
}

async function openConversation(id, title = "") {
  for (const follower of [...state.followers.values()]) follower.close();
  state.conversation = id;
  history.replaceState(null, "", id ? `#c=${encodeURIComponent(id)}` : "#");
  $("messages").replaceChildren();
  banner("");
  showTitle(title);
  if (id) {
    document.body.classList.add("loading"); // no empty state while its messages come
    try {
      // Active streams first: a stream that ends in between is then found stored.
      const { streams } = await api("/api/chat/active");
      const conversation = await api(`/api/conversations/${encodeURIComponent(id)}`);
      if (state.conversation !== id) return; // another was opened meanwhile
      showTitle(conversation.title);
      const stored = new Set();
      for (const m of conversation.messages) {
        const el = bubble(m.role, m.content, m.model);
        if (m.role !== "assistant") continue;
        if (m.stream_id) { stored.add(m.stream_id); el.dataset.streamId = m.stream_id; }
        const status = DONE.has(m.status) || !m.status ? "done" : m.status;
        el.dataset.status = status;
        if (status === "aborted") note(el, "Stopped.");
        if (status === "error") { el.classList.add("error"); note(el, whyAnswerFailed(m.error)); }
      }
      for (const s of streams) {
        if (s.conversation_id === id && !stored.has(s.stream_id) && !state.followers.has(s.stream_id)) {
          saved.remember(s.stream_id, s.resume_token, s.conversation_id);
          new Follower(s.stream_id, bubble("assistant", ""), s.resume_token);
        }
      }
      // Answers this tab started that the server does not list (its session was lost).
      followSaved(id, stored);
      refreshActions();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        // The conversation is gone; answers this tab started in it may still be running.
        if (followSaved(id, new Set())) banner(LOST_CONVERSATION);
        else {
          state.conversation = null;
          history.replaceState(null, "", "#");
          showTitle("");
          banner(CONVERSATION_GONE);
        }
      } else {
        console.warn("conversation:", error);
        banner("The conversation cannot be loaded right now; it is shown again when the server answers.");
      }
    }
  }
  document.body.classList.remove("loading");
  updateComposer();
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

// After the event feed reconnects: answers started meanwhile (elsewhere) in the open
// conversation are followed, and the list is read again.
async function resync() {
  loadConversations();
  const id = state.conversation;
  if (!id) return;
  try {
    const { streams } = await api("/api/chat/active");
    for (const s of streams) {
      if (s.conversation_id !== id || state.followers.has(s.stream_id)) continue;
      if ($("messages").querySelector(`[data-stream-id="${CSS.escape(s.stream_id)}"]`)) continue;
      saved.remember(s.stream_id, s.resume_token, s.conversation_id);
      new Follower(s.stream_id, bubble("assistant", ""), s.resume_token);
    }
  } catch (_) { /* the next reconnect tries again */ }
}

// Announcements of this session's streams starting and ending, from any tab or instance.
// Its connection is also how the page learns that the server is back.
function listenForEvents() {
  const es = new EventSource("/api/events");
  let wasLost = false;
  es.onopen = () => {
    connection.ok("events");
    if (wasLost) resync();
    wasLost = false;
  };
  es.addEventListener("started", (event) => {
    const s = JSON.parse(event.data);
    if (state.pending.has(s.client_request_id) || state.followers.has(s.stream_id)) return;
    if (s.conversation_id === state.conversation) {
      // A regeneration (from another tab) replaces the last answer in place.
      const answers = $("messages").querySelectorAll(".msg.assistant");
      const last = answers[answers.length - 1];
      if (s.regenerate && last && !state.followers.has(last.dataset.streamId)) {
        note(last, "");
        last.classList.remove("error");
        setText(last, "");
        new Follower(s.stream_id, last);
      } else {
        if (s.message) bubble("user", s.message);
        new Follower(s.stream_id, bubble("assistant", ""));
      }
    } else if (state.conversation === null && !$("messages").children.length) {
      openConversation(s.conversation_id); // an empty tab shows what another tab started
      return;
    }
    loadConversations();
  });
  es.addEventListener("ended", () => loadConversations());
  es.addEventListener("reconnect", () => { es.close(); setTimeout(listenForEvents, 200); });
  es.onerror = () => {
    wasLost = true;
    connection.lost("events");
    if (es.readyState === EventSource.CLOSED) setTimeout(listenForEvents, 1000);
  };
}

// --- the narrow layout's drawer -----------------------------------------------------------

function openDrawer() {
  document.body.classList.add("drawer-open");
  $("menu").setAttribute("aria-expanded", "true");
  $("scrim").hidden = false;
}

function closeDrawer() {
  document.body.classList.remove("drawer-open");
  $("menu").setAttribute("aria-expanded", "false");
  $("scrim").hidden = true;
}

function init() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("input").value.trim();
    if (!text || busy()) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", async () => {
    for (const follower of [...state.followers.values()]) {
      try { await api(follower.url("/abort"), { method: "POST" }); }
      catch (error) { console.warn("stop:", error); banner("The answer could not be stopped. Retry in a moment."); }
    }
  });
  $("messages").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const answer = button.closest(".msg");
    if (button.classList.contains("copy-code")) copy(codeOf(button), button);
    else if (button.dataset.action === "copy") copy(answer.dataset.raw, button);
    else if (button.dataset.action === "retry" || button.dataset.action === "regenerate") again(answer);
  });
  for (const id of ["new-chat", "new-chat-top"]) {
    $(id).addEventListener("click", () => { closeDrawer(); openConversation(null); $("input").focus(); });
  }
  $("menu").addEventListener("click", () => {
    if (document.body.classList.contains("drawer-open")) closeDrawer(); else openDrawer();
  });
  $("scrim").addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeDrawer(); });
  const match = /^#c=(.+)$/.exec(location.hash);
  loadModels();
  openConversation(match ? decodeURIComponent(match[1]) : null);
  listenForEvents();
}

init();
