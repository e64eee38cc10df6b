// The Recordings section of the supervisor page: a search form (a day of the site and a number of
// days, agent, campaign, caller number, disposition, talk duration, minimum MOS), the results and
// an <audio> player. Play asks for a playback ticket (POST .../ticket, bearer token; the server
// audits it as the listen) and gives the player the audio URL with that ticket: an <audio src>
// cannot send the token, and the token never goes into a URL. The player streams at once and
// seeks with HTTP range requests. Download fetches the file with the token. The recording's
// PCI pauses (gaps) are marked on a timeline under the player and said in words. A call requeued
// mid-call (its agent's page went away) has one recording per agent who answered it (`segments`):
// its row offers Play and Download for each, in order.

import { api, session } from "./session.js";

const PAGE = 100;

let player;
let offset = 0;

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function field(id, label, control) {
  control.id = id;
  return el("div", { class: "report-field" }, el("label", { for: id, text: label }), control);
}

function input(name, attributes = {}) {
  return el("input", { name, ...attributes });
}

function duration(seconds) {
  const total = Math.round(seconds);
  const m = Math.floor(total / 60);
  return `${m}:${String(total % 60).padStart(2, "0")}`;
}

function status(text) {
  document.getElementById("recording-status").textContent = text;
}

function query(form) {
  const params = new URLSearchParams();
  const names = ["day", "agent", "campaign", "caller", "min_duration", "max_duration", "min_mos"];
  for (const name of names) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  if (form.elements.days.value && form.elements.days.value !== "1") {
    params.set("days", form.elements.days.value);
  }
  if (form.elements.disposition.value.trim()) {
    params.set("disposition", form.elements.disposition.value.trim());
  }
  params.set("offset", String(offset));
  params.set("limit", String(PAGE));
  return `/api/v1/recordings?${params}`;
}

async function fetchAudio(item, download) {
  const separator = item.audio.includes("?") ? "&" : "?";
  const response = await api(`${item.audio}${download ? `${separator}download=1` : ""}`, { raw: true });
  return response.blob();
}

// The recordings of a search item, one per answered segment (the item itself for a server or
// record without segments), each with what the player and the buttons need.
function parts(item) {
  const segments = item.segments && item.segments.length ? item.segments : [{ segment: 1, agent: item.agent }];
  return segments.map((s) => ({
    ...item,
    segment: s.segment || 1,
    agent: s.agent || item.agent,
    audio: s.audio || item.audio,
    gaps: s.gaps || item.gaps,
    duration: segments.length > 1 ? 0 : item.duration,
    many: segments.length > 1,
  }));
}

function named(item) {
  return item.many ? `segment ${item.segment} (${item.agent || "no agent"}) of the call ${item.call_id}`
    : `the recording of ${item.call_id}`;
}

const SVG = "http://www.w3.org/2000/svg";
const TIMELINE_WIDTH = 1000;

