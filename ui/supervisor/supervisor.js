// The wallboard: queues, agents and calls in progress, live over the event stream.
//
// It starts from GET /api/v1/wallboard (today's figures, exactly from the queue log, and the live
// state) and subscribes to the event stream after the snapshot's last event id, so each later
// event changes the board once. Events only change the model and mark rows dirty; one animation
// frame (at most four a second) writes what changed (text only where it differs), and a
// one-second tick moves the timers. The agent and call tables are windowed: they are real
// tables whose body holds only the rows in view (a few more around them) between two spacer
// rows, with aria-rowcount and aria-rowindex saying where each row is in the whole list, which
// is sorted and filtered as a whole; the arrow keys, Page Up/Down, Home and End move along it.
// With 500 agents and 300 calls the page lays out a screenful of rows, not 800.
// Figure definitions: omlmedia/wallboard.py.
import { api, session, subscribe } from "./session.js";

const $ = (id) => document.getElementById(id);

const STATE_LABELS = {
  "logged-out": "Logged out", ready: "Ready", paused: "Paused", ringing: "Ringing",
  "on-call": "On call", wrapup: "Wrap-up",
};
const STATE_ORDER = ["on-call", "ringing", "wrapup", "ready", "paused", "logged-out"];
const LEAVES_QUEUE = new Set([
  "queue.answered", "queue.abandoned", "queue.timed_out", "queue.left_empty",
  "queue.overflowed", "queue.callback",
]);
const ENDS_CALL = new Set(["queue.completed", "queue.transferred"]);
const HISTORY = 120; // quality samples kept per call (10 minutes at 5 s)
const CALLERS_KEPT = 5000;

const board = {
  offset: 0, // server time - local time (seconds)
  dayStart: 0,
  nextDay: Infinity,
  lastId: 0,
  mosThreshold: 3.5,
  clustered: false, // the snapshot names its node: a cluster with one ACD
  refresh: null,
  queues: new Map(),
  agents: new Map(),
  calls: new Map(),
  callers: new Map(), // call_id -> caller number, from call.started (before the queue sees it)
  filter: "",
  queueSort: { key: "name", descending: false },
  agentSort: "name",
  selectedAgent: null,
  selectedCall: null,
  dirty: {
    queues: new Set(), agents: new Set(), calls: new Set(), order: true, callKeys: false, window: false,
  },
  resort: false,
  frame: 0,
  stop: null,
  chart: null,
  campaigns: new Map(), // campaign -> queue
};

const now = () => Date.now() / 1000 + board.offset;

// -- windowed tables -------------------------------------------------------------------------

const OVERSCAN = 8; // rows rendered past each edge of the view
const ROW_HEIGHT = 33; // until a row is measured

class RowWindow {
  // `rowOf(key)` gives the (cached) row of a key of the model.
  constructor(table, body, scroller, rowOf) {
    this.table = table;
    this.body = body;
    this.scroller = scroller;
    this.rowOf = rowOf;
    this.keys = [];
    this.index = new Map();
    this.shown = new Set();
    this.range = [0, -1];
    this.forced = true;
    this.rowHeight = 0;
    // The spacers are tbodies of their own around the rows' tbody: it holds rows only.
    this.top = this.spacer();
    this.bottom = this.spacer();
    body.before(this.top);
    body.after(this.bottom);
    scroller.addEventListener("scroll", () => { board.dirty.window = true; schedule(); }, { passive: true });
  }

  spacer() {
    const tbody = document.createElement("tbody");
    tbody.className = "spacer";
    tbody.setAttribute("aria-hidden", "true");
    tbody.hidden = true;
    const td = document.createElement("td");
    td.colSpan = this.table.tHead.rows[0].cells.length;
    tbody.append(document.createElement("tr"));
    tbody.firstChild.append(td);
    return tbody;
  }

  setKeys(keys) {
    this.keys = keys;
    this.index = new Map(keys.map((key, i) => [key, i]));
    this.forced = true;
  }

  height() {
    return this.rowHeight || ROW_HEIGHT;
  }

