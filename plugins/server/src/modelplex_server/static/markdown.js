// A small Markdown renderer that builds DOM nodes: model output is only ever text nodes and
// elements made here, never parsed as HTML. Supports fenced and inline code, headings,
// lists, quotes, rules, **strong**, *emphasis*, ~~strike~~ and links with http(s)/mailto
// hrefs (any other link stays text). An unclosed fence (a stream in progress) is code so far.

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const INLINE = new RegExp([
  "(`+)([\\s\\S]*?[^`])\\1(?!`)",                        // 1,2 code span
  "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*",                    // 3 strong
  "__(?=\\S)([\\s\\S]*?\\S)__(?!\\w)",                     // 4 strong
  "~~(?=\\S)([\\s\\S]*?\\S)~~",                            // 5 strike
  "\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*",                  // 6 emphasis
  "(?<![\\w])_(?=[^\\s_])([\\s\\S]*?[^\\s_])_(?!\\w)",     // 7 emphasis
  "\\[([^\\]\\n]+)\\]\\(\\s*<?([^\\s)>]+)>?\\s*\\)",      // 8,9 link
  "(https?://[^\\s<>()\\[\\]]*[^\\s<>()\\[\\].,;:!?'\"])",  // 10 bare URL
].join("|"), "g");

/** The href if it is safe to follow (http, https, mailto), else null. */
export function safeHref(raw) {
  try {
    const url = new URL(raw, document.baseURI);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function el(tag, parent, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  parent.append(node);
  return node;
}

function link(parent, label, href, raw, bare = false) {
  const safe = safeHref(href);
  if (!safe) {
    parent.append(document.createTextNode(raw));
    return;
  }
  const a = el("a", parent);
  a.href = safe;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  if (bare) a.textContent = label;
  else inline(label, a);
}

/** Inline Markdown of `text` appended to `parent`. */
export function inline(text, parent) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
    last = m.index + m[0].length;
    if (m[2] !== undefined) el("code", parent, m[2].replace(/^ (.*) $/s, "$1"));
    else if (m[3] !== undefined || m[4] !== undefined) inline(m[3] ?? m[4], el("strong", parent));
    else if (m[5] !== undefined) inline(m[5], el("del", parent));
    else if (m[6] !== undefined || m[7] !== undefined) inline(m[6] ?? m[7], el("em", parent));
    else if (m[8] !== undefined) link(parent, m[8], m[9], m[0]);
    else if (m[10] !== undefined) link(parent, m[10], m[10], m[0], true);
  }
  if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
}

function lines(textLines, parent) {
  textLines.forEach((line, i) => {
    if (i) el("br", parent);
    inline(line, parent);
  });
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBER = /^\s*(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;

/** Render Markdown `text` into `container` (its children are replaced). */
export function renderMarkdown(text, container) {
  const out = document.createDocumentFragment();
  const src = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < src.length) {
    const line = src[i];
    let m;
    if (!line.trim()) {
      i++;
    } else if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i++;
      while (i < src.length && !src[i].trimStart().startsWith(fence)) body.push(src[i++]);
      i++;
      const pre = el("pre", out);
      const code = el("code", pre, body.join("\n"));
      if (m[2]) code.dataset.lang = m[2];
    } else if ((m = HEADING.exec(line))) {
      inline(m[2], el("h" + Math.min(6, m[1].length + 2), out));
      i++;
    } else if (RULE.test(line)) {
      el("hr", out);
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < src.length && (m = QUOTE.exec(src[i]))) { body.push(m[1]); i++; }
      renderMarkdown(body.join("\n"), el("blockquote", out));
    } else if (BULLET.test(line) || NUMBER.test(line)) {
      const ordered = !BULLET.test(line);
      const re = ordered ? NUMBER : BULLET;
      const list = el(ordered ? "ol" : "ul", out);
      if (ordered && (m = NUMBER.exec(line)) && m[1] !== "1") list.start = Number(m[1]);
      let item = null;
      while (i < src.length && src[i].trim()) {
        m = re.exec(src[i]);
        if (m) {
          item = el("li", list);
          inline(ordered ? m[2] : m[1], item);
        } else if (/^\s+\S/.test(src[i]) && item) {
          el("br", item);
          inline(src[i].trim(), item);
        } else break;
        i++;
      }
    } else {
      const para = [];
      while (i < src.length && src[i].trim() && !FENCE.test(src[i]) && !HEADING.test(src[i])
             && !BULLET.test(src[i]) && !QUOTE.test(src[i]) && !RULE.test(src[i])) {
        para.push(src[i++]);
      }
      lines(para, el("p", out));
    }
  }
  container.replaceChildren(out);
}