// 42 -> "00:42", 4210 -> "1:10:10".
function clock(seconds) {
  const total = Math.max(0, Math.round(seconds));
  const h = Math.floor(total / 3600);
  const m = String(Math.floor((total % 3600) / 60)).padStart(2, "0");
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${m}:${s}` : `${m}:${s}`;
}

function gapWords(gaps) {
  return (gaps || []).map((g) => `Recording paused ${clock(g.start)}–${clock(g.end)}`);
}

let current = null; // the item in the player

// The timeline under the player: the whole recording, each pause a mark, the playhead.
function drawTimeline() {
  const svg = document.getElementById("player-timeline");
  const words = document.getElementById("player-gaps");
  if (!current) {
    svg.replaceChildren();
    words.replaceChildren();
    return;
  }
  const gaps = current.gaps || [];
  const length = Number.isFinite(player.duration) && player.duration > 0 ? player.duration : current.duration;
  const x = (seconds) => (length > 0 ? Math.min(1, Math.max(0, seconds / length)) * TIMELINE_WIDTH : 0);
  const track = document.createElementNS(SVG, "rect");
  for (const [name, value] of Object.entries({ x: 0, y: 8, width: TIMELINE_WIDTH, height: 8, class: "track" })) {
    track.setAttribute(name, value);
  }
  const marks = gaps.map((g) => {
    const mark = document.createElementNS(SVG, "rect");
    const left = x(g.start);
    for (const [name, value] of Object.entries({
      x: left, y: 2, width: Math.max(3, x(g.end) - left), height: 20, class: "gap",
    })) mark.setAttribute(name, value);
    const title = document.createElementNS(SVG, "title");
    title.textContent = gapWords([g])[0];
    mark.append(title);
    return mark;
  });
  const head = document.createElementNS(SVG, "rect");
  head.id = "player-playhead";
  for (const [name, value] of Object.entries({ x: x(player.currentTime || 0), y: 0, width: 3, height: 24, class: "playhead" })) {
    head.setAttribute(name, value);
  }
  svg.replaceChildren(track, ...marks, head);
  const said = gapWords(gaps);
  svg.setAttribute("aria-label", said.length
    ? `Timeline of the recording, ${clock(length)} long: ${said.join("; ")}`
    : `Timeline of the recording, ${clock(length)} long, without pauses`);
  words.replaceChildren(...said.map((text) => el("li", { text })));
}

function movePlayhead() {
  const head = document.getElementById("player-playhead");
  if (!head || !current) return;
  const length = Number.isFinite(player.duration) && player.duration > 0 ? player.duration : current.duration;
  head.setAttribute("x", length > 0 ? Math.min(1, player.currentTime / length) * TIMELINE_WIDTH : 0);
}

async function play(item, button) {
  button.disabled = true;
  status(`Loading ${named(item)}…`);
  try {
    const base = item.audio.split("?")[0].slice(0, -"/audio".length);
    const which = item.segment > 1 ? `?segment=${item.segment}` : "";
    const ticket = await api(`${base}/ticket${which}`, { method: "POST" });
    current = item;
    player.src = ticket.audio;
    document.getElementById("player-title").textContent =
      `Call ${item.call_id}${item.many ? `, segment ${item.segment}` : ""}: `
      + `${item.caller || "unknown caller"} with ${item.agent || "no agent"} `
      + `(${item.start.slice(0, 16).replace("T", " ")}); caller left, agent right`;
    drawTimeline();
    await player.play().catch(() => {});
    status(`Playing ${named(item)}.`);
  } catch (error) {
    status(`The recording could not be played: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

async function download(item) {
  try {
    const blob = await fetchAudio(item, true);
    const url = URL.createObjectURL(blob);
    const name = item.many ? `${item.call_id}-${item.segment}` : item.call_id;
    const link = el("a", { href: url, download: `${name}.opus` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    status(`Downloaded ${named(item)}.`);
  } catch (error) {
    status(`The download failed: ${error.message}`);
  }
}

function row(item) {
  const mos = item.min_mos === null ? "—" : item.min_mos.toFixed(2);
  const buttons = [];
  for (const part of parts(item)) {
    const suffix = part.many ? ` ${part.segment}` : "";
    const playButton = el("button", {
      type: "button", class: "primary", text: `Play${suffix}`, "aria-label": `Play ${named(part)}`,
    });
    playButton.addEventListener("click", () => play(part, playButton));
    const saveButton = el("button", {
      type: "button", text: `Download${suffix}`, "aria-label": `Download ${named(part)}`,
    });
    saveButton.addEventListener("click", () => download(part));
    buttons.push(el("span", { class: "segment" }, playButton, " ", saveButton, " "));
  }
  return el("tr", { "data-call": item.call_id },
    el("th", { scope: "row", text: item.start.slice(0, 16).replace("T", " ") }),
    el("td", { text: item.caller || "—" }),
    el("td", { text: item.agent || "—" }),
    el("td", { text: item.campaign || "—" }),
    el("td", { text: item.disposition || "—" }),
    el("td", { class: "num", text: duration(item.duration) }),
    el("td", { class: "num", text: mos }),
    el("td", { class: "gaps", text: gapWords(item.gaps).join("; ") || "—" }),
    el("td", {}, ...buttons));
}

async function search(form) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  status("Searching…");
  try {
    const page = await api(query(form));
    const body = document.getElementById("recording-rows");
    body.replaceChildren(...page.recordings.map(row));
    const shown = page.recordings.length;
    status(shown
      ? `${page.total} recordings; ${offset + 1} to ${offset + shown} shown.`
      : "No recording matches.");
    document.getElementById("recording-previous").disabled = offset === 0;
    document.getElementById("recording-next").disabled = page.next === null;
  } catch (error) {
    status(`The search failed: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function build(section) {
  const form = el("form", { class: "toolbar", "aria-label": "Search recordings" },
    field("rec-day", "Day", input("day", { type: "date" })),
    field("rec-days", "Days", input("days", { type: "number", min: "1", max: "92", value: "1" })),
    field("rec-agent", "Agent", input("agent", { maxlength: "64" })),
    field("rec-campaign", "Campaign", input("campaign", { maxlength: "64" })),
    field("rec-caller", "Caller number", input("caller", { maxlength: "64", inputmode: "tel" })),
    field("rec-disposition", "Disposition", input("disposition", { maxlength: "64" })),
    field("rec-min-duration", "Minimum duration (s)", input("min_duration", { type: "number", min: "0" })),
    field("rec-max-duration", "Maximum duration (s)", input("max_duration", { type: "number", min: "0" })),
    field("rec-min-mos", "Minimum MOS", input("min_mos", { type: "number", min: "1", max: "5", step: "0.1" })),
    el("button", { type: "submit", class: "primary", text: "Search" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    offset = 0;
    search(form);
  });
  const previous = el("button", { type: "button", id: "recording-previous", text: "Previous page", disabled: "" });
  const next = el("button", { type: "button", id: "recording-next", text: "Next page", disabled: "" });
  previous.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); search(form); });
  next.addEventListener("click", () => { offset += PAGE; search(form); });
  const head = el("tr");
  for (const text of ["Start", "Caller", "Agent", "Campaign", "Disposition", "Duration", "Lowest MOS", "Pauses", "Recording"]) {
    head.append(el("th", { scope: "col", text }));
  }
  const table = el("table", { class: "grid-table", "aria-labelledby": "recordings-results-title" },
    el("thead", {}, head), el("tbody", { id: "recording-rows" }));
  player = el("audio", { id: "recording-player", controls: "", preload: "metadata", "aria-labelledby": "player-title" });
  for (const type of ["loadedmetadata", "durationchange"]) player.addEventListener(type, drawTimeline);
  player.addEventListener("timeupdate", movePlayhead);
  player.addEventListener("error", () => {
    if (current) status(`The recording of ${current.call_id} stopped: press Play again (its ticket lasts a minute unused).`);
  });
  const timeline = document.createElementNS(SVG, "svg");
  for (const [name, value] of Object.entries({
    id: "player-timeline", class: "timeline", role: "img", viewBox: `0 0 ${TIMELINE_WIDTH} 24`,
    preserveAspectRatio: "none", "aria-label": "Timeline of the recording",
  })) timeline.setAttribute(name, value);
  section.replaceChildren(
    el("h1", { text: "Recordings" }),
    el("div", { class: "card" }, form,
      el("p", { id: "recording-status", class: "muted-text", role: "status", "aria-live": "polite" })),
    el("div", { class: "card" },
      el("h2", { id: "player-title", text: "Player: choose a recording" }), player, timeline,
      el("ul", { id: "player-gaps", class: "gap-list", "aria-label": "Pauses of the recording" })),
    el("div", { class: "card" },
      el("h2", { id: "recordings-results-title", text: "Results" }),
      el("div", { class: "scroll tall" }, table),
      el("div", { class: "toolbar" }, previous, next)),
  );
  return form;
}

async function init() {
  const section = document.getElementById("recordings");
  if (!section) return;
  await session.ready;
  const form = build(section);
  let searched = false;
  document.addEventListener("oml:section", (event) => {
    if (event.detail && event.detail.section === "recordings" && !searched) {
      searched = true;
      search(form);
    }
  });
}

init();
