// kbridge web: each page renders the JSON API into the DOM with textContent only, never as HTML.
"use strict";
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const PAGE = document.body.dataset.page;
const content = () => document.getElementById("content");

async function api(path, options) {
  const response = await fetch(path, Object.assign({credentials: "same-origin"}, options || {}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}
function post(path, body) {
  return api(path, {method: "POST", body: JSON.stringify(body || {}),
    headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF}});
}
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "-" : String(c)));
  return node;
}
function table(headers, rows, id) {
  return el("table", id ? {id} : {}, el("tr", {}, ...headers.map(h => el("th", {}, h))),
    ...rows.map(r => el("tr", r.attrs || {}, ...r.cells.map(c => el("td", {}, c)))));
}
function card(label, n) { return el("div", {class: "card"}, el("div", {class: "n"}, n), label); }
function ago(t) { return Math.round(Date.now() / 1000 - t) + "s ago"; }
let lastSaid = ["", ""];  // kept across the page's refreshes
function say(message, cls) {
  lastSaid = [message, cls || ""];
  const n = document.getElementById("status");
  if (n) { n.className = lastSaid[1]; n.textContent = lastSaid[0]; }
}

const pages = {
  async overview(root) {
    const o = await api("/api/overview");
    root.replaceChildren(
      el("div", {class: "cards"}, card("listeners alive", o.listeners_alive), card("listeners gone", o.listeners_gone),
        card("partitions", o.partitions), card("total lag", o.lag), card("paused", o.paused), card("held", o.held),
        card("fetched", o.totals.fetched), card("enqueued", o.totals.enqueued),
        card("dead-lettered", o.totals.dead_lettered), card("worker failures", o.failures)),
      el("h2", {}, "Listeners"),
      table(["listener", "host", "pid", "state", "last report", "groups", "partitions", "fetched", "enqueued", "recent errors"],
        o.listeners.map(l => ({attrs: {class: l.alive ? "alive" : "gone", "data-listener": l.id},
          cells: [l.id, l.host, l.pid, l.alive ? "running" : (l.stopped ? "stopped" : "gone"), ago(l.last_report),
            l.groups.join(", "), l.partitions, l.counters.fetched, l.counters.enqueued,
            l.errors.map(e => e.event + " " + (e.error || e.reason || "")).join("; ")]})), "listeners"));
  },

  async groups(root) {
    const groups = await api("/api/groups");
    const nodes = [];
    for (const g of groups) {
      nodes.push(el("h2", {}, g.group_id));
      nodes.push(table(["topic", "partition", "committed", "end", "lag", "state", "listener", ""],
        g.partitions.map(p => ({attrs: {"data-tp": p.topic + "-" + p.partition, class: p.state},
          cells: [p.topic, p.partition, p.committed, p.highwater, p.lag, p.state + (p.reason ? " (" + p.reason + ")" : ""),
            p.listener, el("span", {},
              el("button", {class: "pause", onclick: () => control("pause", g.group_id, p.topic, p.partition)}, "Pause"),
              el("button", {class: "resume", onclick: () => control("resume", g.group_id, p.topic, p.partition)}, "Resume"))]}))));
      const chart = await api("/api/groups/" + encodeURIComponent(g.group_id) + "/chart");
      nodes.push(el("h3", {}, "Lag per partition and messages fetched per second, last hour"), drawChart(chart));
    }
    if (!groups.length) nodes.push(el("p", {}, "No running listener has reported yet."));
    root.replaceChildren(el("p", {id: "status", class: lastSaid[1]}, lastSaid[0]), ...nodes);
  },

  async routes(root) {
    const rows = await api("/api/routes");
    root.replaceChildren(table(["group", "topic", "consumer", "filters", "backend", "queue", "responds to"],
      rows.map(r => ({cells: [r.group, r.topic, r.consumer, r.filters, r.backend, r.queue, r.responds_to]}))));
  },

  async errors(root) {
    const route = new URLSearchParams(location.search).get("route") || "";
    const rows = await api("/api/errors" + (route ? "?route=" + encodeURIComponent(route) : ""));
    const every = route ? await api("/api/errors") : rows;
    const select = el("select", {id: "route-filter", onchange: e => {
      location.search = e.target.value ? "?route=" + encodeURIComponent(e.target.value) : ""; }},
      el("option", {value: ""}, "every route"));
    for (const id of [...new Set(every.map(f => f.route))].sort()) select.append(el("option", {value: id}, id));
    select.value = route;
    root.replaceChildren(el("label", {}, "route ", select),
      table(["when", "route", "offset", "attempt", "error", "traceback", "worker"],
        rows.map(f => ({cells: [new Date(f.at * 1000).toISOString(), f.route, f.topic + "-" + f.partition + "@" + f.offset,
          f.attempt, f.error, el("pre", {}, f.traceback), f.host + ":" + f.pid]})), "errors"));
  },

  async "dead-letters"(root) {
    const topics = await api("/api/dead-letters");
    const nodes = [el("p", {id: "status", class: lastSaid[1]}, lastSaid[0])];
    for (const topic of topics) {
      let letters;
      try { letters = await api("/api/dead-letters/" + encodeURIComponent(topic) + "?limit=50"); }
      catch (e) { nodes.push(el("h2", {}, topic), el("p", {class: "gone"}, e.message)); continue; }
      const picks = [];
      nodes.push(el("h2", {}, topic,
        el("button", {class: "replay-all", onclick: () => replayLetters(topic, null)}, "Replay all"),
        el("button", {class: "replay-next", onclick: () => replayLetters(topic, 1)}, "Replay next"),
        el("button", {class: "replay-selected", onclick: () => replaySelected(topic, picks)}, "Replay selected")));
      nodes.push(table(["", "partition", "offset", "origin", "error", "attempts", "replays", "failed at", "payload", ""],
        letters.map(l => {
          const pick = el("input", {type: "checkbox", class: "pick"});
          picks.push({box: pick, partition: l.partition, offset: l.offset});
          return {attrs: {"data-offset": l.partition + "@" + l.offset},
            cells: [pick, l.partition, l.offset, l.origin, l.error_class + ": " + l.error_message, l.attempts, l.replays,
              l.failed_at, el("span", {class: "payload"}, l.payload + (l.payload_encoding === "hex" ? " (hex)" : "")),
              el("button", {class: "skip", onclick: () => skipTo(topic, l.partition, l.offset)}, "Skip up to here")]};
        })));
    }
    root.replaceChildren(...nodes);
  },
};

