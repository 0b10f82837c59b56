// The StemeDB dashboard: lens queries, assertion views with in-browser inclusion proofs
// (BLAKE3 from blake3.js, Ed25519 and SHA-256 from WebCrypto), live stats and the quarantine.
// No dependencies and no build step; the server embeds these files.
import { blake3 } from "./blake3.js";

const $ = (id) => document.getElementById(id);
const enc = new TextEncoder();
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};
const short = (h) => (h && h.length > 16 ? `${h.slice(0, 12)}…` : h);
/** ISO time of Unix milliseconds (the number itself when it is out of Date's range). */
const iso = (ms) => {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString();
};

/** Fetches a JSON (or text) answer; a problem answer becomes an Error with its detail. */
async function api(path, { method = "GET", body, token, text = false } = {}) {
  const headers = { Accept: text ? "text/plain" : "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) {
    let detail = `${r.status} ${r.statusText}`;
    try { const p = await r.json(); detail = `${p.title || r.status}: ${p.detail || p.code}`; } catch { /* not JSON */ }
    throw new Error(detail);
  }
  return text ? r.text() : r.json();
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function show(view) {
  for (const v of ["query-view", "assertion-view", "quarantine-view"]) $(v).hidden = v !== view;
}

// ---- queries ----------------------------------------------------------------------------
let lastQuery = null;
let nextCursor = null;

function idButton(id, label) {
  return el("button", { type: "button", class: "link", "data-id": id, title: id,
    "aria-label": `${label} ${id}`, onclick: () => openAssertion(id, true) }, short(id));
}

/** An alternative: its value, agent and time when the raw answer has it, and its id. */
function alternative(id, details) {
  const d = details.get(id);
  const item = el("div", { class: "alt" });
  if (d) {
    item.append(el("code", {}, JSON.stringify(d.object)), " ",
      el("span", { class: "mono", title: d.agent }, short(d.agent)), " ", iso(d.ts), " ");
  }
  item.append(idButton(id, "alternative"));
  return item;
}

function renderRows(results, append, details) {
  const body = $("results").querySelector("tbody");
  if (!append) body.replaceChildren();
  for (const r of results) {
    const w = r.winner;
    const alts = el("td");
    for (const a of r.alternatives || []) alts.append(alternative(a, details));
    body.append(el("tr", {},
      el("td", { class: "mono" }, r.subject),
      el("td", { class: "mono" }, r.predicate),
      el("td", {}, el("code", {}, JSON.stringify(w.object)), " ", idButton(w.id, "winner")),
      el("td", { class: "mono", title: w.agent }, short(w.agent)),
      el("td", {}, iso(w.ts)),
      el("td", {}, Number(w.confidence).toFixed(2)),
      el("td", {}, `${Math.round((r.agreement ?? 1) * 100)}%`),
      el("td", {}, r.conflict ? el("span", { class: "badge conflict" }, "conflict")
        : el("span", { class: "badge agree" }, "agree")),
      alts));
  }
  $("results").hidden = body.children.length === 0;
}

async function runQuery(q, append = false) {
  $("query-status").textContent = "Searching…";
  const body = { subject: q.subject, match: q.match, lens: q.lens, limit: 50 };
  if (append && nextCursor) body.cursor = nextCursor;
  let when;
  try {
    when = validTime(q.valid_at);
  } catch (e) {
    $("query-status").textContent = e.message;
    return;
  }
  Object.assign(body, when.params);
  try {
    const a = await api("/v1/query", { method: "POST", body });
    lastQuery = q;
    nextCursor = a.next_cursor;
    // The agents and times of the alternatives: one raw query of the same subjects, as of the
    // same tree size (the resolved answer names alternatives by id only).
    const details = new Map();
    if (q.lens !== "raw" && a.results.some((r) => (r.alternatives || []).length)) {
      try {
        const raw = await api("/v1/query", { method: "POST",
          body: { subject: q.subject, match: q.match, lens: "raw", as_of: a.tree_size, limit: 1000, ...when.params } });
        for (const r of raw.results) details.set(r.winner.id, r.winner);
      } catch { /* ids alone still link to each alternative */ }
    }
    renderRows(a.results, append, details);
    const n = $("results").querySelector("tbody").children.length;
    $("results-caption").textContent =
      `${q.match} match on ${q.subject}, lens ${q.lens}${when.label}, at tree size ${a.tree_size}`;
    $("query-status").textContent = n ? `${n} result${n === 1 ? "" : "s"}` : "No results";
    $("more").hidden = !nextCursor;
  } catch (e) {
    $("query-status").textContent = `Query failed: ${e.message}`;
  }
}

/** The valid-time parameters of the "Valid at" field: empty (no filter), "now" (current=true),
 * Unix ms, or a date and time (UTC unless it names a zone). Throws on anything else. */
function validTime(text) {
  const t = (text || "").trim();
  if (!t) return { params: {}, label: "" };
  if (t.toLowerCase() === "now") return { params: { current: true }, label: ", holding now" };
  let ms;
  if (/^-?\d+$/.test(t)) ms = Number(t);
  else {
    // A date-time without a zone is read as UTC, the same on every machine.
    const iso = /^\d{4}-\d{2}-\d{2}(T[\d:.]+)?$/.test(t) ? `${t.includes("T") ? t : t + "T00:00"}Z` : t;
    ms = Date.parse(iso);
  }
  if (!Number.isFinite(ms)) throw new Error(`Valid at: "${t}" is not a date, Unix ms or "now"`);
  return { params: { valid_at: ms }, label: `, valid at ${new Date(ms).toISOString()}` };
}

function formQuery() {
  return { subject: $("subject").value.trim(), match: $("match").value, lens: $("lens").value,
    valid_at: $("valid-at").value.trim() };
}

function queryUrl(q) {
  const p = { subject: q.subject, match: q.match, lens: q.lens };
  if (q.valid_at) p.valid_at = q.valid_at;
  return `/?${new URLSearchParams(p)}`;
}

// ---- assertions and proofs --------------------------------------------------------------
let current = null;

async function openAssertion(id, push) {
  if (push) history.pushState({}, "", `/?id=${id}`);
  show("assertion-view");
  current = null;
  $("verify").disabled = true;
  $("verify-result").textContent = "";
  $("assertion-meta").replaceChildren();
  $("assertion-statement").textContent = "";
  $("assertion-envelope").textContent = "";
  try {
    const a = await api(`/v1/assertions/${id}`);
    current = a;
    const st = JSON.parse(new TextDecoder().decode(b64(a.envelope.payload)));
    const meta = [["Id", a.id], ["Log index", a.log_index], ["Status", a.status],
      ["Agent", st.agent], ["Time", iso(st.ts)]];
    for (const [k, v] of meta) $("assertion-meta").append(el("dt", {}, k), el("dd", {}, v));
    $("assertion-statement").textContent = JSON.stringify(st, null, 2);
    $("assertion-envelope").textContent = JSON.stringify(a.envelope, null, 2);
    $("verify").disabled = false;
    $("assertion-title").focus();
  } catch (e) {
    current = null;
    $("verify-result").textContent = `Cannot load ${id}: ${e.message}`;
  }
}

/** RFC 9162 §2.1.3.2: the root an inclusion proof implies. */
function rootFromProof(leaf, index, size, path) {
  if (index >= size) throw new Error("leaf index past the tree size");
  let fn = index, sn = size - 1, r = leaf;
  const node = (l, rr) => blake3(concat(Uint8Array.of(1), l, rr));
  for (const p of path) {
    if (sn === 0) throw new Error("proof longer than the tree is deep");
    if (fn % 2 === 1 || fn === sn) {
      r = node(p, r);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = node(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("proof shorter than the tree is deep");
  return r;
}

/** Checks the C2SP signed note with WebCrypto Ed25519; returns {origin, size, root}. */
async function verifyNote(text, key) {
  const cut = text.indexOf("\n\n");
  if (cut < 0) throw new Error("checkpoint has no signature block");
  const body = text.slice(0, cut + 1);
  const [origin, size, rootB64] = body.trimEnd().split("\n");
  const pub = unhex(key.public_key);
  const id = new Uint8Array(await crypto.subtle.digest("SHA-256",
    concat(enc.encode(key.key_name), Uint8Array.of(0x0a, 0x01), pub))).slice(0, 4);
  const vk = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
  for (const line of text.slice(cut + 2).split("\n")) {
    const m = line.match(/^\u2014 (\S+) (\S+)$/);
    if (!m || m[1] !== key.key_name) continue;
    const blob = b64(m[2]);
    if (blob.length !== 68 || hex(blob.slice(0, 4)) !== hex(id)) continue;
    if (!(await crypto.subtle.verify({ name: "Ed25519" }, vk, blob.slice(4), enc.encode(body)))) {
      throw new Error("the checkpoint signature does not verify");
    }
    return { origin, size: Number(size), root: b64(rootB64) };
  }
  throw new Error(`no signature by ${key.key_name} on the checkpoint`);
}

async function verifyInclusion() {
  const out = $("verify-result");
  if (!current) return;
  out.className = "";
  out.textContent = "Verifying…";
  try {
    if (!globalThis.crypto?.subtle) {
      throw new Error("WebCrypto is not available here: open the page over https:// or from localhost");
    }
    const env = current.envelope;
    const payload = b64(env.payload);
    const type = enc.encode(env.payloadType);
    const pae = concat(enc.encode(`DSSEv1 ${type.length} `), type, enc.encode(` ${payload.length} `), payload);
    if (hex(blake3(pae)) !== current.id) throw new Error("the envelope does not hash to its id");
    const key = await api("/v1/checkpoint/key");
    const cp = await verifyNote(await api("/v1/checkpoint", { text: true }), key);
    const p = await api(`/v1/proof/inclusion?id=${current.id}&tree_size=${cp.size}`);
    const leaf = blake3(concat(Uint8Array.of(0), unhex(current.id)));
    const root = rootFromProof(leaf, p.leaf_index, p.tree_size, p.audit_path.map(unhex));
    if (p.tree_size !== cp.size || hex(root) !== hex(cp.root)) {
      throw new Error("the proof does not lead to the signed root");
    }
    out.className = "ok";
    out.textContent = `Verified in this browser: ${short(current.id)} is leaf ${p.leaf_index} of the ` +
      `tree of size ${cp.size} whose root ${short(hex(cp.root))} is signed by ${key.key_name} ` +
      `(key ${short(key.public_key)}; compare it with the key you pinned).`;
  } catch (e) {
    out.className = "fail";
    out.textContent = `Not verified: ${e.message}`;
  }
}

// ---- live stats -------------------------------------------------------------------------
let previous = null;

async function refreshStats() {
  try {
    const ready = await api("/v1/ready");
    const now = performance.now();
    $("stat-tree").textContent = ready.tree_size.toLocaleString("en");
    if (previous) {
      const rate = ((ready.tree_size - previous.size) * 1000) / (now - previous.t);
      $("stat-rate").textContent = `${Math.max(0, Math.round(rate)).toLocaleString("en")}/s`;
    }
    previous = { size: ready.tree_size, t: now };
    const metrics = await api("/metrics", { text: true });
    const m = metrics.match(/^stemedb_quarantine_size (\S+)$/m);
    if (m) $("stat-quarantine").textContent = Number(m[1]).toLocaleString("en");
  } catch {
    $("stat-tree").textContent = "unavailable";
  }
}

// ---- quarantine -------------------------------------------------------------------------
async function loadQuarantine() {
  const token = $("token").value;
  sessionStorage.setItem("stemedb-admin-token", token);
  const status = $("quarantine-status");
  const body = $("quarantine-table").querySelector("tbody");
  try {
    const q = await api("/v1/admin/quarantine?limit=100", { token });
    body.replaceChildren();
    for (const e of q.entries) {
      let statement = "";
      try { statement = new TextDecoder().decode(b64(e.envelope.payload)); } catch { statement = "?"; }
      const decide = async (what) => {
        try {
          await api(`/v1/admin/quarantine/${e.id}/${what}`, { method: "POST", token, body: {} });
          status.textContent = `${what === "release" ? "Released" : "Rejected"} ${short(e.id)}`;
          await loadQuarantine();
        } catch (err) {
          status.textContent = `Could not ${what} ${short(e.id)}: ${err.message}`;
        }
      };
      body.append(el("tr", {},
        el("td", { class: "mono", title: e.id }, short(e.id)),
        el("td", { class: "mono", title: e.agent }, short(e.agent)),
        el("td", {}, (e.reasons || []).join(", ")),
        el("td", {}, iso(e.received_at_ms)),
        el("td", {}, el("code", {}, statement)),
        el("td", {},
          el("button", { type: "button", "aria-label": `Release ${e.id}`, onclick: () => decide("release") }, "Release"), " ",
          el("button", { type: "button", "aria-label": `Reject ${e.id}`, onclick: () => decide("reject") }, "Reject"))));
    }
    $("quarantine-table").hidden = q.entries.length === 0;
    status.textContent = `${q.total} held`;
  } catch (e) {
    $("quarantine-table").hidden = true;
    status.textContent = `Cannot load the quarantine: ${e.message}`;
  }
}

// ---- routing ----------------------------------------------------------------------------
function route() {
  const p = new URLSearchParams(location.search);
  if (p.get("view") === "quarantine") {
    show("quarantine-view");
    $("token").value = sessionStorage.getItem("stemedb-admin-token") || "";
    return;
  }
  if (p.get("id")) {
    openAssertion(p.get("id"), false);
    return;
  }
  show("query-view");
  if (p.get("subject")) {
    $("subject").value = p.get("subject");
    for (const k of ["match", "lens"]) {
      if (p.get(k) && [...$(k).options].some((o) => o.value === p.get(k))) $(k).value = p.get(k);
    }
    $("valid-at").value = p.get("valid_at") || (p.get("current") === "true" ? "now" : "");
    runQuery(formQuery());
  }
}

$("query-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = formQuery();
  history.pushState({}, "", queryUrl(q));
  runQuery(q);
});
$("more").addEventListener("click", () => lastQuery && runQuery(lastQuery, true));
$("verify").addEventListener("click", verifyInclusion);
$("back").addEventListener("click", () => {
  if (lastQuery) { history.pushState({}, "", queryUrl(lastQuery)); show("query-view"); $("subject").focus(); } else { history.back(); }
});
$("token-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadQuarantine(); });
window.addEventListener("popstate", route);
route();
refreshStats();
setInterval(refreshStats, 2000);
