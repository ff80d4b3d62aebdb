"""The search page at ``/``: a query box, mode and language filters, and hits with their
language, title, metadata and passage, the matched words highlighted. One self-contained
HTML document (no external script, style or font), so it works on a machine without
network; it asks ``GET /search`` like any client and builds the hits with DOM calls
(never ``innerHTML``), so no stored text can run as markup.
"""
from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>xlsearch</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 52rem; padding: 0 1rem; color: #1b1b1b; }
  h1 { font-size: 1.4rem; margin: 0 0 1rem; }
  form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
  #q { flex: 1 1 20rem; font-size: 1.05rem; padding: .45rem .6rem; }
  select, input, button { font: inherit; padding: .35rem .5rem; }
  #lang { width: 6rem; } #key { width: 10rem; }
  #status { color: #555; margin: .8rem 0; min-height: 1.2rem; }
  ol { padding-left: 1.6rem; } li { margin: 0 0 1.1rem; }
  .head { display: flex; gap: .5rem; flex-wrap: wrap; align-items: baseline; }
  .id { font-weight: 600; } .lang { background: #e8eef7; border-radius: .3rem; padding: 0 .35rem; font-size: .85rem; }
  .title { color: #333; } .score { color: #777; font-size: .85rem; margin-left: auto; }
  .meta { color: #555; font-size: .85rem; } .passage { margin: .25rem 0 0; }
  mark { background: #ffe27a; padding: 0 .1rem; }
  .error { color: #a00; }
</style>
</head>
<body>
<h1>xlsearch</h1>
<form id="form">
  <input id="q" name="q" type="search" placeholder="Ask in any language" autofocus required>
  <select id="mode" name="mode" aria-label="mode">
    <option value="hybrid">hybrid</option><option value="dense">dense</option><option value="lexical">lexical</option>
  </select>
  <input id="lang" name="lang" placeholder="language" aria-label="only documents in this language">
  <input id="key" name="key" type="password" placeholder="API key (if needed)" aria-label="API key">
  <button id="go" type="submit">Search</button>
</form>
<div id="status"></div>
<ol id="hits"></ol>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
$("key").value = sessionStorage.getItem("xlsearch-key") || "";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function passage(text, spans) {
  const p = el("p", "passage");
  let at = 0;
  for (const [start, end] of spans) {
    if (start > at) p.append(text.slice(at, start));
    p.append(el("mark", "", text.slice(start, end)));
    at = end;
  }
  p.append(text.slice(at));
  return p;
}

function hit(h) {
  const li = el("li");
  const head = el("div", "head");
  head.append(el("span", "id", h.id), el("span", "lang", h.lang || "?"));
  if (h.title) head.append(el("span", "title", h.title));
  head.append(el("span", "score", "score " + h.score.toFixed(4)));
  li.append(head);
  const meta = Object.entries(h.metadata || {});
  if (meta.length) li.append(el("div", "meta", meta.map(([k, v]) => k + ": " + JSON.stringify(v)).join(" · ")));
  li.append(passage(h.passage, h.highlights || []));
  return li;
}

async function search(event) {
  event.preventDefault();
  const params = new URLSearchParams({ q: $("q").value, mode: $("mode").value, k: "10" });
  if ($("lang").value.trim()) params.set("lang", $("lang").value.trim());
  const key = $("key").value;
  sessionStorage.setItem("xlsearch-key", key);
  $("status").className = ""; $("status").textContent = "searching...";
  $("hits").replaceChildren();
  try {
    const response = await fetch("search?" + params, { headers: key ? { Authorization: "Bearer " + key } : {} });
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || response.statusText);
    $("hits").replaceChildren(...body.hits.map(hit));
    const n = body.hits.length;
    $("status").textContent = n ? n + (n === 1 ? " document" : " documents") + " (" + body.mode + ")" : "no documents match";
  } catch (error) {
    $("status").className = "error"; $("status").textContent = "error: " + error.message;
  }
}
$("form").addEventListener("submit", search);
</script>
</body>
</html>
"""
