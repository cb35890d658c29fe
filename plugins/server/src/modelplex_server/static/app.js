// The chat page: conversations, the composer, streamed answers. Uses only the REST API.

import { api, ApiError, setApiKey, streamChat } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { ModelSelector } from "./selector.js";

const $ = (id) => document.getElementById(id);
const MODES = { precise: 0.2, balanced: 0.7, creative: 1.1 };
const state = { conv: null, model: localStorage.getItem("modelplex.model"), stream: null,
                conversations: [] };

function node(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined && text !== null) n.textContent = text;
  return n;
}

// -- messages ---------------------------------------------------------------------------------
function addMessage(role, content = "") {
  $("empty").hidden = true;
  const msg = node("article", "msg " + role);
  msg.setAttribute("aria-label", role === "user" ? "You" : "Assistant");
  const body = node("div", "body");
  msg.append(body, node("div", "meta"));
  msg.text = content;
  if (role === "user") body.textContent = content;
  else renderMarkdown(content, body);
  $("messages").append(msg);
  msg.scrollIntoView({ block: "end" });
  return msg;
}

function setMeta(msg, text, error) {
  const meta = msg.querySelector(".meta");
  meta.replaceChildren();
  if (error) {
    const box = node("div", "error", error);
    box.setAttribute("role", "alert");
    meta.append(box);
  }
  if (text) meta.append(node("span", "stats", text));
}

function markLastAssistant() {
  for (const b of document.querySelectorAll("button.regen")) b.remove();
  const all = document.querySelectorAll("#messages .msg.assistant");
  const last = all[all.length - 1];
  if (!last || !state.conv) return;
  const regen = node("button", "regen", "Regenerate");
  regen.type = "button";
  regen.addEventListener("click", regenerate);
  last.querySelector(".meta").append(regen);
}

function showMessages(conv) {
  for (const m of document.querySelectorAll("#messages .msg")) m.remove();
  $("empty").hidden = Boolean(conv && conv.messages.length);
  for (const m of conv ? conv.messages : []) {
    if (m.role !== "user" && m.role !== "assistant") continue;
    const msg = addMessage(m.role, m.content);
    const meta = m.metadata || {};  // an answer says which model wrote it and its usage
    const u = meta.usage;
    const said = [meta.partial && "stopped: partial answer", meta.model,
                  u && `${u.prompt_tokens} + ${u.completion_tokens} tokens${u.estimated ? " (est.)" : ""}`];
    if (said.some(Boolean)) setMeta(msg, said.filter(Boolean).join(" \u00b7 "));
  }
  markLastAssistant();
}

// -- streaming --------------------------------------------------------------------------------
function options() {
  // "model default" sends no temperature: the provider's own default (greedy for SmolLM2) stands
  const opts = {};
  const temperature = MODES[$("mode").value];
  if (temperature !== undefined) opts.temperature = temperature;
  const max = parseInt($("max-tokens").value, 10);
  if (max > 0) opts.max_tokens = max;
  return opts;
}

function seconds(ms) {
  return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}

