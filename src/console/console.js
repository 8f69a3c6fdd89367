// facegate console: a client of the public API. The API key lives in `session.key` (this
// page's memory) and nowhere else: no storage, no cookie, gone on reload.
"use strict";

const session = { key: "", photo: null, image: null };
const $ = (id) => document.getElementById(id);

/// One API call: the status and, by content type, the parsed XML document or JSON.
async function api(method, path, body) {
  const headers = {};
  if (session.key) headers["X-API-Key"] = session.key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const type = res.headers.get("content-type") || "";
  let xml = null, json = null;
  if (type.includes("xml")) xml = new DOMParser().parseFromString(text, "application/xml");
  else if (type.includes("json")) { try { json = JSON.parse(text); } catch (_) { json = null; } }
  return { status: res.status, xml, json, text };
}

const el = (node, name) => node && node.getElementsByTagName(name)[0];
const txt = (node, name) => { const e = el(node, name); return e ? e.textContent : ""; };
const kids = (node, name) => node ? Array.from(node.getElementsByTagName(name)) : [];

/// The error of a non-200 answer, as a person reads it.
function problem(r) {
  if (r.status === 401) return "Wrong API key: the server refused it (401 UNAUTHORIZED).";
  if (r.xml && el(r.xml, "ErrorResponse")) {
    const root = el(r.xml, "ErrorResponse");
    const gate = ["quality_score", "pad_score", "mad_score"].map((g) => txt(root, g) && `${g} ${txt(root, g)}`).filter(Boolean);
    return `${r.status} ${txt(root, "status")}: ${txt(root, "message")}${gate.length ? " (" + gate.join(", ") + ")" : ""}`;
  }
  return `${r.status}: ${r.text.slice(0, 200)}`;
}

function say(message, kind) {
  const s = $("status");
  s.textContent = message;
  s.className = kind || "";
}

function partition() {
  const fresh = $("new-partition").value.trim();
  return fresh || $("partition").value || "default";
}

// ---- sign in -------------------------------------------------------------------------

async function signIn(ev) {
  ev.preventDefault();
  session.key = $("key").value;
  $("key").value = "";
  const r = await api("GET", "/api/v1/stats");
  if (r.status !== 200) {
    session.key = "";
    const e = $("signin-error");
    e.textContent = r.status === 401 ? "Wrong API key: the server refused it." : problem(r);
    e.hidden = false;
    return;
  }
  $("signin-error").hidden = true;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("who-text").textContent = session.key ? "signed in with a key" : "no key (open server)";
  await showStats(r.json);
}

function signOut() {
  session.key = "";
  session.photo = session.image = null;
  $("app").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  $("result").textContent = "";
  say("");
}

async function refresh() {
  const r = await api("GET", "/api/v1/stats");
  if (r.status === 200) await showStats(r.json); else say(problem(r), "error");
}

async function showStats(stats) {
  const parts = stats && stats.partitions ? stats.partitions : {};
  const listed = await api("GET", "/api/v1/partitions");
  const names = (listed.json && listed.json.partitions ? listed.json.partitions : Object.keys(parts)).slice().sort();
  const select = $("partition");
  const keep = select.value;
  select.textContent = "";
  for (const n of (names.length ? names : ["default"])) {
    const o = document.createElement("option");
    o.value = o.textContent = n;
    select.appendChild(o);
  }
  if (names.includes(keep)) select.value = keep;
  const body = $("stats").tBodies[0];
  body.textContent = "";
  for (const n of names) row(body, [n, n in parts ? String(parts[n]) : "-"]);
  row(body, ["total", String(stats ? stats.total_subjects : 0)]).style.fontWeight = "600";
  for (const d of (stats && stats.degraded) || []) row(body, [d, "degraded"]);
}

function row(body, cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c;
    tr.appendChild(td);
  }
  body.appendChild(tr);
  return tr;
}

function tag(text, kind) {
  const s = document.createElement("span");
  s.className = "tag " + kind;
  s.textContent = text;
  return s;
}

// ---- the photo -----------------------------------------------------------------------

