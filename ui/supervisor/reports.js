// The Reports section of the supervisor page: a report picker, its span (a day of the site and a
// number of days), the interval of the queue reports, a uPlot chart and an accessible table of the
// report's rows, and "Export CSV" (the same cells, from the API's CSV). Every figure comes from
// GET /api/v1/reports/... (rebuilt by the server from what it stored): nothing is computed here
// but the chart's sums over queues.

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { api, session } from "./session.js";

const REPORTS = {
  agents: { label: "Agent activity", path: "agents", interval: false },
  queues: { label: "Queues by interval", path: "queues", interval: true, by: "queue" },
  campaigns: { label: "Campaigns by interval", path: "queues", interval: true, by: "campaign" },
  dispositions: { label: "Dispositions per campaign", path: "dispositions", interval: false },
  calls: { label: "Call detail", path: "calls", interval: false },
};

const HEADINGS = {
  agent: "Agent", logged_in: "Logged in", ready: "Ready", ringing: "Ringing", talk: "Talk",
  wrapup: "Wrap-up", paused: "Paused", occupancy: "Occupancy", calls: "Calls", aht: "AHT",
  start: "Start", end: "End", queue: "Queue", campaign: "Campaign", offered: "Offered",
  answered: "Answered", abandoned: "Abandoned", service_level: "Service level", asa: "ASA",
  longest_wait: "Longest wait", disposition: "Disposition", share: "Share", call_id: "Call",
  direction: "Direction", caller: "Caller", callee: "Called", wait: "Wait", duration: "Duration",
  hangup_by: "Hung up by", cause: "Cause", min_mos: "Lowest MOS", recording: "Recorded",
};
const SECONDS = new Set(["logged_in", "ready", "ringing", "talk", "wrapup", "paused", "aht", "asa",
  "longest_wait", "wait", "duration"]);
const SHARES = new Set(["occupancy", "service_level", "share"]);

let form;
let chart = null;
let current = null;

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

function heading(column) {
  if (column.startsWith("paused:")) return `Paused: ${column.slice(7) || "no reason"}`;
  if (HEADINGS[column]) return HEADINGS[column];
  return column.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

function duration(seconds) {
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(s).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
}

function cell(column, value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number") {
    if (SHARES.has(column)) return `${(value * 100).toFixed(1)} %`;
    if (SECONDS.has(column) || column.startsWith("paused:")) return duration(value);
    return String(value);
  }
  if ((column === "start" || column === "end") && /^\d{4}-\d\d-\d\dT/.test(value)) {
    return value.slice(0, 16).replace("T", " ");
  }
  return value || "—";
}

function query() {
  const kind = REPORTS[form.report.value];
  const params = new URLSearchParams();
  if (form.day.value) params.set("day", form.day.value);
  if (form.days.value && form.days.value !== "1") params.set("days", form.days.value);
  if (kind.interval) params.set("interval", form.interval.value);
  if (kind.by) params.set("by", kind.by);
  return `/api/v1/reports/${kind.path}?${params}`;
}

function renderTable(report) {
  const table = document.getElementById("report-table");
  const caption = el("caption", {
    text: `${REPORTS[form.report.value].label}, ${cell("start", report.from)} to `
      + `${cell("start", report.to)} (${report.timezone})`,
  });
  const head = el("tr");
  for (const column of report.columns) head.append(el("th", { scope: "col", text: heading(column) }));
  const body = el("tbody");
  for (const row of report.rows) {
    const tr = el("tr");
    report.columns.forEach((column, index) => {
      const text = cell(column, row[column]);
      tr.append(index === 0 ? el("th", { scope: "row", text }) : el("td", { text }));
    });
    body.append(tr);
  }
  table.replaceChildren(caption, el("thead", {}, head), body);
  document.getElementById("report-count").textContent = `${report.rows.length} rows`;
}

// What the chart draws: x values and named series.
function chartData(report) {
  const kind = form.report.value;
  if (kind === "queues" || kind === "campaigns") {
    const sums = new Map();
    for (const row of report.rows) {
      const x = Date.parse(row.start) / 1000;
      const sum = sums.get(x) || { offered: 0, answered: 0, abandoned: 0 };
      sum.offered += row.offered;
      sum.answered += row.answered;
      sum.abandoned += row.abandoned;
      sums.set(x, sum);
    }
    const xs = [...sums.keys()].sort((a, b) => a - b);
    return {
      time: true,
      xs,
      series: ["offered", "answered", "abandoned"].map((name) => ({
        label: heading(name), values: xs.map((x) => sums.get(x)[name]),
      })),
      labels: null,
    };
  }
  if (kind === "agents") {
    return {
      time: false,
      xs: report.rows.map((_, i) => i),
      labels: report.rows.map((row) => row.agent),
      series: [{
        label: "Occupancy (%)",
        values: report.rows.map((row) => (row.occupancy === null ? null : Math.round(row.occupancy * 1000) / 10)),
      }],
    };
  }
  if (kind === "dispositions") {
    return {
      time: false,
      xs: report.rows.map((_, i) => i),
      labels: report.rows.map((row) => `${row.campaign}: ${row.disposition || "none"}`),
      series: [{ label: "Calls", values: report.rows.map((row) => row.calls) }],
    };
  }
  const rows = report.rows.filter((row) => row.min_mos !== null);
  return {
    time: true,
    xs: rows.map((row) => Date.parse(row.start) / 1000),
    labels: null,
    series: [{ label: "Lowest MOS", values: rows.map((row) => row.min_mos) }],
  };
}

