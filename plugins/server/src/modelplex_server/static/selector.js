// The model selector: models grouped by provider with health dots, named models first,
// search as you type and filters (through GET /api/models/search), details on expand.

import { api } from "./api.js";

/** The model id to chat with: a named model by its name, others as provider:model. */
export const modelRef = (m) => (m.provider === "named" ? m.name : m.id);

function node(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined && text !== null) n.textContent = text;
  return n;
}

function params(m) {
  if (m.parameter_size) return m.parameter_size;
  if (!m.parameter_count) return null;
  const n = m.parameter_count;
  return n >= 1e9 ? (n / 1e9).toFixed(1) + "B" : Math.round(n / 1e6) + "M";
}

function details(m) {
  const dl = node("dl", "details");
  const rows = [
    ["Size", m.size], ["Parameters", params(m)], ["Quantization", m.quantization],
    ["Context length", m.context_length ? m.context_length.toLocaleString("en") + " tokens" : null],
    ["Capabilities", (m.capabilities || []).join(", ") || null], ["Family", m.family],
    ["Stands for", m.details && m.details.target],
  ];
  for (const [name, value] of rows) {
    if (!value) continue;
    dl.append(node("dt", null, name), node("dd", null, String(value)));
  }
  return dl;
}

export class ModelSelector {
  constructor(els, onChoose) {
    this.els = els;
    this.onChoose = onChoose;
    this.providers = new Map();   // name -> /api/providers entry
    this.grouped = {};            // provider -> [ModelInfo] (unfiltered)
    this.errors = {};
    this.current = null;
    this.seq = 0;
    this.timer = null;
    const { button, panel, search, capability, local, refresh } = els;
    this.openers = [button];      // clicks on these do not count as clicks outside the panel
    button.addEventListener("click", () => (panel.hidden ? this.open() : this.close()));
    search.addEventListener("input", () => this.schedule());
    capability.addEventListener("change", () => this.update());
    local.addEventListener("change", () => this.update());
    refresh.addEventListener("click", () => this.load(true));
    panel.addEventListener("keydown", (e) => this.keydown(e));
    document.addEventListener("click", (e) => {
      if (!panel.hidden && !panel.contains(e.target) &&
          !this.openers.some((o) => o.contains(e.target))) this.close();
    });
  }

  async load(refresh = false) {
    const [providers, models] = await Promise.all([api.providers(), api.models(refresh)]);
    this.providers = new Map(providers.providers.map((p) => [p.provider, p]));
    this.grouped = models.models;
    this.errors = models.errors || {};
    this.setCurrent(this.current);
    await this.update();
  }

  /** The variable a provider needs before it can be used (not configured), or null. */
  missing(name) {
    const p = this.providers.get(name);
    return (p && (p.missing || (p.health && p.health.missing))) || null;
  }

  /** "ok", "bad", "off" (not configured) or "unknown" for a provider. */
  health(name) {
    const p = this.providers.get(name);
    if (!p) return "unknown";
    if (this.missing(name)) return "off";
    const h = p.health;
    return p.available && (!h || h.available) ? "ok" : "bad";
  }

  providerOf(ref) {
    if (!ref) return null;
    const named = (this.grouped.named || []).find((m) => m.name === ref);
    const target = named ? named.details.target : ref;
    return target.includes(":") ? target.split(":")[0] : target;
  }

  setCurrent(ref) {
    this.current = ref;
    this.els.label.textContent = ref || "Choose a model";
    this.els.dot.className = "dot " + (ref ? this.health(this.providerOf(ref)) : "unknown");
    for (const b of this.els.list.querySelectorAll("button.pick")) {
      b.setAttribute("aria-pressed", String(b.dataset.model === ref));
    }
  }

  /** Let ``el`` open the panel too (its click is not a click outside). */
  addOpener(el) {
    this.openers.push(el);
  }

  open() {
    this.els.panel.hidden = false;
    this.els.button.setAttribute("aria-expanded", "true");
    this.els.search.focus();
  }