function usePhoto(dataUrl) {
  session.photo = dataUrl.slice(dataUrl.indexOf(",") + 1);
  const img = new Image();
  img.onload = () => { session.image = img; draw([]); };
  img.src = dataUrl;
  $("result").textContent = "";
  say("");
}

function pickFile() {
  const f = $("file").files[0];
  if (!f) return;
  const reader = new FileReader();
  reader.onload = () => usePhoto(reader.result);
  reader.readAsDataURL(f);
}

async function webcam() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    $("video").srcObject = stream;
    $("video").hidden = false;
    $("snap").hidden = false;
  } catch (e) {
    say("No webcam: " + e.message, "error");
  }
}

function snap() {
  const v = $("video");
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  usePhoto(c.toDataURL("image/jpeg", 0.92));
  for (const t of v.srcObject.getTracks()) t.stop();
  v.hidden = true; $("snap").hidden = true;
}

/// The photo with every face's box and label: [{box:[x,y,w,h], label, colour}].
function draw(faces) {
  const img = session.image;
  const c = $("canvas");
  if (!img) return;
  const k = Math.min(1, 1000 / img.naturalWidth);
  c.width = Math.round(img.naturalWidth * k);
  c.height = Math.round(img.naturalHeight * k);
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0, c.width, c.height);
  g.lineWidth = 3;
  g.font = "600 15px system-ui, sans-serif";
  for (const f of faces) {
    const [x, y, w, h] = f.box.map((v) => v * k);
    g.strokeStyle = f.colour;
    g.strokeRect(x, y, w, h);
    const lines = f.label.split("\n");
    const width = Math.max(...lines.map((l) => g.measureText(l).width)) + 10;
    const top = Math.max(0, y - 20 * lines.length - 2);
    g.fillStyle = f.colour;
    g.fillRect(x - 1.5, top, width, 20 * lines.length);
    g.fillStyle = "#fff";
    lines.forEach((l, i) => g.fillText(l, x + 4, top + 15 + 20 * i));
  }
}

const COLOURS = { match: "#1a8f4c", unknown: "#c77700", refused: "#c62828" };

/// Every face identify reports, drawn; returns the faces for the result table.
function facesOf(doc, p) {
  return kids(doc, "face").map((f) => {
    const b = el(f, "box");
    const box = ["x", "y", "width", "height"].map((n) => Number(txt(b, n)));
    const searched = txt(f, "searched") === "true";
    let cands = [];
    if (searched) {
      const part = kids(f, "partition").find((x) => txt(x, "name") === p) || kids(f, "partition")[0];
      cands = kids(part, "candidate").map((c) => ({ subject: txt(c, "subject_id"), score: txt(c, "score") }));
    }
    const kind = !searched ? "refused" : cands.length ? "match" : "unknown";
    const gates = `q ${txt(f, "quality_score") || "-"} · PAD ${txt(f, "pad_score") || "-"} ${txt(f, "pad_decision")}`;
    const who = !searched ? `not searched: ${txt(f, "not_searched")}` : cands.length ? `${cands[0].subject} ${cands[0].score}` : "unknown";
    return { index: txt(f, "index"), box, kind, who, gates, cands, colour: COLOURS[kind], label: `${who}\n${gates}` };
  });
}

function need(photo, subject) {
  if (photo && !session.photo) { say("Choose a photo first.", "error"); return false; }
  if (subject && !$("subject").value.trim()) { say("Enter a subject_id.", "error"); return false; }
  return true;
}

const numberOr = (id, fallback) => { const v = Number($(id).value); return Number.isFinite(v) && $(id).value !== "" ? v : fallback; };

async function run(label, fn) {
  for (const b of document.querySelectorAll(".actions button")) b.disabled = true;
  say(label + " ...");
  try { await fn(); } catch (e) { say(label + " failed: " + e.message, "error"); }
  for (const b of document.querySelectorAll(".actions button")) b.disabled = false;
}