  // Puts the rows in view in the body (rows that stay are not moved, so focus stays); returns
  // the keys that came into view, to be written now.
  render() {
    const height = this.height();
    const head = this.table.tHead.offsetHeight;
    const top = Math.max(0, this.scroller.scrollTop - head);
    const view = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / height) - OVERSCAN);
    const last = Math.min(this.keys.length - 1, Math.ceil((top + view) / height) + OVERSCAN);
    if (!this.forced && first === this.range[0] && last === this.range[1]) return [];
    this.forced = false;
    this.range = [first, last];
    const shown = new Set();
    const entered = [];
    let node = this.body.firstChild;
    for (let i = first; i <= last; i += 1) {
      const key = this.keys[i];
      const tr = this.rowOf(key);
      const at = String(i + 2); // the header is row 1
      if (tr.getAttribute("aria-rowindex") !== at) tr.setAttribute("aria-rowindex", at);
      shown.add(key);
      if (!this.shown.has(key)) entered.push(key);
      if (node === tr) node = node.nextSibling;
      else this.body.insertBefore(tr, node);
    }
    while (node) {
      const next = node.nextSibling;
      node.remove();
      node = next;
    }
    this.top.firstChild.firstChild.style.height = `${first * height}px`;
    this.top.hidden = first === 0;
    this.bottom.firstChild.firstChild.style.height = `${Math.max(0, this.keys.length - 1 - last) * height}px`;
    this.bottom.hidden = last >= this.keys.length - 1;
    this.table.setAttribute("aria-rowcount", String(this.keys.length + 1));
    this.shown = shown;
    if (!this.rowHeight && last >= first) {
      const measured = this.rowOf(this.keys[first]).getBoundingClientRect().height;
      if (measured > 0 && Math.abs(measured - height) > 0.5) {
        this.rowHeight = measured;
        this.forced = true;
        return [...entered, ...this.render()];
      }
      if (measured > 0) this.rowHeight = measured;
    }
    return entered;
  }

  // Scrolls row `i` of the model into view and renders it; returns the keys that came into view.
  reveal(i) {
    const height = this.height();
    const head = this.table.tHead.offsetHeight;
    const top = this.scroller.scrollTop;
    const view = this.scroller.clientHeight;
    if (i * height < top) this.scroller.scrollTop = i * height;
    else if (head + (i + 1) * height > top + view) this.scroller.scrollTop = head + (i + 1) * height - view;
    return this.render();
  }

  // Arrow keys, Page Up/Down, Home and End on a row's button move to another row of the model.
  keydown(event, write) {
    const tr = event.target.closest("tr");
    const key = tr && (tr.dataset.agent || tr.dataset.call);
    if (!key || !this.index.has(key)) return;
    const i = this.index.get(key);
    const page = Math.max(1, Math.floor(this.scroller.clientHeight / this.height()) - 1);
    const to = { ArrowDown: i + 1, ArrowUp: i - 1, PageDown: i + page, PageUp: i - page, Home: 0,
      End: this.keys.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    const j = Math.max(0, Math.min(this.keys.length - 1, to));
    write(this.reveal(j));
    const button = this.rowOf(this.keys[j]).querySelector("button");
    if (button) button.focus();
  }
}

let agentWindow = null;
let callWindow = null;

// -- formatting ----------------------------------------------------------------------------