  close(focusButton = false) {
    this.els.panel.hidden = true;
    this.els.button.setAttribute("aria-expanded", "false");
    if (focusButton) this.els.button.focus();
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.update(), 120);
  }

  async update() {
    const q = this.els.search.value.trim();
    const capability = this.els.capability.value;
    const local = this.els.local.value;
    const seq = ++this.seq;
    let grouped = this.grouped;
    const filtered = Boolean(q || capability || local);
    if (filtered) {
      const query = {};
      if (q) query.q = q;
      if (capability) query.capability = capability;
      if (local) query.local = local;
      const found = await api.search(query);
      if (seq !== this.seq) return;  // a newer search is under way
      grouped = {};
      for (const m of found.models) (grouped[m.provider] ||= []).push(m);
    }
    this.render(grouped, filtered);
  }

  render(grouped, filtered) {
    const list = this.els.list;
    // providers that are not configured go last, greyed and collapsed (no search hits them)
    const names = Object.keys(grouped).filter((n) => n !== "named").sort(
      (a, b) => Boolean(this.missing(a)) - Boolean(this.missing(b)) || a.localeCompare(b));
    if (filtered) names.splice(0, names.length, ...names.filter((n) => grouped[n].length));
    if (grouped.named && grouped.named.length) names.unshift("named");
    const out = document.createDocumentFragment();
    for (const name of names) {
      const group = node("section", "group");
      group.dataset.provider = name;
      const head = node("h3");
      if (name === "named") {
        head.append(node("span", "star", "\u2605"), " Named models");
      } else {
        const state = this.health(name);
        const dot = node("span", "dot " + state);
        dot.title = { ok: "healthy", bad: "unavailable", off: "not configured" }[state] ||
          "not checked";
        const p = this.providers.get(name);
        head.append(dot, " " + name, node("small", null, p ? (p.local ? " local" : " remote") : ""));
      }
      group.append(head);
      const missing = name !== "named" && this.missing(name);
      if (missing) {  // never contacted: say what to set, not an error
        group.classList.add("off");
        group.append(node("p", "setup", "not configured: set " + missing));
        out.append(group);
        continue;
      }
      const error = !filtered && (this.errors[name] ||
        (this.providers.get(name) && this.providers.get(name).error));
      if (error) group.append(node("p", "error", error));
      const ul = node("ul");
      for (const m of grouped[name]) ul.append(this.row(m));
      group.append(ul);
      out.append(group);
    }
    if (!names.length) out.append(node("p", "none", "No model matches."));
    list.replaceChildren(out);
    this.setCurrent(this.current);
  }

  row(m) {
    const li = node("li", "model");
    const pick = node("button", "pick");
    pick.type = "button";
    pick.dataset.model = modelRef(m);
    pick.append(node("span", "name", m.name));
    const target = m.details && m.details.target;
    for (const badge of [target && "\u2192 " + target, params(m), m.quantization, m.size]) {
      if (badge) pick.append(node("span", "badge", badge));
    }
    pick.addEventListener("click", () => this.choose(modelRef(m)));
    const info = node("button", "info", "i");
    info.type = "button";
    info.setAttribute("aria-label", "Details of " + m.name);
    info.setAttribute("aria-expanded", "false");
    const dl = details(m);
    dl.hidden = true;
    info.addEventListener("click", () => {
      dl.hidden = !dl.hidden;
      info.setAttribute("aria-expanded", String(!dl.hidden));
    });
    li.append(pick, info, dl);
    return li;
  }

  choose(ref) {
    this.setCurrent(ref);
    this.close(true);
    this.onChoose(ref);
  }

  keydown(e) {
    if (e.key === "Escape") {
      e.preventDefault();
      this.close(true);
      return;
    }
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    const picks = [...this.els.list.querySelectorAll("button.pick")];
    if (!picks.length) return;
    e.preventDefault();
    const at = picks.indexOf(document.activeElement);
    const next = e.key === "ArrowDown" ? Math.min(picks.length - 1, at + 1)
      : at <= 0 ? -1 : at - 1;
    (next < 0 ? this.els.search : picks[next]).focus();
  }
}