async function identifyAndDraw(p) {
  const r = await api("POST", "/api/v1/identify", { image: session.photo, partitions: [p], top_k: numberOr("top-k", 5), min_score: numberOr("min-score", 0) });
  if (r.status !== 200) { draw([]); return { faces: [], error: problem(r) }; }
  const faces = facesOf(r.xml, p);
  draw(faces);
  return { faces, detected: txt(r.xml, "faces_detected") };
}

function resultTable(headers, rows) {
  const t = document.createElement("table");
  const head = t.createTHead().insertRow();
  for (const h of headers) { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); }
  const body = t.createTBody();
  for (const r of rows) row(body, r);
  $("result").textContent = "";
  $("result").appendChild(t);
}

async function enrol() {
  if (!need(true, true)) return;
  const p = partition();
  const r = await api("POST", "/api/v1/enrol", { image: session.photo, subject_id: $("subject").value.trim(), partition: p });
  if (r.status !== 200) { say(problem(r), "error"); return; }
  say(`Enrolled ${txt(r.xml, "subject_id")} in ${p} (quality ${txt(r.xml, "quality_score")}, ${txt(r.xml, "model_id")}).`, "ok");
  $("new-partition").value = "";
  await refresh();
  $("partition").value = p;
}

async function search() {
  if (!need(true, false)) return;
  const p = partition();
  const r = await api("POST", "/api/v1/search", { image: session.photo, partition: p, top_k: numberOr("top-k", 5), min_score: numberOr("min-score", 0) });
  const drawn = await identifyAndDraw(p);
  if (r.status !== 200) { say(problem(r), "error"); $("result").textContent = ""; return; }
  const cands = kids(r.xml, "candidate").map((c) => [txt(c, "rank"), txt(c, "subject_id"), txt(c, "score")]);
  say(`Search in ${p}: ${cands.length} candidate(s); quality ${txt(r.xml, "quality_score")}.`, "ok");
  resultTable(["rank", "subject", "score"], cands.length ? cands : [["-", "no candidate above min_score", ""]]);
  if (drawn.error) say(`Search in ${p}: ${cands.length} candidate(s). (Faces not drawn: ${drawn.error})`, "ok");
}

async function verify() {
  if (!need(true, true)) return;
  const p = partition();
  const r = await api("POST", "/api/v1/verify", { image: session.photo, subject_id: $("subject").value.trim(), partition: p });
  await identifyAndDraw(p);
  if (r.status !== 200) { say(problem(r), "error"); return; }
  const m = txt(r.xml, "match") === "true";
  say(`Verify ${txt(r.xml, "subject_id")}: ${m ? "MATCH" : "no match"}, score ${txt(r.xml, "score")}, quality ${txt(r.xml, "quality_score")}.`, m ? "ok" : "error");
  $("result").textContent = "";
}

async function identify() {
  if (!need(true, false)) return;
  const p = partition();
  const d = await identifyAndDraw(p);
  if (d.error) { say(d.error, "error"); return; }
  say(`Identify in ${p}: ${d.detected} face(s) detected.`, "ok");
  resultTable(["face", "decision", "best candidate", "gates"], d.faces.map((f) => [f.index, tag(f.kind, f.kind), f.who, f.gates]));
}

async function remove() {
  if (!need(false, true)) return;
  const p = partition();
  const s = $("subject").value.trim();
  const r = await api("POST", "/api/v1/delete", { subject_id: s, partition: p });
  if (r.status !== 200) { say(problem(r), "error"); return; }
  say(`Deleted ${s} from ${p}.`, "ok");
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("refresh").addEventListener("click", refresh);
  $("file").addEventListener("change", pickFile);
  $("webcam").addEventListener("click", webcam);
  $("snap").addEventListener("click", snap);
  $("do-enrol").addEventListener("click", () => run("Enrol", enrol));
  $("do-search").addEventListener("click", () => run("Search", search));
  $("do-verify").addEventListener("click", () => run("Verify", verify));
  $("do-identify").addEventListener("click", () => run("Identify", identify));
  $("do-delete").addEventListener("click", () => run("Delete", remove));
});
