/**
 * markdown.js: a small, safe Markdown renderer for agent text.
 *
 *     import { renderMarkdown, renderMarkdownInto } from "/static/markdown.js";
 *     element.replaceChildren(renderMarkdown(text));   // a DocumentFragment
 *
 * Safety: the text never becomes HTML. Every node is made with createElement and every
 * piece of text goes in as a text node, so `<img onerror=…>` or `<script>` in an answer
 * shows as those characters. Links are made only for http: and https: URLs and open in a
 * new tab with rel="noopener noreferrer"; any other link stays literal text. Images are
 * shown as links (nothing is fetched).
 *
 * Supported: paragraphs, line breaks (a single newline), # headings, **bold**, __bold__,
 * *italic*, _italic_, ~~strike~~, `code`, fenced code blocks (``` or ~~~, with a language),
 * - / * / + and 1. lists (nested by indentation), > quotes, --- rules, simple | tables |,
 * [text](https://…) links, bare https://… URLs, and backslash escapes.
 */

/** The URL if it is an absolute http(s) URL, else null. */
export function safeUrl(raw) {
  const text = String(raw).trim();
  if (!/^https?:\/\//i.test(text)) return null;
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function node(tag, ...children) {
  const element = document.createElement(tag);
  for (const child of children) element.append(child);
  return element;
}

function link(href, fill) {
  const a = document.createElement("a");
  a.setAttribute("href", href);
  a.setAttribute("rel", "noopener noreferrer");
  a.setAttribute("target", "_blank");
  fill(a);
  return a;
}

// -- inline ---------------------------------------------------------------------------

// Each rule: a regex (no g flag) and how to render its match. At one position the first
// rule in this list wins, so `**` is tried before `*`.
const INLINE = [
  { re: /\\([\\`*_{}[\]()#+\-.!~>|])/, render: (m, out) => out.append(m[1]) },
  {
    re: /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/,
    render: (m, out) => out.append(node("code", m[2].replace(/^ (.+) $/, "$1"))),
  },
  {
    // ![alt](url): never fetched; shown as a link to the image.
    re: /!\[([^[\]]*)\]\(\s*<?((?:[^\s<>()]|\([^\s<>()]*\))+)>?(?:\s+"[^"]*")?\s*\)/,
    links: true,
    render: (m, out) => {
      const href = safeUrl(m[2]);
      if (!href) return out.append(m[0]);
      out.append(link(href, (a) => a.append(`🖼 ${m[1] || href}`)));
    },
  },
  {
    re: /\[((?:[^[\]]|\[[^[\]]*\])+)\]\(\s*<?((?:[^\s<>()]|\([^\s<>()]*\))+)>?(?:\s+"[^"]*")?\s*\)/,
    links: true,
    render: (m, out) => {
      const href = safeUrl(m[2]);
      if (!href) return out.append(m[0]);
      out.append(link(href, (a) => inline(m[1], a, false)));
    },
  },
  {
    // Bare URLs: ASCII URL characters only (so "…com。谢谢" stops at "。"), and not
    // ending in punctuation that belongs to the sentence.
    re: /<(https?:\/\/[^\s<>]+)>|\bhttps?:\/\/[\w\-.~:/?#[\]@!$&'()*+,;=%]*[\w\-~/#@$&*+=%]/,
    links: true,
    render: (m, out) => {
      const text = m[1] || m[0];
      const href = safeUrl(text);
      out.append(href ? link(href, (a) => a.append(text)) : m[0]);
    },
  },
  { re: /\*\*(?=\S)([\s\S]*?\S)\*\*/, tag: "strong" },
  { re: /(?<![\p{L}\p{N}_])__(?=\S)([\s\S]*?\S)__(?![\p{L}\p{N}_])/u, tag: "strong" },
  { re: /~~(?=\S)([\s\S]*?\S)~~/, tag: "del" },
  { re: /\*(?=[^\s*])((?:\*\*[\s\S]*?\*\*|[^*])*?[^\s*])\*/, tag: "em" },
  { re: /(?<![\p{L}\p{N}_])_(?=[^\s_])([\s\S]*?[^\s_])_(?![\p{L}\p{N}_])/u, tag: "em" },
];

const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };

/** A few HTML entities as the characters they name (the result is still only text). */
function decodeEntities(text) {
  return text.replace(/&(?:#(\d{1,7})|#x([\da-f]{1,6})|(amp|lt|gt|quot|apos|nbsp));/gi, (m, dec, hex, name) => {
    const code = dec ? parseInt(dec, 10) : hex ? parseInt(hex, 16) : null;
    if (code === null) return ENTITIES[name.toLowerCase()];
    return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : m;
  });
}

/** Append the inline Markdown of `text` to `out` (links only when allowLinks). */
function inline(text, out, allowLinks = true) {
  let rest = text;
  while (rest) {
    let best = null;
    for (const rule of INLINE) {
      if (rule.links && !allowLinks) continue;
      const m = rule.re.exec(rest);
      if (m && (!best || m.index < best.m.index)) best = { rule, m };
    }
    if (!best) {
      out.append(decodeEntities(rest));
      return;
    }
    const { rule, m } = best;
    if (m.index > 0) out.append(decodeEntities(rest.slice(0, m.index)));
    if (rule.tag) {
      const element = document.createElement(rule.tag);
      inline(m[1], element, allowLinks);
      out.append(element);
    } else {
      rule.render(m, out);
    }
    rest = rest.slice(m.index + m[0].length);
  }
}

/** Inline Markdown of several lines, with a <br> for each single newline. */
function inlineLines(lines, out) {
  lines.forEach((line, i) => {
    if (i > 0) out.append(document.createElement("br"));
    inline(line.replace(/\s+$/, ""), out);
  });
  return out;
}

// -- blocks ---------------------------------------------------------------------------

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^ *\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

const indentOf = (line) => line.match(/^ */)[0].length;
const blank = (line) => /^\s*$/.test(line);

function startsBlock(line, next) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    ITEM.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_SEP.test(next) && next.includes("-"))
  );
}

function cells(row) {
  let text = row.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  return text.split(/(?<!\\)\|/).map((cell) => cell.trim());
}

function table(lines, i, out) {
  const head = cells(lines[i]);
  const align = cells(lines[i + 1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : "",
  );
  const tableEl = document.createElement("table");
  const row = (values, tag) => {
    const tr = document.createElement("tr");
    head.forEach((_, k) => {
      const cell = document.createElement(tag);
      if (align[k]) cell.style.textAlign = align[k];
      inline(values[k] ?? "", cell);
      tr.append(cell);
    });
    return tr;
  };
  tableEl.append(node("thead", row(head, "th")));
  const body = document.createElement("tbody");
  let j = i + 2;
  while (j < lines.length && !blank(lines[j]) && lines[j].includes("|")) {
    body.append(row(cells(lines[j]), "td"));
    j += 1;
  }
  tableEl.append(body);
  out.append(node("div", tableEl));
  out.lastChild.className = "md-table";
  return j;
}

function list(lines, i, out) {
  const first = ITEM.exec(lines[i]);
  const base = first[1].length;
  const ordered = /\d/.test(first[2]);
  const listEl = document.createElement(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) listEl.setAttribute("start", String(parseInt(first[2], 10)));
  const items = [];
  let loose = false;
  let j = i;
  while (j < lines.length) {
    const line = lines[j];
    const m = ITEM.exec(line);
    if (m && m[1].length < base + 2 && /\d/.test(m[2]) === ordered) {
      items.push({ indent: m[1].length + m[2].length + 1, lines: [m[3]] });
      j += 1;
      continue;
    }
    if (m && m[1].length < base + 2) break; // a list of the other kind starts
    if (blank(line)) {
      let k = j + 1;
      while (k < lines.length && blank(lines[k])) k += 1;
      const next = lines[k];
      const nextItem = next !== undefined && ITEM.exec(next);
      const continues =
        next !== undefined &&
        ((nextItem && nextItem[1].length < base + 2 && /\d/.test(nextItem[2]) === ordered) ||
          indentOf(next) >= base + 2);
      if (!continues) break;
      loose = true;
      items[items.length - 1].lines.push("");
      j += 1;
      continue;
    }
    const current = items[items.length - 1];
    if (indentOf(line) >= base + 2) {
      current.lines.push(line.slice(Math.min(indentOf(line), current.indent)));
    } else if (!startsBlock(line) && !blank(current.lines[current.lines.length - 1])) {
      current.lines.push(line.trim()); // a lazy continuation of the item's paragraph
    } else {
      break;
    }
    j += 1;
  }
  for (const item of items) {
    const li = document.createElement("li");
    const inner = document.createDocumentFragment();
    blocks(item.lines, inner);
    // A tight item holds its text directly, not in a paragraph.
    if (!loose && inner.firstChild && inner.firstChild.nodeName === "P") {
      const p = inner.firstChild;
      while (p.firstChild) li.append(p.firstChild);
      p.remove();
    }
    li.append(inner);
    listEl.append(li);
  }
  out.append(listEl);
  return j;
}

/** Render the lines as block Markdown into `out`. */
function blocks(lines, out) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (blank(line)) {
      i += 1;
      continue;
    }
    let m = FENCE.exec(line);
    if (m) {
      const fence = m[1];
      const body = [];
      i += 1;
      while (i < lines.length) {
        const close = lines[i].trim();
        if (close.startsWith(fence[0].repeat(fence.length)) && /^([`~])\1*$/.test(close)) break;
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (or the end of the text)
      const code = node("code", body.join("\n"));
      if (m[2]) {
        code.className = `language-${m[2].replace(/[^\w+#.-]/g, "")}`;
        code.dataset.lang = m[2];
      }
      out.append(node("pre", code));
      continue;
    }
    m = HEADING.exec(line);
    if (m) {
      const heading = document.createElement(`h${m[1].length}`);
      inline(m[2] || "", heading);
      out.append(heading);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      out.append(document.createElement("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && !blank(lines[i])) {
        const q = QUOTE.exec(lines[i]);
        quoted.push(q ? q[1] : lines[i]);
        i += 1;
      }
      const quote = document.createElement("blockquote");
      blocks(quoted, quote);
      out.append(quote);
      continue;
    }
    if (ITEM.test(line)) {
      i = list(lines, i, out);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      i = table(lines, i, out);
      continue;
    }
    const para = [line];
    i += 1;
    while (i < lines.length && !blank(lines[i]) && !startsBlock(lines[i], lines[i + 1])) {
      para.push(lines[i]);
      i += 1;
    }
    out.append(inlineLines(para, document.createElement("p")));
  }
  return out;
}

/** The Markdown text rendered as a DocumentFragment of safe DOM nodes. */
export function renderMarkdown(text) {
  const source = String(text ?? "").replace(/\r\n?/g, "\n").replace(/\t/g, "    ");
  return blocks(source.split("\n"), document.createDocumentFragment());
}

/** Replace the children of `element` with the rendered Markdown; returns the element. */
export function renderMarkdownInto(element, text) {
  element.replaceChildren(renderMarkdown(text));
  return element;
}

export default renderMarkdown;
