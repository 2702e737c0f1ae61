// Answers as sanitized Markdown: markdown-it renders (raw HTML in the text stays text),
// highlight.js colours code blocks, DOMPurify removes anything unsafe that is left.
// The vendored builds (static/vendor/, see docs/server.md) set the globals used here.
const { markdownit, DOMPurify, hljs } = window;

// Highlighting every code block again at each re-render of a streaming answer would cost
// more than the rest of the rendering: blocks seen recently come from this cache, in two
// generations (the older one is dropped when the newer one is full: bounded, and a long
// answer's blocks, used at every render, stay).
const HIGHLIGHT_CACHE = 1000;
let recent = new Map();
let older = new Map();

function highlight(code, language) {
  if (!language || !hljs.getLanguage(language)) return ""; // markdown-it escapes it
  const key = `${language}\u0000${code}`;
  let html = recent.get(key) ?? older.get(key);
  if (html === undefined) html = hljs.highlight(code, { language, ignoreIllegals: true }).value;
  if (!recent.has(key)) {
    if (recent.size >= HIGHLIGHT_CACHE) { older = recent; recent = new Map(); }
    recent.set(key, html);
  }
  return html;
}

const md = markdownit({ html: false, linkify: true, highlight });

// Images become links: an image URL in a model's answer would be fetched as soon as it is
// shown (a prompt-injected answer can leak the conversation in it), and the page's
// Content-Security-Policy allows images from this server only.
md.renderer.rules.image = (tokens, index) => {
  const token = tokens[index];
  const href = md.utils.escapeHtml(token.attrGet("src") || "");
  const label = md.utils.escapeHtml(token.content || "image");
  return `<a href="${href}">${label}</a>`;
};

// Table alignment as classes: markdown-it writes it as a style attribute, which the
// Content-Security-Policy (style-src 'self') refuses.
for (const rule of ["th_open", "td_open"]) {
  md.renderer.rules[rule] = (tokens, index, options, env, self) => {
    const token = tokens[index];
    const style = token.attrGet("style");
    if (style) {
      token.attrs = token.attrs.filter(([name]) => name !== "style");
      const align = /text-align:(left|right|center)/.exec(style);
      if (align) token.attrJoin("class", `align-${align[1]}`);
    }
    return self.renderToken(tokens, index, options);
  };
}

// Code blocks carry the theme's class (markdown-it keeps a highlight result that starts
// with <pre> as it is).
md.renderer.rules.fence = ((fence) => (tokens, index, options, env, self) => {
  const token = tokens[index];
  const language = token.info.trim().split(/\s+/)[0] || "";
  const html = highlight(token.content, language);
  if (!html) return fence(tokens, index, options, env, self);
  const name = md.utils.escapeHtml(language);
  return `<pre><code class="hljs language-${name}">${html}</code></pre>\n`;
})(md.renderer.rules.fence);

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const PURIFY = {
  FORBID_TAGS: ["style", "img", "svg", "math", "form", "input", "button", "textarea", "select"],
  FORBID_ATTR: ["style"],
  ADD_ATTR: ["target"],
};

// Sanitizing is most of a render's cost (DOMPurify: about 230 ms for a 50 KB answer on the
// test machine, against 20 ms for markdown-it), and a streaming answer only changes at its
// end: each top-level block is sanitized on its own, and the blocks that did not change
// since the element's previous render are reused (keyed by their HTML, so a block is never
// shown unsanitized). The reuse lasts while the answer streams.
const previous = new WeakMap(); // element -> Map(block HTML -> sanitized HTML)

/**
 * Render `text` as Markdown into `element`, with a copy button on each code block;
 * `streaming`: more text will come (keep what the next render can reuse).
 */
export function renderMarkdown(element, text, streaming = false) {
  const before = previous.get(element) || new Map();
  const now = new Map();
  const env = {};
  const tokens = md.parse(text, env);
  const blocks = [];
  let start = 0;
  tokens.forEach((token, index) => {
    // A top-level block ends with a closing token of level 0, or is a single token.
    if (token.level === 0 && token.nesting <= 0) {
      const html = md.renderer.render(tokens.slice(start, index + 1), md.options, env);
      const clean = now.get(html) ?? before.get(html) ?? DOMPurify.sanitize(html, PURIFY);
      now.set(html, clean);
      blocks.push(clean);
      start = index + 1;
    }
  });
  if (streaming) previous.set(element, now);
  else previous.delete(element);
  element.innerHTML = blocks.join("");
  for (const pre of element.querySelectorAll("pre")) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy code");
    pre.prepend(button);
  }
}

/** The text of a code block whose copy button is `button`. */
export function codeOf(button) {
  const code = button.parentElement.querySelector("code");
  return code ? code.textContent : "";
}
