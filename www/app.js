// The dashboard: live state from status.json, the active policy in plain words, and a
// "try it" panel that fires requests at this limiter and charts what it answers.
"use strict";

const $ = (id) => document.getElementById(id);
const text = (el, value) => { el.textContent = value; };

function el(tag, content) {
  const node = document.createElement(tag);
  if (content !== undefined) node.textContent = content;
  return node;
}

// ---- live state -------------------------------------------------------------------------

let policyShown = false;

// In front of a real origin, status.json needs the admin token. It is kept for this tab
// only (sessionStorage), and sent to this limiter alone.
function adminHeaders() {
  const token = sessionStorage.getItem("admin-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function refresh() {
  let status;
  // While the token is asked for, nothing is polled: a wrong token sent every 2 s would
  // count as guesses and lock this address out.
  if (!$("token-form").hidden && !sessionStorage.getItem("admin-token")) return;
  try {
    const r = await fetch("status.json", { cache: "no-store", headers: adminHeaders() });
    if (r.status === 401 || r.status === 404 || r.status === 429) {
      sessionStorage.removeItem("admin-token");
      $("token-form").hidden = false;
      const p = await r.json().catch(() => ({}));
      text($("token-why"), p.detail || `HTTP ${r.status}`);
      text($("store-primary"), "needs the admin token");
      return;
    }
    $("token-form").hidden = true;
    status = await r.json();
  } catch (e) {
    text($("store-primary"), "unreachable");
    return;
  }
  // The demo keys are keys only in front of the demo origin: offered only there.
  for (const option of document.querySelectorAll("option.demo-only")) option.hidden = option.disabled = !status.demo_keys;
  const s = status.store;
  text($("store-primary"), s.primary === "upstash" ? "Upstash" : "isolate memory");
  text($("breaker-state"), s.breaker.state + (s.breaker.trips ? ` (${s.breaker.trips} trips)` : ""));
  text($("live-allowed"), status.requests.allowed);
  text($("live-denied"), status.requests.denied);
  const r = status.requests;
  text($("live-listed"), `${r.blocked ?? 0} / ${r.allow_listed ?? 0} / ${r.shadow_denied ?? 0}`);
  text($("store-calls"), `${s.calls} / ${s.failures}`);
  text($("deny-hits"), s.deny_cache ? s.deny_cache.hits : "off");
  text($("last-failure"), s.last_failure ? `Last store failure: ${s.last_failure.class}, ${Math.round(s.last_failure.ago_ms / 1000)} s ago.` : "");
  if (!policyShown) {
    showPolicy(status.policy);
    policyShown = true;
  }
}

function showPolicy(p) {
  const tiers = $("policy-tiers");
  tiers.replaceChildren();
  if (p.error) {
    tiers.append(el("p", `The policy is invalid: ${p.error}`));
    return;
  }
  const table = el("table");
  const head = el("tr");
  for (const h of ["Tier", "Limits (all must have room)"]) head.append(el("th", h));
  table.append(head);
  for (const t of p.tiers) {
    const row = el("tr");
    const name = el("td");
    name.append(el("b", t.name));
    if (t.description) name.append(el("div", t.description));
    const limits = el("td");
    const list = el("ul");
    for (const l of t.limits) list.append(el("li", `${l.name}: ${l.words}`));
    limits.append(list);
    row.append(name, limits);
    table.append(row);
  }
  tiers.append(table);
  $("policy-routes").replaceChildren(...(p.routes.length ? p.routes.map((r) => el("li", r.words)) : [el("li", "none: every request costs 1 against the caller's tier")]));
  $("policy-identity").replaceChildren(...p.identity.map((line) => el("li", line)));
  const st = p.store;
  text($("policy-store"), `If Upstash fails or takes longer than ${st.timeout_ms} ms: on_failure = ${st.on_failure}. ` +
    `After ${st.breaker_failures} failures in a row the circuit opens for ${st.breaker_cooldown_ms / 1000} s. ` +
    `Deny cache: ${st.deny_cache ? "on" : "off"}.`);
}

// ---- fleet ------------------------------------------------------------------------------

const TIER_COLOURS = ["#1a7f37", "#0969da", "#8250df", "#bf8700", "#57606a", "#1b7c83"];

function row(cells) {
  const tr = el("tr");
  for (const c of cells) tr.append(el("td", String(c)));
  return tr;
}

// Per minute, allowed stacked by tier above the axis, denied stacked by tier below it.
function drawFleet(minutes) {
  const canvas = $("fleet-chart");
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  ctx.clearRect(0, 0, w, h);
  const tiers = [...new Set(minutes.flatMap((m) => Object.keys({ ...(m.by_tier.allowed || {}), ...(m.by_tier.denied || {}) })))].sort();
  const total = (m, e) => Object.values(m.by_tier[e] || {}).reduce((a, b) => a + b, 0);
  const yMax = Math.max(1, ...minutes.map((m) => Math.max(total(m, "allowed"), total(m, "denied"))));
  const mid = h / 2, bar = (w - 40) / Math.max(minutes.length, 1);
  ctx.strokeStyle = "#d0d7de";
  ctx.beginPath(); ctx.moveTo(30, mid); ctx.lineTo(w - 10, mid); ctx.stroke();
  minutes.forEach((m, i) => {
    for (const [event, sign] of [["allowed", -1], ["denied", 1]]) {
      let y = mid;
      tiers.forEach((tier, t) => {
        const n = (m.by_tier[event] || {})[tier] || 0;
        if (!n) return;
        const len = (n / yMax) * (mid - 14);
        ctx.fillStyle = event === "denied" ? "#cf222e" : TIER_COLOURS[t % TIER_COLOURS.length];
        ctx.globalAlpha = event === "denied" ? 0.5 + 0.5 * ((t + 1) / tiers.length) : 1;
        ctx.fillRect(30 + i * bar, sign < 0 ? y - len : y, Math.max(bar - 1, 1), len);
        y += sign * len;
      });
    }
  });
  ctx.globalAlpha = 1;
  ctx.fillStyle = "#57606a";
  ctx.fillText(`allowed ↑ ${yMax}/min`, 34, 12);
  ctx.fillText(`denied ↓`, 34, h - 4);
  ctx.fillText("60 min ago", 30, mid - 4);
  ctx.fillText("now", w - 30, mid - 4);
  tiers.forEach((tier, t) => {
    ctx.fillStyle = TIER_COLOURS[t % TIER_COLOURS.length];
    ctx.fillText(tier, w - 140, 14 + 12 * t);
  });
}

async function refreshFleet() {
  if (!$("token-form").hidden && !sessionStorage.getItem("admin-token")) return;
  let f;
  try {
    const r = await fetch("fleet.json", { cache: "no-store", headers: adminHeaders() });
    if (!r.ok) return;
    f = await r.json();
  } catch {
    return;
  }
  text($("fleet-scope"), f.error ? `The fleet's counts could not be read: ${f.error}`
    : f.scope === "isolate" ? "No shared store is configured: these counts are this isolate's only."
    : "Counts from every isolate that flushed to the shared store (each at most every 5 s).");
  const sum = (e) => (f.minutes || []).reduce((a, m) => a + (m.events[e] || 0), 0);
  const isolateScope = f.scope === "isolate";
  const t = f.totals || {};
  text($("fleet-allowed"), isolateScope ? t.allowed ?? 0 : sum("allowed"));
  text($("fleet-denied"), isolateScope ? t.denied ?? 0 : sum("denied"));
  text($("fleet-other"), isolateScope ? `${t.shadow_denied ?? 0} / ${t.blocked ?? 0} / ${t.delayed ?? 0}` : `${sum("shadow_denied")} / ${sum("blocked")} / ${sum("delayed")}`);
  text($("fleet-isolates"), isolateScope ? "this one" : (f.isolates || []).length);
  drawFleet(f.minutes || []);
  $("fleet-heaviest").replaceChildren(...(f.heaviest || []).map((s) => row([s.subject_hash, s.tier, s.requests])));
  document.body.dataset.fleet = String(Date.now());
  $("fleet-isolate-rows").replaceChildren(...(f.isolates || []).map((i) =>
    row([i.id, i.policy_version, i.breaker, i.store_failures, `${Math.round(i.seen_ago_ms / 1000)} s ago`])));
}

// ---- try it -----------------------------------------------------------------------------

const points = []; // { t (ms since start), allowed (cumulative), denied (cumulative) }

function draw() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  const pad = 30;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#d0d7de";
  ctx.strokeRect(pad, 10, w - pad - 10, h - pad - 10);
  if (!points.length) return;
  const tMax = Math.max(points[points.length - 1].t, 1);
  const last = points[points.length - 1];
  const yMax = Math.max(last.allowed, last.denied, 1);
  const x = (t) => pad + (t / tMax) * (w - pad - 10);
  const y = (v) => h - pad - (v / yMax) * (h - pad - 20);
  for (const [key, color] of [["allowed", "#1a7f37"], ["denied", "#cf222e"]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x(0), y(0));
    for (const p of points) ctx.lineTo(x(p.t), y(p[key]));
    ctx.stroke();
    ctx.fillStyle = color;
    ctx.fillText(`${key} ${last[key]}`, x(last.t) - 60, y(last[key]) - 6);
  }
  ctx.fillStyle = "#57606a";
  ctx.fillText("0", pad - 12, h - pad);
  ctx.fillText(String(yMax), 4, 18);
  ctx.fillText(`${(tMax / 1000).toFixed(1)} s`, w - 50, h - 10);
}

