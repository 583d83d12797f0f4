// The control room's page: it reads /api/state once a second and draws it; every control is a
// call to the same JSON API a script would make. No framework, no build step.
"use strict";

const POSITIONS = {
  gateway: [80, 160], orders: [330, 60], payments: [640, 28], notifications: [640, 92],
  inventory: [640, 160], recommendations: [640, 225],
};
const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data")) node.setAttribute(key.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

const fmt = {
  rate: (v) => (v === null || v === undefined ? "no data yet" : `${v.toFixed(v < 10 ? 1 : 0)}/s`),
  pct: (v) => (v === null || v === undefined ? "no verdict yet" : `${v.toFixed(0)}%`),
  secs: (v) => (v === null || v === undefined ? "no data yet" : v < 1 ? `${(v * 1000).toFixed(0)} ms` : `${v.toFixed(2)} s`),
};

function stateClass(edge) {
  if (edge.mode === "forced-open") return "forced-open";
  return edge.state || "none";
}

function bar(value, limit) {
  if (value === null || value === undefined || !limit) return el("span");
  const share = Math.min(1, value / limit);
  const span = el("span", { class: "bar" + (share >= 1 ? " over" : share >= 0.8 ? " warn" : "") });
  const fill = el("span");
  fill.style.width = `${(share * 100).toFixed(0)}%`;
  span.append(fill);
  return span;
}

function tile(edge) {
  const cls = stateClass(edge);
  const card = el("article", { class: `tile ${cls}`, "data-edge": edge.id, "data-state": edge.state || "" });
  const word = edge.mode === "forced-open" ? "forced open" : edge.mode === "disabled" ? `${edge.state} (disabled)` : edge.state;
  card.append(el("h3", {}, `${edge.caller} → ${edge.callee}`));
  card.append(el("div", { class: `state ${cls}`, "data-testid": `state-${edge.id}` }, word || "no data yet"));
  card.append(el("div", { class: "muted" }, edge.state_source));
  if (edge.calls_total === null) {
    card.append(el("p", { class: "muted" }, "No data yet: no call has gone this way since the service started."));
    return card;
  }
  const over = (v, t) => (v !== null && t !== null && v >= t ? "over" : "");
  const dl = el("dl");
  const row = (label, ...value) => dl.append(el("dt", {}, label), el("dd", {}, ...value));
  const counted = (v) => (edge.state && edge.state !== "closed" ? `not counted while ${edge.state}` : fmt.pct(v));
  row("failure rate", el("span", { class: over(edge.failure_rate, edge.failure_rate_threshold) },
    `${counted(edge.failure_rate)} / ${fmt.pct(edge.failure_rate_threshold)}`));
  row("slow calls", el("span", { class: over(edge.slow_call_rate, edge.slow_call_rate_threshold) },
    `${counted(edge.slow_call_rate)} / ${fmt.pct(edge.slow_call_rate_threshold)}`));
  row("calls", fmt.rate(edge.calls_per_second));
  row("p50 · p99", `${fmt.secs(edge.p50)} · ${fmt.secs(edge.p99)} / timeout ${fmt.secs(edge.attempt_timeout)}`, bar(edge.p99, edge.attempt_timeout));
  row("bulkhead", edge.bulkhead_max === null ? "no data yet" :
    `${edge.bulkhead_in_use.toFixed(0)} / ${edge.bulkhead_max.toFixed(0)} in use, ${fmt.rate(edge.rejected_per_second)} rejected`, bar(edge.bulkhead_in_use, edge.bulkhead_max));
  row("refused open", fmt.rate(edge.not_permitted_per_second));
  row("retries", fmt.rate(edge.retries_per_second));
  row("fallbacks", fmt.rate(edge.fallbacks_per_second));
  card.append(dl);
  return card;
}

function drawGraph(state) {
  const svg = $("#graph");
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const make = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text) node.textContent = text;
    svg.append(node);
    return node;
  };
  const colour = { closed: "#1f7a3d", "half-open": "#b76e00", open: "#c0262d", "forced-open": "#6b3fa0" };
  for (const edge of state.edges) {
    const [x1, y1] = POSITIONS[edge.caller];
    const [x2, y2] = POSITIONS[edge.callee];
    make("line", { x1: x1 + 55, y1, x2: x2 - 55, y2, stroke: colour[stateClass(edge)] || "#999",
      "stroke-width": edge.state === "closed" ? 2 : 4, "data-edge": edge.id });
  }
  for (const service of state.services) {
    const [x, y] = POSITIONS[service.name];
    make("rect", { x: x - 55, y: y - 16, width: 110, height: 32, rx: 6,
      fill: service.up ? "#ecfdf3" : "#fdecec", stroke: service.up ? "#1f7a3d" : "#c0262d" });
    make("text", { x, y: y + 4, "text-anchor": "middle" }, service.name + (service.fault_text ? " ⚡" : ""));
  }
}

