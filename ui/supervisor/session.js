// The supervisor page's session: the login form, the bearer token (in memory only), the API
// helper, the live event stream and the section navigation. Every other module of the page
// imports it: `session.ready` resolves once a supervisor or an administrator has logged in.

const $ = (id) => document.getElementById(id);

const ALLOWED_ROLES = new Set(["supervisor", "admin"]);
const RECONNECT_MIN = 500;
const RECONNECT_MAX = 10000;

let token = null;
let resolveReady;

export const session = {
  ready: new Promise((resolve) => { resolveReady = resolve; }),
};

// An Error carrying the RFC 9457 problem document of a refused request.
export class ApiProblem extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return { status: response.status, title: response.statusText };
  }
}

async function request(path, init = {}, bearer = token) {
  const { raw, ...options } = init;
  const headers = new Headers(options.headers || {});
  if (bearer) headers.set("Authorization", `Bearer ${bearer}`);
  if (options.body !== undefined && typeof options.body !== "string" && !(options.body instanceof Blob)
      && !(options.body instanceof FormData) && !(options.body instanceof URLSearchParams)) {
    options.body = JSON.stringify(options.body);
    headers.set("Content-Type", "application/json");
  }
  const response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new ApiProblem(response.status, await problemOf(response));
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

// fetch with the session's bearer token: the parsed JSON (or the Response with init.raw); an
// ApiProblem (an Error with .status and .problem) on a non-2xx answer. A JSON-able object as
// init.body is sent as JSON.
export async function api(path, init = {}) {
  if (!token) await session.ready;
  return request(path, init);
}

// Parse one SSE message block into {id, event, data}.
function parseBlock(block) {
  const message = { id: null, event: "message", data: [] };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") message.data.push(value);
    else if (field === "id") message.id = value;
    else if (field === "event") message.event = value;
  }
  return message.data.length ? message : null;
}

const streamListeners = new Set();
function streamState(text) {
  for (const listener of streamListeners) listener(text);
}

// Listen to the stream's state ("connecting", "live", "reconnecting").
export function onStreamState(listener) {
  streamListeners.add(listener);
}

// The live event stream (GET /api/v1/events as Server-Sent Events, read through fetch so that the
// token travels in the header), for events whose type starts with one of `types`; `onEvent(event)`
// gets each parsed event object. After a drop it reconnects with since_id = the last id seen, so
// nothing is missed nor repeated; `options.sinceId` starts it after that event id (a snapshot's).
// When the server ends the stream with 1001 ("going away": its node stops, the balancer has
// another) it reconnects at once (within 250 ms) if the stream had served for more than 0.2 s,
// with the usual backoff otherwise (a stream refused at once by a stopping node), like the agent
// page's socket; `options.resync` (async, returns the event id to go on from) is called first
// then: the other node's snapshot replaces what the stopped node said.
// Returns a function that stops it.
export function subscribe(types, onEvent, options = {}) {
  const controller = new AbortController();
  let lastId = Number.isInteger(options.sinceId) ? options.sinceId : null;
  let delay = RECONNECT_MIN;
  let liveAt = null;       // when the current stream's response came
  let goingAway = false;   // the server ended it with 1001

  async function once() {
    liveAt = null;
    goingAway = false;
    const params = new URLSearchParams();
    for (const type of types || []) params.append("type", type);
    if (lastId !== null) params.set("since_id", String(lastId));
    const query = params.toString();
    const response = await request(`/api/v1/events${query ? `?${query}` : ""}`, {
      raw: true,
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    });
    streamState("live");
    liveAt = Date.now();
    delay = RECONNECT_MIN;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const message = parseBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (!message) continue;
        const data = JSON.parse(message.data.join("\n"));
        if (message.event === "error") {
          if (Number.isInteger(data.last_id)) lastId = data.last_id;
          if (data.code === 1001) goingAway = true;
          continue;
        }
        if (message.id !== null) lastId = Number(message.id);
        try {
          onEvent(data);
        } catch (error) {
          console.error("event handler failed", error);
        }
      }
    }
  }

  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  (async () => {
    if (!token) await session.ready;
    let resync = false;
    while (!controller.signal.aborted) {
      try {
        if (resync && options.resync) {
          const since = await options.resync();
          if (controller.signal.aborted) return;
          if (Number.isInteger(since)) lastId = since;
        }
        await once();
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof ApiProblem && (error.status === 401 || error.status === 403)) {
          streamState("refused");
          return;
        }
      }
      if (controller.signal.aborted) return;
      if (liveAt !== null) resync = false; // a stream went live after the snapshot read
      streamState("reconnecting");
      const served = liveAt !== null && Date.now() - liveAt > 200;
      if (goingAway) resync = true;
      if (goingAway && served) {
        await pause(Math.random() * 250); // spread a node's pages over 250 ms
      } else {
        await pause(delay * (0.8 + Math.random() * 0.4));
        delay = Math.min(delay * 2, RECONNECT_MAX);
      }
      liveAt = null;
      goingAway = false;
    }
  })();
  return () => controller.abort();
}

// -- navigation ------------------------------------------------------------------------------

const SECTIONS = ["wallboard", "reports", "recordings"];

export function show(name) {
  for (const section of SECTIONS) {
    const element = $(section);
    if (element) element.hidden = section !== name;
    const button = $(`nav-${section}`);
    if (button) {
      if (section === name) button.setAttribute("aria-current", "page");
      else button.removeAttribute("aria-current");
    }
  }
  document.dispatchEvent(new CustomEvent("oml:section", { detail: { section: name } }));
}

// -- login -----------------------------------------------------------------------------------

function loginFailed(message) {
  $("login-view").hidden = false;
  $("app-view").hidden = true;
  $("login-message").textContent = message;
  $("login-button").disabled = false;
}

async function login(name, password) {
  let answer;
  try {
    answer = await request("/api/v1/sessions", { method: "POST", body: { name, password } }, null);
  } catch (error) {
    if (error instanceof ApiProblem && error.status === 429) {
      loginFailed("Too many failed attempts. Try again later.");
    } else if (error instanceof ApiProblem && error.status === 401) {
      // The API refuses agent accounts the same way (they log in on their own page).
      loginFailed("Wrong username or password. Agents log in on the agent page, /agent/.");
    } else {
      loginFailed(`Log in failed: ${error.message}`);
    }
    return;
  }
  if (!ALLOWED_ROLES.has(answer.role)) {
    loginFailed(`The account ${name} has the role ${answer.role || "none"}: this page is for `
      + "supervisors and administrators. Agents use /agent/.");
    return;
  }
  token = answer.token;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("supervisor-name").textContent = answer.account || name;
  $("supervisor-role").textContent = `(${answer.role})`;
  $("password").value = "";
  show("wallboard");
  resolveReady({ name: answer.account || name, role: answer.role, token });
}

function init() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("login-button").disabled = true;
    $("login-message").textContent = "";
    login($("username").value.trim(), $("password").value);
  });
  for (const section of SECTIONS) {
    $(`nav-${section}`).addEventListener("click", () => show(section));
  }
  $("signout-button").addEventListener("click", () => {
    token = null;
    window.location.reload();
  });
  onStreamState((text) => {
    $("stream-state").value = text;
    if (text === "refused") {
      // The token refused (expired, revoked, or a node that does not know it after a stop).
      $("status-line").textContent = "The server refused your session: sign out and log in again.";
    }
  });
}

init();