async function runTurn(body, msg) {
  const controller = new AbortController();
  state.stream = controller;
  $("send").hidden = true;
  $("stop").hidden = false;
  msg.classList.add("pending");
  const started = performance.now();
  let first = null;
  let done = null;
  let frame = 0;
  const target = msg.querySelector(".body");
  const draw = () => { frame = 0; renderMarkdown(msg.text, target); };
  try {
    await streamChat(body, (event, data) => {
      if (event === "chunk") {
        if (first === null) { first = performance.now() - started; msg.classList.remove("pending"); }
        if (data.content) {
          msg.text += data.content;
          frame ||= requestAnimationFrame(draw);
        }
        if (data.reasoning) {
          let r = msg.querySelector("details.reasoning pre");
          if (!r) {
            const d = node("details", "reasoning");
            d.append(node("summary", null, "Thinking"), (r = node("pre")));
            msg.prepend(d);
          }
          r.textContent += data.reasoning;
        }
      } else if (event === "done") {
        done = data;
      } else if (event === "error") {
        throw new ApiError(502, data);
      }
    }, controller.signal);
    const total = performance.now() - started;
    const u = done && done.usage;
    const parts = [done && done.model];
    if (u) parts.push(`${u.prompt_tokens} + ${u.completion_tokens} tokens${u.estimated ? " (est.)" : ""}`);
    if (first !== null) parts.push("first token " + seconds(first));
    parts.push(seconds(total));
    if (u && total > first) parts.push((u.completion_tokens / ((total - first) / 1000)).toFixed(1) + " tok/s");
    setMeta(msg, parts.filter(Boolean).join(" \u00b7 "));
    msg.dataset.state = "done";
  } catch (err) {
    if (err.name === "AbortError") {
      setMeta(msg, "stopped after " + seconds(performance.now() - started));
      msg.dataset.state = "stopped";
    } else {
      if (err.status === 401) $("key-form").hidden = false;
      setMeta(msg, null, err.message || String(err));
      msg.dataset.state = "error";
    }
  } finally {
    if (frame) cancelAnimationFrame(frame);
    renderMarkdown(msg.text, target);
    msg.classList.remove("pending");
    state.stream = null;
    $("send").hidden = false;
    $("stop").hidden = true;
    markLastAssistant();
    loadConversations();
  }
}

async function send(text) {
  if (state.stream || !text.trim()) return;
  if (!state.model) {
    selector.open();
    return;
  }
  $("input").value = "";
  autosize();
  const user = addMessage("user", text);
  const msg = addMessage("assistant");
  try {
    if (!state.conv) {
      const sp = $("system-prompt").value.trim();
      const conv = await api.createConversation({
        model: state.model, title: text.trim().slice(0, 60), system_prompt: sp || null });
      state.conv = { ...conv, messages: [] };
      history.replaceState(null, "", "#/c/" + conv.id);
    }
  } catch (err) {
    if (err.status === 401) $("key-form").hidden = false;
    setMeta(msg, null, err.message);
    msg.dataset.state = "error";
    user.dataset.unsent = "true";
    return;
  }
  await runTurn({ conversation_id: state.conv.id, message: text, options: options() }, msg);
}

async function regenerate() {
  if (state.stream || !state.conv) return;
  const all = document.querySelectorAll("#messages .msg.assistant");
  all[all.length - 1].remove();
  const msg = addMessage("assistant");
  await runTurn({ conversation_id: state.conv.id, regenerate: true, options: options() }, msg);
}

// -- conversations ----------------------------------------------------------------------------
async function loadConversations() {
  try {
    state.conversations = (await api.conversations()).conversations;
  } catch (err) {
    if (err.status === 401) $("key-form").hidden = false;
    return;
  }
  renderConversations();
}

function renderConversations() {
  const q = $("conv-search").value.trim().toLowerCase();
  const out = document.createDocumentFragment();
  for (const c of state.conversations) {
    if (q && !`${c.title} ${c.model}`.toLowerCase().includes(q)) continue;
    const li = node("li", "conv");
    li.dataset.id = c.id;
    const open = node("button", "open");
    open.type = "button";
    open.append(node("span", "title", c.title), node("small", null, c.model));
    if (state.conv && state.conv.id === c.id) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => openConversation(c.id));
    const rename = node("button", "rename", "\u270e");
    rename.type = "button";
    rename.setAttribute("aria-label", "Rename " + c.title);
    rename.addEventListener("click", () => startRename(li, c));
    const del = node("button", "delete", "\u2715");
    del.type = "button";
    del.setAttribute("aria-label", "Delete " + c.title);
    del.addEventListener("click", () => removeConversation(c));
    li.append(open, rename, del);
    out.append(li);
  }
  $("conv-list").replaceChildren(out);
}