const COLOURS = ["#1d5fbf", "#1f7a3a", "#b3261e", "#9a6700", "#6b4fa3"];

function renderChart(report) {
  const box = document.getElementById("report-chart");
  if (chart) {
    chart.destroy();
    chart = null;
  }
  const data = chartData(report);
  box.setAttribute("aria-label", `Chart of ${REPORTS[form.report.value].label}: `
    + `${data.series.map((s) => s.label).join(", ")}; the table below has every figure.`);
  const bars = !data.time && uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 60] }) : null;
  const zone = report.timezone || "UTC";
  const options = {
    width: Math.max(320, box.clientWidth || 800),
    height: 240,
    // the site's clock on the time axis, as in the table (not the browser's)
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), zone),
    scales: { x: { time: data.time } },
    axes: [
      data.labels
        ? { values: (_, ticks) => ticks.map((t) => data.labels[t] ?? ""), space: 40 }
        : {},
      {},
    ],
    series: [
      {
        label: data.time ? "Time" : "Row",
        value: (_, v) => {
          if (v === null) return "—";
          if (data.labels) return data.labels[v] ?? "";
          return new Date(v * 1000).toLocaleString(undefined, { timeZone: zone });
        },
      },
      ...data.series.map((s, i) => ({
        label: s.label,
        stroke: COLOURS[i % COLOURS.length],
        fill: bars ? `${COLOURS[i % COLOURS.length]}55` : undefined,
        width: 2,
        paths: bars || undefined,
        points: { show: !bars },
      })),
    ],
  };
  chart = new uPlot(options, [data.xs, ...data.series.map((s) => s.values)], box);
}

async function show() {
  const status = document.getElementById("report-status");
  const button = document.getElementById("report-show");
  button.disabled = true;
  status.textContent = "Loading…";
  try {
    const report = await api(query());
    current = report;
    if (!form.day.value && report.from) form.day.value = report.from.slice(0, 10);
    renderTable(report);
    renderChart(report);
    status.textContent = "";
    document.getElementById("report-export").disabled = false;
  } catch (error) {
    status.textContent = `The report failed: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

async function exportCsv() {
  const status = document.getElementById("report-status");
  try {
    const response = await api(`${query()}&format=csv`, { raw: true });
    const blob = await response.blob();
    const disposition = response.headers.get("Content-Disposition") || "";
    const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || "report.csv";
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    status.textContent = `Exported ${name}.`;
  } catch (error) {
    status.textContent = `The export failed: ${error.message}`;
  }
}

function build(section) {
  const picker = el("select", { name: "report" });
  for (const [value, kind] of Object.entries(REPORTS)) {
    picker.append(el("option", { value, text: kind.label }));
  }
  const day = el("input", { type: "date", name: "day" });
  const days = el("input", { type: "number", name: "days", min: "1", max: "92", value: "1" });
  const interval = el("select", { name: "interval" });
  for (const [value, text] of [["15", "15 minutes"], ["30", "30 minutes"], ["60", "1 hour"], ["day", "Day"]]) {
    interval.append(el("option", { value, text }));
  }
  interval.value = "60";
  const intervalField = field("report-interval", "Interval", interval);
  form = el("form", { class: "toolbar report-form", "aria-label": "Report options" },
    field("report-kind", "Report", picker),
    field("report-day", "Day", day),
    field("report-days", "Days", days),
    intervalField,
    el("button", { type: "submit", id: "report-show", class: "primary", text: "Show report" }),
    el("button", { type: "button", id: "report-export", text: "Export CSV", disabled: "" }));
  const sync = () => { intervalField.hidden = !REPORTS[picker.value].interval; };
  picker.addEventListener("change", () => { sync(); show(); });
  sync();
  form.addEventListener("submit", (event) => { event.preventDefault(); show(); });
  form.querySelector("#report-export").addEventListener("click", exportCsv);
  const chartBox = el("div", { id: "report-chart", class: "chart", role: "img", "aria-label": "Report chart" });
  const table = el("table", { id: "report-table", class: "grid-table" });
  section.replaceChildren(
    el("h1", { id: "reports-title", text: "Reports" }),
    el("div", { class: "card" }, form,
      el("p", { id: "report-status", class: "muted-text", role: "status", "aria-live": "polite" })),
    el("div", { class: "card" }, chartBox),
    el("div", { class: "card" },
      el("p", { id: "report-count", class: "muted-text" }),
      el("div", { class: "scroll tall" }, table)),
  );
}

function addStyles() {
  if (document.querySelector('link[data-uplot]')) return;
  const link = el("link", { rel: "stylesheet", href: "../vendor/uplot/uPlot.min.css", "data-uplot": "" });
  document.head.append(link);
}

async function init() {
  const section = document.getElementById("reports");
  if (!section) return;
  await session.ready;
  addStyles();
  build(section);
  let shown = false;
  const first = () => {
    if (!shown && !section.hidden) {
      shown = true;
      show();
    }
  };
  document.addEventListener("oml:section", (event) => {
    if (event.detail && event.detail.section === "reports") first();
    if (current && chart && !section.hidden) renderChart(current);
  });
  first();
}

init();