function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}
const percent = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)} %`);
const fixed = (v, digits = 1) => (v === null || v === undefined ? "—" : Number(v).toFixed(digits));

function setText(cell, text) {
  if (cell.textContent !== text) cell.textContent = text;
}
function setLevel(cell, level) {
  const want = level || "";
  if ((cell.dataset.level || "") === want) return;
  cell.classList.remove("amber", "red");
  if (want) cell.classList.add(want);
  cell.dataset.level = want;
}

// A figure against its queue's thresholds: "", "amber" or "red".
function level(thresholds, figure, value) {
  const t = thresholds && thresholds[figure];
  if (!t || value === null || value === undefined) return "";
  if (figure === "service_level") return value <= t.red ? "red" : value <= t.amber ? "amber" : "";
  return value >= t.red ? "red" : value >= t.amber ? "amber" : "";
}

// -- figures (the same definitions as omlmedia/wallboard.py) ------------------------------

function queueFigures(q) {
  const t = q.today;
  const counted = t.answered + t.abandoned - t.abandoned_within;
  return {
    service_level: counted ? t.answered_within / counted : null,
    abandon_rate: t.answered + t.abandoned ? t.abandoned / (t.answered + t.abandoned) : null,
    asa: t.answered ? t.wait_answered / t.answered : null,
    aht: t.ended ? t.talk / t.ended : null,
  };
}

function waitingOf(queue) {
  let count = 0;
  let oldest = Infinity;
  for (const call of board.calls.values()) {
    if (call.queue === queue && !call.answered) {
      count += 1;
      if (call.entered < oldest) oldest = call.entered;
    }
  }
  return { count, longest: count ? now() - oldest : 0 };
}

function agentTalk(a, at) {
  const call = a.call_id ? board.calls.get(a.call_id) : null;
  return a.talkBase + (call && call.answered ? Math.max(0, at - call.answered) : 0);
}

function occupancy(a, at) {
  const loggedIn = a.loggedInBase + (a.loggedInSince !== null ? at - a.loggedInSince : 0);
  const paused = a.pausedBase + (a.pausedSince !== null ? at - a.pausedSince : 0);
  const available = loggedIn - paused;
  return available > 0 ? Math.min(agentTalk(a, at) / available, 1) : null;
}

// -- the snapshot --------------------------------------------------------------------------

function cell(row, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  row.append(td);
  return td;
}

function nameButton(text, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link";
  button.textContent = text;
  if (label) button.setAttribute("aria-label", label);
  return button;
}

function queueRow(q) {
  const tr = document.createElement("tr");
  tr.dataset.queue = q.queue;
  const name = cell(tr, "name");
  name.textContent = q.queue;
  q.cells = {
    waiting: cell(tr, "num"), longest: cell(tr, "num"), service_level: cell(tr, "num"),
    abandon_rate: cell(tr, "num"), asa: cell(tr, "num"), aht: cell(tr, "num"),
    offered: cell(tr, "num"), answered: cell(tr, "num"), abandoned: cell(tr, "num"),
    agents: cell(tr, "agents"),
  };
  q.row = tr;
  return tr;
}

function agentRow(a) {
  const tr = document.createElement("tr");
  tr.dataset.agent = a.agent;
  const nameCell = cell(tr, "name");
  const button = nameButton(a.agent, `Agent ${a.agent}`);
  button.addEventListener("click", () => selectAgent(a.agent));
  nameCell.append(button);
  const stateCell = cell(tr);
  const badge = document.createElement("span");
  badge.className = "state";
  stateCell.append(badge);
  a.cells = {
    state: badge, timer: cell(tr, "num"), reason: cell(tr), caller: cell(tr), queue: cell(tr),
    talk: cell(tr, "num"), calls: cell(tr, "num"), occupancy: cell(tr, "num"),
    node: cell(tr, "cluster-only"),
  };
  a.cells.node.hidden = !board.clustered;
  a.row = tr;
  return tr;
}

function callRow(c) {
  const tr = document.createElement("tr");
  tr.dataset.call = c.call_id;
  const callerCell = cell(tr, "name");
  const button = nameButton(c.caller || c.call_id, `Call from ${c.caller || c.call_id}`);
  button.addEventListener("click", () => selectCall(c.call_id));
  callerCell.append(button);
  c.cells = {
    button, queue: cell(tr), agent: cell(tr), talk: cell(tr, "num"), callerMos: cell(tr, "num mos"),
    agentMos: cell(tr, "num mos"), jitter: cell(tr, "num"), loss: cell(tr, "num"), rtt: cell(tr, "num"),
  };
  c.row = tr;
  return tr;
}

function newAgent(view, at) {
  const t = view.today || {};
  const a = {
    agent: view.agent, name: view.name, state: view.state, reason: view.reason,
    since: view.since || at, queues: view.queues || [], call_id: view.call_id || null,
    calls: t.calls || 0,
    talkBase: 0,
    loggedInBase: t.logged_in || 0,
    loggedInSince: view.state !== "logged-out" ? at : null,
    pausedBase: t.paused || 0,
    pausedSince: view.state === "paused" ? at : null,
    node: view.node || null, connected: view.connected !== false,
  };
  return a;
}

function applySnapshot(snap) {
  board.offset = snap.now - Date.now() / 1000;
  board.dayStart = snap.day_start;
  board.nextDay = snap.day_start + 86400 + 3700; // refetched on the first event of the next day
  board.lastId = snap.last_event_id;
  board.mosThreshold = snap.mos_threshold;
  $("wb-day").value = `Today: ${snap.day} (${snap.timezone})`;
  board.clustered = Boolean(snap.node); // a node of a cluster with one ACD: agents' nodes shown
  for (const th of document.querySelectorAll("#agent-table th.cluster-only")) th.hidden = !board.clustered;
  // A snapshot read again (a cluster's refresh, a new day) keeps the rows already on the page:
  // the same elements, so a click, the focus or a screen reader's place on them survives, and a
  // call's live quality so far (the snapshot has none: it comes with call.live_quality events).
  const before = { queues: new Map(board.queues), agents: new Map(board.agents), calls: new Map(board.calls) };
  const keepRow = (old, fresh) => {
    if (old && old.row) Object.assign(fresh, { row: old.row, cells: old.cells });
    return fresh;
  };
  for (const map of [board.queues, board.agents, board.calls]) map.clear();
  board.campaigns.clear();
  for (const q of snap.queues) {
    for (const campaign of q.campaigns) board.campaigns.set(campaign, q.queue);
    board.queues.set(q.queue, keepRow(before.queues.get(q.queue), {
      queue: q.queue, campaigns: q.campaigns, members: new Set(q.members), serviceLevel: q.service_level_seconds,
      thresholds: q.thresholds, today: { ...q.today },
    }));
  }
  for (const c of snap.calls || []) {
    const old = before.calls.get(c.call_id);
    board.calls.set(c.call_id, keepRow(old, { ...c, quality: old ? old.quality : null, history: old ? old.history : [] }));
  }
  for (const view of snap.agents) {
    const a = keepRow(before.agents.get(view.agent), newAgent(view, snap.now));
    if (a.cells) a.cells.node.hidden = !board.clustered;
    a.talkBase = (view.today && view.today.talk) || 0;
    board.agents.set(a.agent, a);
    a.talkBase -= agentTalk(a, snap.now) - a.talkBase; // the snapshot's talk holds the call so far
  }
  setPauseReasons(snap.pause_reasons);
  fillFilter();
  buildTables();
  schedule();
}

// The pause reasons are the server's one list (the agents' menu too); an admin's change arrives
// as an admin.pause_reason.* event with the list after it.
function setPauseReasons(reasons) {
  const select = $("control-reason");
  const current = select.value;
  select.replaceChildren(...reasons.map((r) => new Option(r, r)));
  if (reasons.includes(current)) select.value = current;
}

function fillFilter() {
  const select = $("wb-filter");
  const keep = select.value;
  const options = [new Option("All queues and campaigns", "")];
  for (const name of [...board.queues.keys()].sort()) options.push(new Option(`Queue ${name}`, `queue:${name}`));
  for (const name of [...board.campaigns.keys()].sort()) options.push(new Option(`Campaign ${name}`, `campaign:${name}`));
  select.replaceChildren(...options);
  select.value = options.some((o) => o.value === keep) ? keep : "";
  board.filter = select.value;
}

function visibleQueues() {
  const filter = board.filter;
  if (!filter) return new Set(board.queues.keys());
  const [kind, name] = [filter.slice(0, filter.indexOf(":")), filter.slice(filter.indexOf(":") + 1)];
  if (kind === "queue") return new Set([name]);
  const queue = board.campaigns.get(name);
  return new Set(queue ? [queue] : []);
}

function buildTables() {
  const shown = visibleQueues();
  const queueRows = [];
  for (const q of sortedQueues()) {
    if (!shown.has(q.queue)) continue;
    queueRows.push(q.row || queueRow(q));
    board.dirty.queues.add(q.queue);
  }
  $("queue-rows").replaceChildren(...queueRows);
  const members = new Set();
  for (const name of shown) for (const m of board.queues.get(name)?.members || []) members.add(m);
  const agents = sortedAgents().filter((a) => members.has(a.agent)).map((a) => a.agent);
  agentWindow.setKeys(agents);
  const count = `${agents.length} agent${agents.length === 1 ? "" : "s"}`;
  if ($("agent-count").textContent !== count) $("agent-count").textContent = count;
  setCallKeys();
  board.dirty.order = false;
  writeWindows();
}

function setCallKeys() {
  const shown = visibleQueues();
  const calls = [...board.calls.values()].filter((c) => c.answered && shown.has(c.queue));
  calls.sort((x, y) => x.entered - y.entered);
  callWindow.setKeys(calls.map((c) => c.call_id));
  board.dirty.callKeys = false;
}

// Renders both windows and marks the rows that came into view for writing.
function writeWindows() {
  for (const name of agentWindow.render()) board.dirty.agents.add(name);
  for (const id of callWindow.render()) board.dirty.calls.add(id);
  board.dirty.window = false;
}

function sortedQueues() {
  const { key, descending } = board.queueSort;
  const value = (q) => {
    if (key === "name") return q.queue;
    if (key === "waiting" || key === "longest_wait") {
      const w = waitingOf(q.queue);
      return key === "waiting" ? w.count : w.longest;
    }
    if (key in q.today && typeof q.today[key] === "number" && !["service_level", "abandon_rate", "asa", "aht"].includes(key)) return q.today[key];
    const f = queueFigures(q)[key];
    return f === null || f === undefined ? -1 : f;
  };
  const list = [...board.queues.values()];
  list.sort((a, b) => {
    const x = value(a);
    const y = value(b);
    const order = typeof x === "string" ? x.localeCompare(y) : x - y;
    return descending ? -order : order;
  });
  return list;
}

function sortedAgents() {
  const at = now();
  const key = board.agentSort;
  const list = [...board.agents.values()];
  const byName = (a, b) => a.agent.localeCompare(b.agent, undefined, { numeric: true });
  const compare = {
    name: byName,
    state: (a, b) => STATE_ORDER.indexOf(a.state) - STATE_ORDER.indexOf(b.state) || byName(a, b),
    time: (a, b) => a.since - b.since || byName(a, b),
    calls: (a, b) => b.calls - a.calls || byName(a, b),
    occupancy: (a, b) => (occupancy(b, at) ?? -1) - (occupancy(a, at) ?? -1) || byName(a, b),
  }[key] || byName;
  list.sort(compare);
  return list;
}

// -- writing the DOM, once per frame ---------------------------------------------------------

// At most one write every FRAME_GAP ms: at 50 events a second a frame per event would repaint
// the board 60 times a second for changes no one can read that fast. Painting is most of what a
// page costs (benchmarks/wallboard.py: 100 ms frames cost a page's renderer 27 % of a core,
// 250 ms ones 24 %; the delivery target is 1 s).
const FRAME_GAP = 250;
let lastFlush = 0;
function schedule() {
  if (board.frame) return;
  const wait = lastFlush + FRAME_GAP - performance.now();
  board.frame = wait > 0
    ? setTimeout(() => { board.frame = requestAnimationFrame(flush); }, wait)
    : requestAnimationFrame(flush);
}

function flush() {
  board.frame = 0;
  lastFlush = performance.now();
  if ($("wallboard").hidden) {
    // Another section is shown: the model stays current, nothing is written until it is back.
    board.dirty.queues.clear();
    board.dirty.agents.clear();
    board.dirty.calls.clear();
    board.dirty.order = true;
    return;
  }
  if (board.dirty.order) {
    buildTables();
  } else {
    if (board.dirty.callKeys) setCallKeys();
    if (board.dirty.window || callWindow.forced) writeWindows();
  }
  writeRows();
}

function writeRows() {
  const at = now();
  for (const name of board.dirty.queues) {
    const q = board.queues.get(name);
    if (q && q.row) renderQueue(q, at);
  }
  for (const name of board.dirty.agents) {
    const a = board.agents.get(name);
    if (a && a.row && agentWindow.shown.has(name)) renderAgent(a, at);
  }
  for (const id of board.dirty.calls) {
    const c = board.calls.get(id);
    if (c && c.row && callWindow.shown.has(id)) renderCall(c, at);
  }
  board.dirty.queues.clear();
  board.dirty.agents.clear();
  board.dirty.calls.clear();
  if (board.selectedCall) renderCallDetail();
}

function renderQueue(q, at) {
  const w = waitingOf(q.queue);
  const f = queueFigures(q);
  const c = q.cells;
  const th = q.thresholds;
  setText(c.waiting, String(w.count));
  setLevel(c.waiting, level(th, "waiting", w.count));
  setText(c.longest, w.count ? duration(w.longest) : "—");
  setLevel(c.longest, level(th, "longest_wait", w.count ? w.longest : null));
  setText(c.service_level, percent(f.service_level));
  setLevel(c.service_level, level(th, "service_level", f.service_level));
  setText(c.abandon_rate, percent(f.abandon_rate));
  setLevel(c.abandon_rate, level(th, "abandon_rate", f.abandon_rate));
  setText(c.asa, f.asa === null ? "—" : duration(f.asa));
  setLevel(c.asa, level(th, "asa", f.asa));
  setText(c.aht, f.aht === null ? "—" : duration(f.aht));
  setLevel(c.aht, level(th, "aht", f.aht));
  setText(c.offered, String(q.today.offered));
  setText(c.answered, String(q.today.answered));
  setText(c.abandoned, String(q.today.abandoned));
  const counts = {};
  for (const m of q.members) {
    const a = board.agents.get(m);
    if (a) counts[a.state] = (counts[a.state] || 0) + 1;
  }
  setText(c.agents, STATE_ORDER.filter((s) => counts[s]).map((s) => `${STATE_LABELS[s]} ${counts[s]}`).join(", ") || "—");
}

function renderAgent(a, at) {
  const c = a.cells;
  setText(c.state, STATE_LABELS[a.state] || a.state);
  if (c.state.dataset.state !== a.state) c.state.dataset.state = a.state;
  setText(c.timer, duration(at - a.since));
  setText(c.reason, a.state === "paused" ? a.reason || "" : "");
  const call = a.call_id ? board.calls.get(a.call_id) : null;
  setText(c.caller, call ? call.caller || "" : "");
  setText(c.queue, call ? call.queue : "");
  setText(c.talk, call && call.answered ? duration(at - call.answered) : "");
  setText(c.calls, String(a.calls));
  const occ = occupancy(a, at);
  setText(c.occupancy, percent(occ));
  if (board.clustered) setText(c.node, a.node ? `${a.node}${a.connected ? "" : ", not connected"}` : "");
}

function legMos(quality, leg) {
  const q = quality && quality.legs && quality.legs[leg];
  return q && typeof q.mos === "number" ? q.mos : null;
}

function worst(quality, field) {
  if (!quality || !quality.legs) return null;
  let value = null;
  for (const leg of Object.values(quality.legs)) {
    const v = leg && leg[field];
    if (typeof v === "number" && (value === null || v > value)) value = v;
  }
  return value;
}

function renderCall(c, at) {
  const cells = c.cells;
  setText(cells.button, c.caller || c.call_id);
  setText(cells.queue, c.queue);
  setText(cells.agent, c.agent || "");
  setText(cells.talk, c.answered ? duration(at - c.answered) : "");
  const q = c.quality;
  for (const [leg, target] of [["caller", cells.callerMos], ["agent", cells.agentMos]]) {
    const mos = legMos(q, leg);
    const low = mos !== null && mos < board.mosThreshold;
    setText(target, mos === null ? "—" : `${mos.toFixed(2)}${low ? " low" : ""}`);
    setLevel(target, low ? "red" : "");
  }
  const loss = worst(q, "loss");
  setText(cells.jitter, fixed(worst(q, "jitter_ms")));
  setText(cells.loss, loss === null ? "—" : (loss * 100).toFixed(1));
  setText(cells.rtt, fixed(worst(q, "rtt_ms"), 0));
  const flagged = Boolean(q && q.flagged);
  if (c.row.classList.contains("flagged") !== flagged) c.row.classList.toggle("flagged", flagged);
}

// A one-second tick: timers and waits move without any event.
function tick() {
  const at = now();
  if (at >= board.nextDay) {
    load();
    return;
  }
  for (const q of board.queues.values()) if (q.row && q.row.isConnected) board.dirty.queues.add(q.queue);
  for (const name of agentWindow.shown) board.dirty.agents.add(name);
  for (const id of callWindow.shown) board.dirty.calls.add(id);
  // Sorting by a figure that moves re-orders the rows once a second, never per event.
  if (board.resort || board.agentSort === "time" || board.agentSort === "occupancy") {
    board.dirty.order = true;
    board.resort = false;
  }
  schedule();
}

// -- events ----------------------------------------------------------------------------------

function touchQueue(name) {
  if (board.queues.has(name)) board.dirty.queues.add(name);
}
function touchAgent(name) {
  if (!name || !board.agents.has(name)) return;
  board.dirty.agents.add(name);
  for (const q of board.queues.values()) if (q.members.has(name)) board.dirty.queues.add(q.queue);
}

function onEvent(ev) {
  // One node's ids grow; a cluster's stream (one ACD) is in commit order, its ids do not.
  if (!board.clustered && ev.id <= board.lastId) return;
  board.lastId = ev.id;
  if (ev.time >= board.nextDay) {
    load();
    return;
  }
  const data = ev.data || {};
  const q = board.queues.get(ev.queue);
  const a = board.agents.get(ev.agent);
  switch (ev.type) {
    case "call.started":
      if (data.from) {
        board.callers.set(ev.call_id, data.from);
        if (board.callers.size > CALLERS_KEPT) board.callers.delete(board.callers.keys().next().value);
      }
      return;
    case "call.ended":
      board.callers.delete(ev.call_id);
      removeCall(ev.call_id);
      return;
    case "call.live_quality":
      qualitySample(ev);
      return;
    case "admin.pause_reason.created":
    case "admin.pause_reason.deleted":
      if (Array.isArray(data.after)) setPauseReasons(data.after);
      return;
    case "agent.state":
      if (!a) return;
      agentState(a, data.state, data.reason, ev.time);
      touchAgent(a.agent);
      if (board.agentSort === "state") board.resort = true;
      schedule();
      return;
    default:
      break;
  }
  if (!ev.type.startsWith("queue.") || !q) return;
  const t = q.today;
  const wait = typeof data.wait === "number" ? data.wait : 0;
  if (ev.type === "queue.entered") {
    t.offered += 1;
    board.calls.set(ev.call_id, {
      call_id: ev.call_id, queue: ev.queue, campaign: ev.campaign, caller: board.callers.get(ev.call_id) || "",
      entered: ev.time, agent: null, answered: null, quality: null, history: [],
    });
  } else if (ev.type === "queue.answered") {
    t.answered += 1;
    t.wait_answered += wait;
    if (wait <= q.serviceLevel) t.answered_within += 1;
    const call = board.calls.get(ev.call_id);
    if (call) {
      call.answered = ev.time;
      call.agent = ev.agent;
    }
    if (a) {
      a.calls += 1;
      a.call_id = ev.call_id;
      touchAgent(a.agent);
    }
    if (call && visibleQueues().has(call.queue)) board.dirty.callKeys = true;
  } else if (ev.type === "queue.abandoned") {
    t.abandoned += 1;
    if (wait <= q.serviceLevel) t.abandoned_within += 1;
  } else if (ENDS_CALL.has(ev.type)) {
    const talk = typeof data.talk === "number" ? data.talk : 0;
    t.ended += 1;
    t.talk += talk;
    if (a) {
      a.talkBase += talk;
      if (a.call_id === ev.call_id) a.call_id = null;
      touchAgent(a.agent);
    }
    removeCall(ev.call_id);
  } else if (ev.type === "queue.agent_login" || ev.type === "queue.agent_logout"
      || ev.type === "queue.agent_paused" || ev.type === "queue.agent_unpaused") {
    return;
  }
  if (LEAVES_QUEUE.has(ev.type) && ev.type !== "queue.answered") removeCall(ev.call_id);
  touchQueue(ev.queue);
  schedule();
}

function agentState(a, state, reason, at) {
  if (state === "logged-out" && a.loggedInSince !== null) {
    a.loggedInBase += at - a.loggedInSince;
    a.loggedInSince = null;
  } else if (state !== "logged-out" && a.loggedInSince === null) {
    a.loggedInSince = at;
  }
  if (state !== "paused" && a.pausedSince !== null) {
    a.pausedBase += at - a.pausedSince;
    a.pausedSince = null;
  } else if (state === "paused" && a.pausedSince === null) {
    a.pausedSince = at;
  }
  if (state !== "on-call" && state !== "ringing" && state !== "wrapup") a.call_id = null;
  a.state = state;
  a.reason = reason || null;
  a.since = at;
  if (board.selectedAgent === a.agent) renderControl();
}

function removeCall(callId) {
  const call = board.calls.get(callId);
  if (!call) return;
  board.calls.delete(callId);
  touchQueue(call.queue);
  if (call.row) {
    call.row.remove();
    call.row = null;
    board.dirty.callKeys = true;
  }
  if (board.selectedCall === callId) {
    $("call-detail-status").textContent = "The call has ended.";
  }
  schedule();
}

function qualitySample(ev) {
  const call = board.calls.get(ev.call_id);
  if (!call) return;
  call.quality = ev.data;
  call.history.push({ time: ev.time, legs: ev.data.legs || {} });
  if (call.history.length > HISTORY) call.history.shift();
  board.dirty.calls.add(call.call_id);
  schedule();
}

// -- selection: agent control and call detail ----------------------------------------------

function selectAgent(name) {
  board.selectedAgent = name;
  for (const other of board.agents.values()) if (other.row) other.row.removeAttribute("aria-selected");
  const a = board.agents.get(name);
  if (a && a.row) a.row.setAttribute("aria-selected", "true");
  $("agent-control").hidden = false;
  $("control-message").textContent = "";
  renderControl();
  $("control-pause").focus();
}

function renderControl() {
  const a = board.agents.get(board.selectedAgent);
  if (!a) return;
  $("control-agent").value = a.agent;
  $("control-state").value = STATE_LABELS[a.state] + (a.state === "paused" && a.reason ? ` (${a.reason})` : "");
  const out = a.state === "logged-out";
  $("control-pause").disabled = out;
  $("control-ready").disabled = out || a.state !== "paused";
  $("control-logout").disabled = out;
}

async function control(action) {
  const name = board.selectedAgent;
  if (!name) return;
  const message = $("control-message");
  const init = { method: "POST", body: {} };
  if (action === "pause") init.body = { reason: $("control-reason").value };
  message.textContent = "";
  try {
    const after = await api(`/api/v1/agents/${encodeURIComponent(name)}/${action}`, init);
    const verb = { pause: "paused", unpause: "made ready", logout: "logged out" }[action];
    message.textContent = `${name} ${verb}${after.state === "paused" || action !== "pause" ? "" : " (after the current call)"}.`;
  } catch (error) {
    message.textContent = `Refused: ${error.message}`;
  }
}

function selectCall(callId) {
  const call = board.calls.get(callId);
  if (!call) return;
  board.selectedCall = callId;
  for (const other of board.calls.values()) if (other.row) other.row.removeAttribute("aria-selected");
  if (call.row) call.row.setAttribute("aria-selected", "true");
  $("call-detail").hidden = false;
  $("call-detail-status").textContent = "";
  $("call-detail-title").textContent = `Call quality: ${call.caller || call.call_id} with ${call.agent || "no agent"}`;
  if (board.chart) {
    board.chart.destroy();
    board.chart = null;
  }
  renderCallDetail();
  document.dispatchEvent(new CustomEvent("oml:select-call", {
    detail: { call_id: call.call_id, agent: call.agent, queue: call.queue, caller: call.caller },
  }));
}

let uPlotModule = null;
async function chartLibrary() {
  if (!uPlotModule) {
    try {
      uPlotModule = (await import("/vendor/uplot/uPlot.esm.js")).default;
    } catch {
      uPlotModule = false;
    }
  }
  return uPlotModule;
}

function renderCallDetail() {
  const call = board.calls.get(board.selectedCall);
  if (!call) return;
  const rows = [];
  for (const leg of ["caller", "agent"]) {
    const q = call.quality && call.quality.legs && call.quality.legs[leg];
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = leg === "caller" ? "Caller leg" : "Agent leg";
    tr.append(th);
    for (const text of [fixed(q && q.mos, 2), fixed(q && q.jitter_ms), q && typeof q.loss === "number" ? (q.loss * 100).toFixed(1) : "—", fixed(q && q.rtt_ms, 0)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    rows.push(tr);
  }
  $("call-detail-rows").replaceChildren(...rows);
  drawChart(call);
}

async function drawChart(call) {
  const uPlot = await chartLibrary();
  if (!uPlot || board.selectedCall !== call.call_id) return;
  const times = call.history.map((s) => s.time);
  const series = (leg) => call.history.map((s) => (s.legs[leg] && typeof s.legs[leg].mos === "number" ? s.legs[leg].mos : null));
  const data = [times, series("caller"), series("agent")];
  if (board.chart) {
    board.chart.setData(data);
    return;
  }
  const target = $("quality-chart");
  target.replaceChildren();
  board.chart = new uPlot({
    width: Math.max(300, target.clientWidth || 600),
    height: 160,
    scales: { y: { range: [1, 5] } },
    series: [{}, { label: "Caller MOS", stroke: "#1d5fbf" }, { label: "Agent MOS", stroke: "#b3261e" }],
  }, data, target);
}

// -- start -----------------------------------------------------------------------------------

// On a node of a cluster with one ACD the other nodes' calls, and whether their agents' pages are
// connected, come with the snapshot only (a node's event stream carries its own events): it is
// read again every few seconds (the rows on the page stay the same elements), not while the
// keyboard is in a table (a row whose call ended would leave with the focus).
const CLUSTER_REFRESH_MS = 3000;

function refreshLater() {
  clearTimeout(board.refresh);
  board.refresh = setTimeout(() => {
    const focus = document.activeElement;
    if (focus && focus.closest("#agent-rows, #call-rows")) refreshLater();
    else load();
  }, CLUSTER_REFRESH_MS);
}

// The stream ended by its node's stop (1001): the node the page reaches now (the balancer's
// other one) tells the wallboard afresh; the stream goes on from that snapshot.
async function resync() {
  const snap = await api("/api/v1/wallboard");
  applySnapshot(snap);
  $("status-line").textContent = "";
  if (board.clustered) refreshLater();
  return snap.last_event_id;
}

async function load() {
  clearTimeout(board.refresh);
  if (board.stop) board.stop();
  board.stop = null;
  let snap;
  try {
    snap = await api("/api/v1/wallboard");
  } catch (error) {
    $("status-line").textContent = `The wallboard could not load: ${error.message}`;
    // Sooner at first (a node stopping while a cluster's refresh ran), then every 5 s.
    board.loadDelay = Math.min(5000, (board.loadDelay || 250) * 2);
    setTimeout(load, board.loadDelay);
    return;
  }
  board.loadDelay = 0;
  $("status-line").textContent = "";
  applySnapshot(snap);
  board.stop = subscribe(["queue.", "agent.state", "call.started", "call.ended", "call.live_quality", "admin.pause_reason."], onEvent, {
    sinceId: snap.last_event_id,
    resync,
  });
  if (board.clustered) refreshLater();
}

function init() {
  agentWindow = new RowWindow($("agent-table"), $("agent-rows"), $("agent-scroll"), (name) => {
    const a = board.agents.get(name);
    return a.row || agentRow(a);
  });
  callWindow = new RowWindow($("call-table"), $("call-rows"), $("call-scroll"), (id) => {
    const c = board.calls.get(id);
    return c.row || callRow(c);
  });
  const writeNow = (entered, dirty) => {
    for (const key of entered) dirty.add(key);
    writeRows();
  };
  $("agent-rows").addEventListener("keydown", (event) => {
    agentWindow.keydown(event, (entered) => writeNow(entered, board.dirty.agents));
  });
  $("call-rows").addEventListener("keydown", (event) => {
    callWindow.keydown(event, (entered) => writeNow(entered, board.dirty.calls));
  });
  document.addEventListener("oml:section", (event) => {
    if (event.detail && event.detail.section !== "wallboard") return;
    for (const name of agentWindow.shown) board.dirty.agents.add(name);
    for (const id of callWindow.shown) board.dirty.calls.add(id);
    board.dirty.order = true;
    schedule();
  });
  $("wb-filter").addEventListener("change", (event) => {
    board.filter = event.target.value;
    board.dirty.order = true;
    schedule();
  });
  $("wb-agent-sort").addEventListener("change", (event) => {
    board.agentSort = event.target.value;
    board.dirty.order = true;
    schedule();
  });
  for (const button of document.querySelectorAll("#queue-table button.sort")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      board.queueSort = { key, descending: board.queueSort.key === key ? !board.queueSort.descending : key !== "name" };
      for (const other of document.querySelectorAll("#queue-table button.sort")) other.setAttribute("aria-pressed", String(other === button));
      board.dirty.order = true;
      schedule();
    });
  }
  $("control-pause").addEventListener("click", () => control("pause"));
  $("control-ready").addEventListener("click", () => control("unpause"));
  $("control-logout").addEventListener("click", () => control("logout"));
  session.ready.then(() => {
    load();
    setInterval(tick, 1000);
  });
}

init();
