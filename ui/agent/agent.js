// The agent page: login, state, calls, media channel. No build step, no external resources.
import { Signaling } from "./connection.js";
import { startRing, stopRing, beep } from "./sounds.js";

const $ = (id) => document.getElementById(id);
const STATE_LABELS = {
  "logged-out": "Logged out", ready: "Ready", paused: "Paused", ringing: "Ringing",
  "on-call": "On call", wrapup: "Wrap-up",
};
const TOKEN_KEY = "omlmedia.agent.token";
const SETTINGS_KEY = "omlmedia.agent.settings";

const agent = {
  signaling: null,
  token: sessionStorage.getItem(TOKEN_KEY),
  name: "",
  state: "logged-out",
  reason: null,
  stateSince: Date.now(),
  calls: new Map(),
  current: null,        // call id shown in the call panel
  wrapupCall: null,     // ended call waiting for a disposition
  history: [],
  pc: null,
  pcChannel: null,      // the server's channel id agent.pc was negotiated with (its answer's)
  negotiating: null,    // the peer connection whose offer is being made or answered
  mic: null,
  iceTimer: null,
  settings: { autoAnswer: false, audioProcessing: true, ...JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") },
  ended: false,
};
window.omlAgent = agent; // inspection hook for tests and support

function fmt(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(s).padStart(2, "0")}`;
}

function banner(text) {
  const el = $("banner");
  el.textContent = text || "";
  el.hidden = !text;
}

function status(text) { $("status-line").textContent = text || ""; }

function showLogin(message) {
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-message").textContent = message || "";
  $("login-button").disabled = false;
  $("password").value = "";
  stopRing();
  closeMedia();
}

function showApp() {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("agent-name").textContent = agent.name;
}

// --- state and calls ---

function setState(state, reason, elapsed = 0) {
  agent.state = state;
  agent.reason = reason;
  agent.stateSince = Date.now() - elapsed * 1000;
  const label = STATE_LABELS[state] || state;
  const el = $("state");
  el.dataset.state = state;
  el.textContent = state === "paused" && reason ? `${label} (${reason})` : label;
  render();
}

function liveCalls() {
  return [...agent.calls.values()].filter((c) => c.state !== "ended");
}

const isConsult = (call) => call.direction === "consult" || call.direction === "consult-in";

// The consultation this agent placed and the caller it holds meanwhile (either may be gone).
function consultation() {
  const consult = liveCalls().find((c) => c.direction === "consult");
  const held = consult && liveCalls().find((c) => c.call_id !== consult.call_id && !isConsult(c));
  return { consult, held };
}

function pickCurrent() {
  const live = liveCalls();
  const prefer = live.find((c) => c.state === "ringing") || live.find((c) => c.state === "active" || c.state === "dialing") || live[0];
  agent.current = prefer ? prefer.call_id : null;
}

const DEFAULT_DISPOSITIONS = [...document.querySelectorAll("#disposition option")].map(
  (o) => [o.value, o.textContent],
);

// A campaign's call brings its own dispositions; other calls get the page's defaults.
function setDispositions(names) {
  const select = $("disposition");
  select.replaceChildren();
  const entries = names && names.length ? names.map((n) => [n, n]) : DEFAULT_DISPOSITIONS;
  for (const [value, label] of entries) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = label;
    select.append(option);
  }
}

// An administrator changed the dispositions of the call's campaign: the call offers the new ones,
// and so does the wrap-up's menu when it is that call's (the choice kept when it still exists).
function setCallDispositions(callId, names) {
  const call = agent.calls.get(callId) || agent.history.find((c) => c.call_id === callId);
  if (call) call.dispositions = names;
  if (agent.wrapupCall === callId) {
    const chosen = $("disposition").value;
    setDispositions(names);
    if (names.includes(chosen)) $("disposition").value = chosen;
  }
}

function updateCall(call) {
  call.receivedAt = Date.now();
  agent.calls.set(call.call_id, call);
  if (call.state === "ended") {
    agent.calls.delete(call.call_id);
    agent.history.unshift(call);
    renderHistory();
    if (!isConsult(call)) {
      agent.wrapupCall = call.call_id;
      $("notes").value = "";
      setDispositions(call.dispositions);
    } else if (call.reason && call.reason !== "transferred") {
      status(`Consultation with ${call.caller_name || call.caller_number} ended: ${call.reason}`);
    }
  }
  pickCurrent();
  render();
}

function render() {
  const call = agent.current ? agent.calls.get(agent.current) : null;
  $("no-call").hidden = !!call;
  $("call-panel").hidden = !call;
  const ringing = call && call.state === "ringing";
  if (call) {
    const kinds = { ringing: "Incoming call", dialing: call.direction === "consult" ? "Consulting…" : "Calling…", active: "Connected", held: "On hold" };
    if (call.direction === "consult-in") kinds.ringing = "Incoming consultation";
    $("call-kind").textContent = kinds[call.state] || call.state;
    $("caller-label").textContent = call.direction === "consult-in" ? "Consulting agent" : call.direction === "consult" ? "Consulted" : "Caller";
    const about = call.consult_for || "";
    $("consult-for").textContent = about;
    $("consult-for-label").hidden = $("consult-for-row").hidden = !about;
    $("caller-number").textContent = call.caller_number || "unknown";
    $("caller-name").textContent = call.caller_name ? `(${call.caller_name})` : "";
    $("call-queue").textContent = call.queue || "—";
    const link = $("call-url");
    const safe = /^https?:\/\//.test(call.url || "");
    link.hidden = !safe;
    if (safe) link.href = call.url;
    $("call-wait").textContent = fmt(call.wait_seconds || 0);
  }
  $("answer-button").disabled = !ringing;
  $("hangup-button").disabled = !call;
  $("hold-button").disabled = !(call && call.state === "active");
  $("resume-button").disabled = !(call && call.state === "held");
  $("mute-button").disabled = !(call && (call.state === "active" || call.state === "held"));
  $("mute-button").setAttribute("aria-pressed", call && call.muted ? "true" : "false");
  // PCI: a recorded call's recording can be paused (silence in the file, the gap in its record).
  const recorded = !!(call && call.recording && (call.state === "active" || call.state === "held"));
  const paused = recorded && call.recording === "paused";
  $("recording-button").hidden = !recorded;
  $("recording-button").textContent = paused ? "Resume recording" : "Pause recording";
  $("recording-state").hidden = !recorded;
  $("recording-state").textContent = paused ? "Recording paused" : recorded ? "Recording" : "";
  $("recording-state").classList.toggle("paused", paused);
  $("camera-button").disabled = !(call && call.video && (call.state === "active" || call.state === "held"));
  $("camera-button").setAttribute("aria-pressed", agent.cameraOn ? "true" : "false");
  const up = call && (call.state === "active" || call.state === "held") && !isConsult(call);
  const { consult, held } = consultation();
  $("transfer-button").disabled = !up || !!consult;
  $("consult-button").disabled = !up || !!consult;
  $("complete-button").disabled = !(consult && held);
  $("cancel-consult-button").disabled = !(consult && held);
  for (const b of $("dtmf-pad").querySelectorAll("button")) b.disabled = !(call && call.state === "active");
  $("dial-button").disabled = liveCalls().some((c) => c.state !== "held");
  $("wrapup-card").hidden = !agent.wrapupCall;
  $("ready-button").disabled = agent.state === "ready";
  if (ringing) startRing(); else stopRing();
  syncSending();
}

// The microphone goes out only while a call rings or is up: a page waiting for a call sends
// no audio at all (replaceTrack costs no renegotiation and is undone at once when one comes).
function syncSending() {
  const pc = agent.pc;
  const mic = agent.mic;
  if (!pc || !mic || pc.signalingState !== "stable" || !pc.currentRemoteDescription) return;
  const transceiver = pc.getTransceivers().find((t) => t.receiver.track && t.receiver.track.kind === "audio");
  if (!transceiver) return;
  syncCamera(pc);
  const wanted = liveCalls().length > 0 ? mic.getAudioTracks()[0] || null : null;
  // sender.track changes only when a replaceTrack settles: compare with what was last asked
  // for, and let the replacements run one after the other with the latest wish.
  if (agent.sendingPc === pc && agent.sendingTrack === wanted) return;
  agent.sendingPc = pc;
  agent.sendingTrack = wanted;
  const sender = transceiver.sender;
  agent.sendChain = (agent.sendChain || Promise.resolve())
    .then(() => (agent.pc === pc ? sender.replaceTrack(agent.sendingTrack) : undefined))
    .catch(() => {});
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren(...agent.history.map((c) => {
    const li = document.createElement("li");
    const who = c.caller_name ? `${c.caller_number} (${c.caller_name})` : c.caller_number || "unknown";
    const kind = { inbound: "In", outbound: "Out", consult: "Consult", "consult-in": "Consulted by" }[c.direction] || "Call";
    li.textContent = `${kind}: ${who}${c.queue ? " via " + c.queue : ""} — ${c.reason || "ended"}${c.disposition ? ", " + c.disposition : ""}`;
    return li;
  }));
}

function tick() {
  $("state-timer").textContent = fmt((Date.now() - agent.stateSince) / 1000);
  const call = agent.current ? agent.calls.get(agent.current) : null;
  if (call) {
    const elapsed = (call.elapsed || 0) + (Date.now() - call.receivedAt) / 1000;
    $("call-timer").textContent = fmt(elapsed);
    if (call.state === "ringing") $("call-wait").textContent = fmt((call.wait_seconds || 0) + elapsed);
  }
}

// The pause menu is the server's list (login-ok, auth-ok, pause-reasons): an admin changes it.
function setPauseReasons(reasons) {
  const select = $("pause-reason");
  const current = select.value;
  const list = Array.isArray(reasons) && reasons.length ? reasons : ["break"];
  select.replaceChildren(...list.map((r) => new Option(r, r)));
  if (list.includes(current)) select.value = current;
}

function applySnapshot(message) {
  setPauseReasons(message.pause_reasons);
  agent.name = message.display_name || message.agent;
  agent.calls.clear();
  for (const c of message.calls || []) updateCall(c);
  agent.history = (message.history || []).slice().reverse();
  renderHistory();
  showApp();
  setState(message.state, message.reason, message.elapsed);
}

// --- media channel ---

async function microphone() {
  if (agent.mic) return agent.mic;
  const processing = agent.settings.audioProcessing;
  agent.mic = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing },
    video: false,
  });
  return agent.mic;
}

function closeMedia() {
  clearTimeout(agent.iceTimer);
  if (agent.pc) { agent.pc.onconnectionstatechange = null; agent.pc.oniceconnectionstatechange = null; agent.pc.close(); }
  agent.pc = null;
  agent.pcChannel = null;
  if (agent.mic) for (const t of agent.mic.getTracks()) t.stop();
  agent.mic = null;
  stopCamera();
  $("ice-state").textContent = "closed";
}

function waitGathering(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

// Open (or re-open: aiortc cannot restart ICE, so a restart is a fresh connection) the channel.
async function openChannel(restart = false) {
  let stream;
  try {
    stream = await microphone();
  } catch (e) {
    status(`Microphone unavailable: ${e.message}`);
    return;
  }
  clearTimeout(agent.iceTimer);
  if (agent.pc) { agent.pc.oniceconnectionstatechange = null; agent.pc.close(); }
  agent.pcChannel = null;
  const pc = new RTCPeerConnection({ iceServers: agent.iceServers || [] });
  agent.pc = pc;
  agent.negotiating = pc;
  $("ice-state").textContent = pc.iceConnectionState;
  for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
  // Video from a web caller is relayed into this channel when a call has it; the agent's camera
  // goes the other way only while the agent turns it on during such a call (syncSending).
  pc.addTransceiver("video", { direction: "sendrecv" });
  pc.ontrack = (event) => {
    if (event.track.kind === "video") {
      const video = $("remote-video");
      video.srcObject = new MediaStream([event.track]);
      // Shown only while frames arrive: the track is muted until the first packet.
      event.track.onunmute = () => { video.hidden = false; video.play().catch(() => {}); };
      event.track.onmute = () => { video.hidden = true; };
      return;
    }
    const el = $("remote-audio");
    el.srcObject = new MediaStream([event.track]);
    el.play().catch(() => {});
  };
  pc.oniceconnectionstatechange = () => {
    const s = pc.iceConnectionState;
    $("ice-state").textContent = s;
    clearTimeout(agent.iceTimer);
    if (s === "connected" || s === "completed") {
      if ($("banner").dataset.kind === "media") { banner(""); delete $("banner").dataset.kind; }
    } else if (s === "disconnected" || s === "failed") {
      $("banner").dataset.kind = "media";
      banner("Audio connection interrupted — reconnecting…");
      agent.iceTimer = setTimeout(() => { if (agent.pc === pc) openChannel(true); }, s === "failed" ? 0 : 3000);
    }
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc);
    if (agent.pc !== pc) return;
    const reply = await agent.signaling.request(restart ? "ice-restart" : "offer", { sdp: pc.localDescription.sdp });
    if (agent.pc === pc) {
      agent.pcChannel = reply.channel || null;
      await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
      syncSending();
    }
  } catch (e) {
    status(`Audio set-up failed: ${e.message}`);
  } finally {
    if (agent.negotiating === pc) agent.negotiating = null;
  }
}

// The camera is sent only while it is on and the current call is a web caller's with video.
function syncCamera(pc) {
  const call = agent.current ? agent.calls.get(agent.current) : null;
  const live = call && call.video && call.state === "active";
  if (!live && agent.cameraOn && !(call && call.video && call.state === "held")) stopCamera();
  const transceiver = pc.getTransceivers().find((t) => t.receiver.track && t.receiver.track.kind === "video");
  if (!transceiver) return;
  const wanted = live && agent.camera ? agent.camera.getVideoTracks()[0] || null : null;
  if (agent.videoPc === pc && agent.videoTrack === wanted) return;
  agent.videoPc = pc;
  agent.videoTrack = wanted;
  const sender = transceiver.sender;
  agent.videoChain = (agent.videoChain || Promise.resolve())
    .then(() => (agent.pc === pc ? sender.replaceTrack(agent.videoTrack) : undefined))
    .catch(() => {});
}

async function startCamera() {
  try {
    agent.camera = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (e) {
    status(`Camera unavailable: ${e.message}`);
    return;
  }
  agent.cameraOn = true;
  $("local-video").srcObject = agent.camera;
  $("local-video").hidden = false;
  render();
}

function stopCamera() {
  agent.cameraOn = false;
  if (agent.camera) for (const t of agent.camera.getTracks()) t.stop();
  agent.camera = null;
  $("local-video").srcObject = null;
  $("local-video").hidden = true;
}

// --- signalling ---

function onMessage(message) {
  switch (message.type) {
    case "login-ok":
      agent.iceServers = message.ice_servers || [];
      agent.token = message.token;
      sessionStorage.setItem(TOKEN_KEY, message.token);
      applySnapshot(message);
      openChannel(false);
      break;
    case "auth-ok":
      agent.iceServers = message.ice_servers || [];
      applySnapshot(message);
      banner("");
      if (!agent.pc) {
        openChannel(false);
      } else if (agent.negotiating === agent.pc) {
        // an offer is on its way (its answer comes from this server)
      } else if (message.channel && message.channel !== agent.pcChannel) {
        // This server holds another channel than the one the peer connection was negotiated
        // with (or its negotiation failed with the socket): that channel's node is gone (a
        // cluster node died, the balancer sent the page here). Its old path only looks
        // "connected" until ICE gives up on it: open the channel afresh now, as at login.
        openChannel(false);
      } else if (["failed", "closed", "disconnected"].includes(agent.pc.iceConnectionState)) {
        openChannel(true);
      }
      break;
    case "state":
      setState(message.state, message.reason, message.elapsed);
      break;
    case "pause-reasons":
      setPauseReasons(message.reasons);
      break;
    case "call-dispositions":
      setCallDispositions(message.call_id, message.dispositions);
      break;
    case "call-incoming":
      updateCall(message.call);
      notifyIncoming(message.call);
      // A callback (direction "outbound") dials a number a caller typed: an agent starts it,
      // never the auto-answer.
      if (agent.settings.autoAnswer && message.call.direction !== "outbound") {
        beep();
        setTimeout(() => command("answer", { call_id: message.call.call_id }), 600);
      }
      break;
    case "call-answered": case "call-held": case "call-resumed": case "call-muted": case "call-recording":
    case "call-dialing": case "call-ended":
      updateCall(message.call);
      break;
    case "dtmf":
      $("dtmf-in").textContent = `Caller pressed ${message.digit}`;
      break;
    case "notice":
      status(message.text);
      break;
    case "session-ended":
      endSession(message.reason);
      break;
    case "error":
      if (message.code === "session-invalid") endSession("invalid");
      else if (message.ref === undefined) status(`Error: ${message.reason}`);
      break;
    default:
      break;
  }
}

const END_MESSAGES = {
  "taken-over": "Your session was taken over by a login elsewhere.",
  replaced: "This page was replaced by another one using the same session.",
  expired: "Your session expired. Please log in again.",
  logout: "You are logged out.",
  invalid: "Your session has ended. Please log in again.",
  shutdown: "The server is restarting. Please log in again.",
  "forced-logout": "A supervisor logged you out.",
};

function endSession(reason) {
  agent.ended = true;
  agent.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (agent.signaling) agent.signaling.stop();
  agent.signaling = null;
  banner("");
  setState("logged-out", null);
  agent.calls.clear();
  agent.current = null;
  agent.wrapupCall = null;
  showLogin(END_MESSAGES[reason] || `Session ended (${reason}).`);
}

function connect(onOpen) {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const signaling = new Signaling(url);
  agent.signaling = signaling;
  agent.ended = false;
  let first = true;
  signaling.addEventListener("message", (e) => onMessage(e.detail));
  signaling.addEventListener("open", () => {
    if (first) { first = false; onOpen(); }
    else if (agent.token) signaling.request("auth", { token: agent.token }).catch(() => {});
  });
  signaling.addEventListener("close", () => {
    if (!agent.ended && agent.token) banner("Connection to the server lost — reconnecting…");
  });
  signaling.start();
}

async function command(type, fields = {}) {
  if (!agent.signaling) return null;
  try {
    return await agent.signaling.request(type, fields);
  } catch (e) {
    status(`${type}: ${e.message}`);
    return null;
  }
}

function notifyIncoming(call) {
  if (!("Notification" in window) || Notification.permission !== "granted" || !document.hidden) return;
  try {
    const title = call.direction === "consult-in" ? `Consultation from ${call.caller_name || call.caller_number}` : "Incoming call";
    const body = call.direction === "consult-in" ? `About caller ${call.consult_for}` : `${call.caller_number} ${call.caller_name || ""} — ${call.queue || ""}`;
    const n = new Notification(title, { body, tag: call.call_id });
    n.onclick = () => { window.focus(); n.close(); };
  } catch (e) { /* ignore */ }
}

// --- controls ---

function currentId() { return agent.current; }

function bind() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("login-button").disabled = true;
    $("login-message").textContent = "";
    const username = $("username").value.trim();
    const password = $("password").value;
    const send = () => agent.signaling.request("login", { username, password }).catch((e) => {
      $("login-message").textContent = e.code === "locked-out" ? "Too many failed attempts. Try again later." : "Wrong username or password.";
      $("login-button").disabled = false;
    });
    if (agent.signaling && agent.signaling.connected) send();
    else { if (agent.signaling) agent.signaling.stop(); connect(send); }
  });
  $("ready-button").addEventListener("click", () => command("state", { state: "ready" }));
  $("pause-button").addEventListener("click", () => command("state", { state: "paused", reason: $("pause-reason").value }));
  $("logout-button").addEventListener("click", async () => {
    await command("logout");
    endSession("logout");
  });
  $("answer-button").addEventListener("click", () => currentId() && command("answer", { call_id: currentId() }));
  $("hangup-button").addEventListener("click", () => currentId() && command("hangup", { call_id: currentId() }));
  $("hold-button").addEventListener("click", () => currentId() && command("hold", { call_id: currentId() }));
  $("resume-button").addEventListener("click", () => currentId() && command("resume", { call_id: currentId() }));
  $("mute-button").addEventListener("click", () => {
    const call = agent.calls.get(currentId());
    if (call) command("mute", { call_id: call.call_id, muted: !call.muted });
  });
  $("recording-button").addEventListener("click", () => {
    const call = agent.calls.get(currentId());
    if (call && call.recording) command("recording", { call_id: call.call_id, paused: call.recording !== "paused" });
  });
  $("camera-button").addEventListener("click", () => {
    if (agent.cameraOn) { stopCamera(); render(); } else startCamera();
  });
  $("dtmf-pad").addEventListener("click", (event) => {
    const digit = event.target.dataset && event.target.dataset.digit;
    if (digit && currentId()) command("dtmf", { call_id: currentId(), digit });
  });
  const heldOrCurrent = () => {
    const { consult, held } = consultation();
    return consult ? held?.call_id : currentId();
  };
  $("transfer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (currentId()) command("transfer-blind", { call_id: currentId(), to: $("transfer-to").value.trim() });
  });
  $("consult-button").addEventListener("click", () => {
    const to = $("transfer-to").value.trim();
    if (!to) { $("transfer-to").reportValidity(); return; }
    if (currentId()) command("transfer-consult", { call_id: currentId(), to });
  });
  $("complete-button").addEventListener("click", () => heldOrCurrent() && command("transfer-complete", { call_id: heldOrCurrent() }));
  $("cancel-consult-button").addEventListener("click", () => heldOrCurrent() && command("transfer-cancel", { call_id: heldOrCurrent() }));
  $("dial-form").addEventListener("submit", (event) => {
    event.preventDefault();
    command("dial", { number: $("dial-number").value.trim() });
  });
  $("wrapup-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const callId = agent.wrapupCall;
    const disposition = $("disposition").value;
    const ok = await command("disposition", { call_id: callId, disposition, notes: $("notes").value });
    if (ok) {
      const entry = agent.history.find((c) => c.call_id === callId);
      if (entry) entry.disposition = disposition;
      agent.wrapupCall = null;
      renderHistory();
      render();
    }
  });
  const auto = $("auto-answer"), processing = $("audio-processing");
  auto.checked = agent.settings.autoAnswer;
  processing.checked = agent.settings.audioProcessing;
  const save = () => {
    agent.settings.autoAnswer = auto.checked;
    agent.settings.audioProcessing = processing.checked;
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(agent.settings));
  };
  auto.addEventListener("change", save);
  processing.addEventListener("change", () => {
    save();
    if (agent.mic && agent.pc) {
      for (const t of agent.mic.getTracks()) t.stop();
      agent.mic = null;
      openChannel(true);
    }
  });
  $("notify-button").addEventListener("click", () => {
    if ("Notification" in window) Notification.requestPermission().then((p) => status(`Notifications: ${p}`));
  });
  document.addEventListener("keydown", (event) => {
    if (!event.altKey || event.ctrlKey || event.metaKey) return;
    const key = event.key.toLowerCase();
    const call = agent.calls.get(currentId());
    if (!call) return;
    if (key === "a" && call.state === "ringing") { event.preventDefault(); command("answer", { call_id: call.call_id }); }
    else if (key === "h") { event.preventDefault(); command("hangup", { call_id: call.call_id }); }
    else if (key === "l") {
      event.preventDefault();
      if (call.state === "active") command("hold", { call_id: call.call_id });
      else if (call.state === "held") command("resume", { call_id: call.call_id });
    }
  });
  setInterval(tick, 500);
}

bind();
render();
if (agent.token) {
  connect(() => agent.signaling.request("auth", { token: agent.token }).catch(() => endSession("invalid")));
} else {
  showLogin("");
}