function drawServices(state) {
  const rows = state.services.map((s) => {
    const fault = !s.fault_readable ? el("span", { class: "muted" }, "unknown: its chaos API did not answer")
      : s.fault_text ? el("span", {}, s.fault_text) : el("span", { class: "muted" }, "none");
    const landed = s.landed ? el("div", { class: s.landed.landed === false ? "bad" : "muted" },
      s.landed.landed === true ? `✓ landed: ${s.landed.evidence}` :
      s.landed.landed === false ? `✗ did not land: ${s.landed.evidence}` : s.landed.evidence) : "";
    return el("tr", { "data-service": s.name },
      el("td", {}, s.name),
      el("td", { class: s.up ? "up" : "down" }, s.up ? "up" : `down (${s.error})`),
      el("td", {}, s.process ? s.process.toLowerCase() : "-"),
      el("td", { "data-testid": `fault-${s.name}` }, fault, landed),
      el("td", { class: "muted" }, s.worker ? `answered by worker ${s.worker}` : ""));
  });
  $("#services").replaceChildren(...rows);
  const others = Object.entries(state.processes || {}).filter(([name]) => name.includes("-"));
  $("#workers").textContent = others.map(([name, st]) => `${name}: ${st.toLowerCase()}`).join(" · ");
}

function drawEvents(events) {
  if (!events.length) return;
  const items = events.slice().reverse().map((e) => el("li", { class: e.kind },
    el("time", { datetime: e.at }, new Date(e.at).toLocaleTimeString()), e.text));
  $("#events").replaceChildren(...items);
}

async function refresh() {
  try {
    const answer = await fetch("/api/state", { cache: "no-store" });
    const state = await answer.json();
    $("#resilience").textContent = state.resilience;
    if (!state.ready) return;
    $("#freshness").textContent = `read ${new Date(state.read_at).toLocaleTimeString()}` +
      (state.job.running ? ` · running: ${state.job.running}` : "");
    drawGraph(state);
    $("#edges").replaceChildren(...state.edges.map(tile));
    drawServices(state);
    drawEvents(state.events);
  } catch (error) {
    $("#freshness").textContent = `the control room's API did not answer: ${error}`;
  }
}

async function refreshResults() {
  const answer = await fetch("/api/scenarios/");
  const { results } = await answer.json();
  if (!results.length) return;
  const blocks = [];
  for (const name of results.filter((f) => f.endsWith(".txt")).slice(-3)) {
    const text = await (await fetch(`/api/scenarios/results/${name}`)).text();
    const png = name.replace(/\.txt$/, ".png");
    blocks.push(el("h3", {}, name.replace(/\.txt$/, "")), el("pre", { class: "table" }, text));
    if (results.includes(png)) blocks.push(el("img", { src: `/api/scenarios/results/${png}`, alt: `chart of ${png}` }));
  }
  if (blocks.length) $("#results").replaceChildren(...blocks);
}

function csrf() {
  const match = document.cookie.match(/csrftoken=([^;]+)/);
  return match ? match[1] : "";
}

async function write(method, url, body) {
  const answer = await fetch(url, {
    method, credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await answer.text();
  let shown = text;
  try { const data = JSON.parse(text); shown = data.message || JSON.stringify(data); } catch (e) { /* not JSON */ }
  $("#control-answer").textContent = `${answer.status}: ${shown}`;
  refresh();
  return answer;
}

function faultFrom(form) {
  const data = new FormData(form);
  const number = (name) => (data.get(name) === "" ? undefined : Number(data.get(name)));
  const fault = {
    latency_ms: number("latency_ms"), error_status: number("error_status"),
    delay_response_ms: number("delay_response_ms"), fail_next: number("fail_next"),
    hang: data.get("hang") === "on" || undefined,
  };
  if (number("error_rate") !== undefined) fault.error_rate = number("error_rate") / 100;
  const match = {};
  if (data.get("path_prefix")) match.path_prefix = data.get("path_prefix");
  if (data.get("method")) match.method = data.get("method");
  if (Object.keys(match).length) fault.match = match;
  return [data.get("service"), Object.fromEntries(Object.entries(fault).filter(([, v]) => v !== undefined))];
}

function wireControls() {
  const form = $("#fault-form");
  if (!form) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const [service, fault] = faultFrom(form);
    write("PUT", `/api/faults/${service}/`, fault);
  });
  $("#lift").addEventListener("click", () => write("DELETE", `/api/faults/${faultFrom(form)[0]}/`));
  $("#lift-all").addEventListener("click", () => write("DELETE", "/api/faults/"));
  for (const button of document.querySelectorAll("[data-program]")) {
    button.addEventListener("click", () => write("POST", `/api/services/${button.dataset.program}/${button.dataset.action}`));
  }
  for (const button of document.querySelectorAll("[data-resilience]")) {
    button.addEventListener("click", () => write("POST", "/api/stack/resilience", { enabled: button.dataset.resilience === "true" }));
  }
  $("#run-scenario").addEventListener("click", () => write("POST", `/api/scenarios/${$("#scenario").value}/run`));
}

wireControls();
refresh();
refreshResults();
setInterval(refresh, 1000);
setInterval(refreshResults, 15000);