async function control(action, group_id, topic, partition) {
  try {
    const c = await post("/api/" + action, {group_id, topic, partition});
    say(action + " sent (command " + c.id + "); listeners acknowledge it in their next report");
  } catch (e) { say(e.message, "error"); }
}
async function replayLetters(topic, limit) {
  if (!confirm("Replay " + (limit ? limit + " letter(s)" : "every letter") + " of " + topic + " to its origin topic?")) return;
  try { say((await post("/api/dead-letters/" + encodeURIComponent(topic) + "/replay", {limit})).summary); }
  catch (e) { say(e.message, "error"); }
}
async function replaySelected(topic, picks) {
  const letters = picks.filter(p => p.box.checked).map(p => ({partition: p.partition, offset: p.offset}));
  if (!letters.length) { say("tick the letters to replay first", "error"); return; }
  if (!confirm("Replay " + letters.length + " chosen letter(s) of " + topic + " to their origin topic? " +
    "The replay group does not move, so Replay all sends them again unless you skip past them.")) return;
  try { say((await post("/api/dead-letters/" + encodeURIComponent(topic) + "/replay-selected", {letters})).summary); }
  catch (e) { say(e.message, "error"); }
}
async function skipTo(topic, partition, until) {
  if (!confirm("Mark " + topic + "-" + partition + " up to offset " + until + " as skipped in the replay group?")) return;
  try { await post("/api/dead-letters/" + encodeURIComponent(topic) + "/skip", {partition, until}); say("skipped up to " + until); }
  catch (e) { say(e.message, "error"); }
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
function drawChart(chart) {
  const W = 760, H = 220, pad = 40, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("width", W); svg.setAttribute("height", H);
  svg.dataset.group = chart.group_id;
  const series = Object.entries(chart.lag).map(([name, pts]) => ({name, pts}));
  series.push({name: "fetched/s", pts: chart.throughput, dashed: true});
  const all = series.flatMap(s => s.pts);
  const t1 = chart.now, t0 = all.length ? Math.min(...all.map(p => p[0])) : t1 - 60;
  const ymax = Math.max(1, ...all.map(p => p[1]));
  const x = t => pad + (W - 2 * pad) * (t - t0) / Math.max(1, t1 - t0);
  const y = v => H - pad + (-(H - 2 * pad) * v / ymax);
  const add = (tag, attrs, text) => { const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); if (text != null) n.textContent = text; svg.append(n); return n; };
  add("line", {x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, stroke: "#999"});
  add("line", {x1: pad, y1: pad, x2: pad, y2: H - pad, stroke: "#999"});
  add("text", {x: 4, y: pad, "font-size": 10}, String(Math.round(ymax)));
  add("text", {x: 4, y: H - pad, "font-size": 10}, "0");
  add("text", {x: W - pad - 40, y: H - pad + 14, "font-size": 10}, "now");
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    if (s.pts.length) add("polyline", {fill: "none", stroke: color, "stroke-width": 2, "data-series": s.name,
      "stroke-dasharray": s.dashed ? "4 3" : "none", points: s.pts.map(p => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ")});
    add("text", {x: pad + 10 + i * 120, y: 14, fill: color, "font-size": 11}, s.name + (s.pts.length ? " " + Math.round(s.pts[s.pts.length - 1][1]) : ""));
  });
  return svg;
}

async function refresh() {
  const root = content();
  if (!root || !pages[PAGE]) return;
  try { await pages[PAGE](root); } catch (e) { root.replaceChildren(el("p", {class: "error"}, e.message)); }
}
refresh();
if (PAGE === "overview" || PAGE === "groups") setInterval(refresh, 2000);