function startRename(li, c) {
  const input = node("input", "rename-input");
  input.value = c.title;
  input.setAttribute("aria-label", "New title");
  let finished = false;
  const finish = async (save) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    if (save && title && title !== c.title) await api.updateConversation(c.id, { title });
    await loadConversations();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); finish(true); }
    if (e.key === "Escape") { e.preventDefault(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

async function removeConversation(c) {
  if (!confirm(`Delete "${c.title}"?`)) return;
  await api.deleteConversation(c.id);
  if (state.conv && state.conv.id === c.id) newChat();
  await loadConversations();
}

async function openConversation(id) {
  if (state.stream) state.stream.abort();
  let conv;
  try {
    conv = await api.conversation(id);
  } catch (err) {
    newChat();
    if (err.status === 401) $("key-form").hidden = false;
    return;
  }
  state.conv = conv;
  state.model = conv.model;
  selector.setCurrent(conv.model);
  $("system-prompt").value = conv.system_prompt || "";
  history.replaceState(null, "", "#/c/" + id);
  showMessages(conv);
  renderConversations();
  document.body.classList.remove("show-sidebar");
  $("input").focus();
}

function newChat() {
  if (state.stream) state.stream.abort();
  state.conv = null;
  state.model = localStorage.getItem("modelplex.model") || state.model;
  selector.setCurrent(state.model);
  $("system-prompt").value = "";
  history.replaceState(null, "", location.pathname);
  showMessages(null);
  renderConversations();
  $("input").focus();
}

// "New chat" (seed 003): a fresh conversation, and the model selector opens to choose its model
function startNewChat() {
  newChat();
  document.body.classList.remove("show-sidebar");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
  selector.open();
}

async function chooseModel(ref) {
  state.model = ref;
  localStorage.setItem("modelplex.model", ref);
  if (state.conv && state.conv.model !== ref) {
    state.conv = { ...state.conv, ...(await api.updateConversation(state.conv.id, { model: ref })) };
    loadConversations();
  }
}

// -- wiring -----------------------------------------------------------------------------------
function autosize() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = Math.min(input.scrollHeight, 240) + "px";
}

function toggle(button, panel) {
  panel.hidden = !panel.hidden;
  button.setAttribute("aria-expanded", String(!panel.hidden));
}

const selector = new ModelSelector({
  button: $("model-button"), label: $("model-label"), dot: $("model-dot"),
  panel: $("model-panel"), search: $("model-search"), capability: $("filter-capability"),
  local: $("filter-local"), refresh: $("model-refresh"), list: $("model-list"),
}, chooseModel);

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send($("input").value); });
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send($("input").value);
  }
});
$("input").addEventListener("input", autosize);
$("stop").addEventListener("click", () => state.stream && state.stream.abort());
$("new-chat").addEventListener("click", startNewChat);
selector.addOpener($("new-chat"));
$("conv-search").addEventListener("input", renderConversations);
$("settings-button").addEventListener("click", () => toggle($("settings-button"), $("settings")));
$("toggle-sidebar").addEventListener("click", () => {
  const shown = document.body.classList.toggle("show-sidebar");
  $("toggle-sidebar").setAttribute("aria-expanded", String(shown));
});
$("main").addEventListener("click", (e) => {  // phone width: a tap beside the drawer closes it
  if (document.body.classList.contains("show-sidebar") && !$("toggle-sidebar").contains(e.target)) {
    document.body.classList.remove("show-sidebar");
    $("toggle-sidebar").setAttribute("aria-expanded", "false");
  }
});
$("system-prompt").addEventListener("change", async () => {
  if (state.conv) {
    await api.updateConversation(state.conv.id, { system_prompt: $("system-prompt").value.trim() || null });
  }
});
for (const id of ["mode", "max-tokens"]) {
  const el = $(id);
  el.value = localStorage.getItem("modelplex." + id) ?? el.value;
  el.addEventListener("change", () => localStorage.setItem("modelplex." + id, el.value));
}
$("api-key-save").addEventListener("click", () => {
  setApiKey($("api-key").value.trim());
  location.reload();
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && state.stream) state.stream.abort();
});

async function start() {
  selector.setCurrent(state.model);
  const match = /^#\/c\/([\w-]+)$/.exec(location.hash);
  const loading = selector.load().catch((err) => {
    if (err.status === 401) $("key-form").hidden = false;
  });
  await loadConversations();
  if (match) await openConversation(match[1]);
  await loading;
  document.body.dataset.ready = "true";
}

start();
