// The web caller page: a visitor calls the target in the URL (/call/<target>), no login.
// Protocol: docs/webrtc-signaling.md, "Web callers".
import { Signaling } from "/agent/connection.js";

const $ = (id) => document.getElementById(id);
const LABELS = {
  idle: "Ready to call", connecting: "Connecting…", ringing: "Ringing…", answered: "Connected",
  ended: "Call ended", failed: "Call failed",
};
const SETTINGS_KEY = "omlmedia.call.settings";
const settings = { audioProcessing: true, ...JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") };
const target = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

const call = { signaling: null, pc: null, stream: null, callId: null, state: "idle", since: 0, muted: false };
window.omlCall = call; // inspection hook for tests and support

function setState(state, reason = "") {
  call.state = state;
  const out = $("call-state");
  out.dataset.state = state;
  out.textContent = LABELS[state] + (reason && state === "ended" ? ` (${reason})` : "");
  if (state === "answered") call.since = Date.now();
  const live = ["connecting", "ringing", "answered"].includes(state);
  $("call-button").disabled = live;
  $("hangup-button").disabled = !live;
  $("mute-button").disabled = !live;
  for (const b of document.querySelectorAll("#dtmf-pad button")) b.disabled = state !== "answered";
  if (!live) cleanup();
}

function cleanup() {
  if (call.pc) call.pc.close();
  call.pc = null;
  if (call.stream) for (const t of call.stream.getTracks()) t.stop();
  call.stream = null;
  call.callId = null;
  call.muted = false;
  $("mute-button").setAttribute("aria-pressed", "false");
  $("remote-video").hidden = true;
  $("local-video").hidden = true;
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

function connected() {
  if (call.signaling && call.signaling.connected) return Promise.resolve();
  return new Promise((resolve) => {
    if (!call.signaling) {
      call.signaling = new Signaling(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
      call.signaling.addEventListener("message", (e) => onMessage(e.detail));
      call.signaling.addEventListener("close", () => {
        if (["connecting", "ringing", "answered"].includes(call.state)) setState("ended", "connection lost");
      });
      call.signaling.start();
    }
    call.signaling.addEventListener("open", () => resolve(), { once: true });
  });
}

async function startCall(event) {
  event.preventDefault();
  $("message").textContent = "";
  setState("connecting");
  try {
    await connected();
    const ready = await call.signaling.request("web-call-prepare", { target });
    const processing = settings.audioProcessing;
    const video = $("camera").checked;
    call.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing },
      video,
    });
    if (video) { $("local-video").srcObject = call.stream; $("local-video").hidden = false; }
    const pc = new RTCPeerConnection({ iceServers: ready.ice_servers || [] });
    call.pc = pc;
    for (const track of call.stream.getTracks()) pc.addTrack(track, call.stream);
    pc.ontrack = (e) => {
      if (e.track.kind === "audio") {
        $("remote-audio").srcObject = new MediaStream([e.track]);
        $("remote-audio").play().catch(() => {});
      } else {
        const el = $("remote-video");
        el.srcObject = new MediaStream([e.track]);
        e.track.onunmute = () => { el.hidden = false; el.play().catch(() => {}); };
        e.track.onmute = () => { el.hidden = true; };
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc);
    if (call.pc !== pc) return;
    const reply = await call.signaling.request("web-call", {
      target, sdp: pc.localDescription.sdp, name: $("caller-name").value.trim().slice(0, 64),
    });
    call.callId = reply.call_id;
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
  } catch (e) {
    $("message").textContent = e.code === "rate-limited" || e.code === "too-many-calls"
      ? "Too many calls right now. Please try again in a minute."
      : `The call could not be placed: ${e.message}`;
    setState("failed");
  }
}

function onMessage(message) {
  if (message.type === "web-call-state" && message.call_id === call.callId) {
    setState(message.state, message.reason);
  } else if (message.type === "web-call-state" && call.callId === null && message.state !== "ended") {
    // The state can arrive before the answer's promise resolved.
    call.callId = message.call_id;
    setState(message.state);
  }
}

function bind() {
  $("target").textContent = target;
  $("call-form").addEventListener("submit", startCall);
  $("hangup-button").addEventListener("click", async () => {
    const id = call.callId;
    if (id && call.signaling) {
      try { await call.signaling.request("web-call-hangup", { call_id: id }); } catch (e) { /* ended anyway */ }
    }
    setState("ended", "you hung up");
  });
  $("mute-button").addEventListener("click", () => {
    call.muted = !call.muted;
    if (call.stream) for (const t of call.stream.getAudioTracks()) t.enabled = !call.muted;
    $("mute-button").setAttribute("aria-pressed", String(call.muted));
  });
  for (const b of document.querySelectorAll("#dtmf-pad button")) {
    b.addEventListener("click", () => {
      if (call.callId) call.signaling.request("web-call-dtmf", { call_id: call.callId, digit: b.dataset.digit }).catch(() => {});
    });
  }
  setInterval(() => {
    const t = $("call-timer");
    if (call.state !== "answered") { t.textContent = ""; return; }
    const s = Math.floor((Date.now() - call.since) / 1000);
    t.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }, 1000);
  setState("idle");
}

bind();