const SHOWN = ["ratelimit", "ratelimit-policy", "retry-after", "x-limiter-backend", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"];

async function fire(event) {
  event.preventDefault();
  const button = $("fire");
  button.disabled = true;
  const choice = $("credential").value;
  const key = choice === "custom" ? $("custom-key").value : choice;
  const headers = key ? { "X-API-Key": key } : {};
  const n = Math.min(Math.max(Number($("count").value) || 1, 1), 500);
  const path = $("path").value.startsWith("/") ? $("path").value : "/" + $("path").value;
  let allowed = 0, denied = 0, other = 0;
  points.length = 0;
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    let r;
    try {
      r = await fetch(path, { headers, cache: "no-store" });
      await r.arrayBuffer();
    } catch (e) {
      other++;
      continue;
    }
    if (r.status === 429) denied++;
    else if (r.ok) allowed++;
    else other++;
    points.push({ t: performance.now() - start, allowed, denied });
    text($("tried-allowed"), allowed);
    text($("tried-denied"), denied);
    text($("tried-other"), other);
    const lines = [`HTTP ${r.status}`];
    for (const name of SHOWN) if (r.headers.has(name)) lines.push(`${name}: ${r.headers.get(name)}`);
    text($("last-headers"), lines.join("\n"));
    draw();
  }
  button.disabled = false;
  document.body.dataset.tried = String(n);
  refresh();
  refreshFleet();
}

$("credential").addEventListener("change", () => { $("custom-key-label").hidden = $("credential").value !== "custom"; });
$("try-form").addEventListener("submit", fire);
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("admin-token", $("admin-token").value.trim());
  $("admin-token").value = "";
  refresh().then(refreshFleet);
});
draw();
refresh().then(refreshFleet);
setInterval(refresh, 2000);
setInterval(refreshFleet, 10000);
