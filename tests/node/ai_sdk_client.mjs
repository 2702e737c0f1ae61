// The Vercel AI SDK's own chat client (`ai`: AbstractChat, the class behind useChat, with
// DefaultChatTransport) against chatscale's /api/ai-sdk/chat. Run by
// tests/server/test_ai_sdk.py:
//
//   node ai_sdk_client.mjs '{"post": URL, "resume": URL, "message": "...", "cutAfter": 3}'
//
// It sends a message to the instance at `post`, cuts the connection after `cutAfter`
// text deltas (as a network failure does), resumes the stream (`resumeStream`, which GETs
// {api}/{chatId}/stream) on the instance at `resume`, then asks to resume once more after
// the end (chatscale must answer 204: nothing runs). With `"regenerate": true` it then
// regenerates the last answer (`regenerate()`, trigger "regenerate-message") and waits for
// its end. It prints what the chat holds as JSON.
// The transport's `api` is a fixed base URL; its `fetch` plays the load balancer, sending
// each request to the instance the test chose, so the transport itself runs unchanged.
import { AbstractChat, DefaultChatTransport } from "ai";

const options = JSON.parse(process.argv[2]);
const BASE = "http://chatscale.invalid";

// A session cookie, as a browser would hold it (Node's fetch keeps no cookies).
const first = await fetch(`${options.post}/api/models`);
const setCookies = first.headers.getSetCookie
  ? first.headers.getSetCookie()
  : [first.headers.get("set-cookie") || ""];
const cookie = setCookies.map((c) => c.split(";")[0]).join("; ");

class PlainState {
  constructor(messages = []) {
    this.messages = messages;
    this.status = "ready";
    this.error = undefined;
  }
  pushMessage(message) { this.messages = [...this.messages, message]; }
  popMessage() { this.messages = this.messages.slice(0, -1); }
  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  }
  snapshot(thing) { return structuredClone(thing); }
}

// A chat without a UI framework: what @ai-sdk/react's Chat is, minus React's state.
class Chat extends AbstractChat {
  constructor(init) { super({ ...init, state: new PlainState(init.messages) }); }
}

const requests = [];
let cuts = 0;
let posts = 0;

// Cuts a response body after `count` text deltas: the chunks before it arrive, then the
// body fails as a dropped connection does ("network error": the chat can resume).
function cutAfter(body, count) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let seen = 0;
  return new ReadableStream({
    async pull(controller) {
      if (seen >= count) {
        await reader.cancel();
        cuts += 1;
        controller.error(new TypeError("network error"));
        return;
      }
      const { done, value } = await reader.read();
      if (done) { controller.close(); return; }
      seen += (decoder.decode(value, { stream: true }).match(/"text-delta"/g) || []).length;
      controller.enqueue(value);
    },
    cancel(reason) { return reader.cancel(reason); },
  });
}

async function balancer(url, init = {}) {
  const method = init.method || "GET";
  const target = method === "POST" ? options.post : options.resume;
  const real = String(url).replace(BASE, target);
  const response = await fetch(real, init);
  requests.push({
    method,
    url: real.replace(target, ""),
    status: response.status,
    protocol: response.headers.get("x-vercel-ai-ui-message-stream"),
    instance: response.headers.get("x-chatscale-instance"),
  });
  if (method === "POST") posts += 1;
  // Only the first POST is cut (the message); a regeneration runs whole.
  if (method === "POST" && posts === 1 && response.ok && options.cutAfter) {
    return new Response(cutAfter(response.body, options.cutAfter), {
      status: response.status,
      headers: response.headers,
    });
  }
  return response;
}

const transport = new DefaultChatTransport({
  api: `${BASE}/api/ai-sdk/chat`,
  headers: { cookie },
  fetch: balancer,
});
const errors = [];
const chat = new Chat({ transport, onError: (error) => errors.push(String(error)) });

const textOf = (message) =>
  message ? message.parts.filter((p) => p.type === "text").map((p) => p.text).join("") : "";

await chat.sendMessage({ text: options.message });
const partial = textOf(chat.messages.at(-1));
const statusAfterCut = chat.status;
await chat.resumeStream();
const afterEnd = await transport.reconnectToStream({ chatId: chat.id });
const before = chat.messages.map((m) => ({ id: m.id, role: m.role, text: textOf(m) }));
let regenerated = null;
let stored = null;
if (options.regenerate) {
  await chat.regenerate();
  regenerated = chat.messages.map((m) => ({ id: m.id, role: m.role, text: textOf(m) }));
  // What the server holds, once the new answer is stored (just after its final event).
  const newId = chat.messages.at(-1).id;
  for (let i = 0; i < 100; i += 1) {
    const found = await fetch(`${options.post}/api/conversations/${chat.id}`, { headers: { cookie } });
    stored = (await found.json()).messages;
    if (stored.some((m) => m.stream_id === newId)) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

console.log(JSON.stringify({
  chatId: chat.id,
  cuts,
  partial,
  statusAfterCut,
  status: chat.status,
  errors,
  messages: chat.messages.map((m) => ({
    id: m.id,
    role: m.role,
    text: textOf(m),
    textParts: m.parts.filter((p) => p.type === "text").length,
  })),
  afterEnd: afterEnd === null ? null : "a stream",
  before,
  regenerated,
  stored,
  statusAfterRegenerate: chat.status,
  requests,
}));
