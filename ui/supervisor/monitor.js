// Monitoring from the supervisor's page: one WebRTC channel kept while the page is open (like an
// agent's), put on the call selected on the wallboard ("oml:select-call") to listen, whisper or
// barge, and taken off with Stop; switching modes or calls never renegotiates it. The socket
// authenticates with the API session token in-protocol (docs/webrtc-signaling.md, "Supervisors"):
// a WebSocket carries no Authorization header and tokens never go in URLs.
import { session } from "./session.js";
import { Signaling } from "../agent/connection.js";

const SETTINGS_KEY = "omlmedia.supervisor.settings";
const MODES = [
  ["listen", "Listen", "Hear the caller and the agent; nobody hears you"],
  ["whisper", "Whisper", "Coach the agent: only the agent hears you"],
  ["barge", "Barge", "Join the call: the caller and the agent hear you"],
];
const MODE_LABELS = { listen: "Listening", whisper: "Whispering to the agent", barge: "In the call (barge)" };
const REASONS = {
  "call-ended": "The call ended.",
  "call-held": "The agent put the call on hold for another call (a consultation): monitoring stopped.",
  transferred: "The call was transferred away from the agent: monitoring stopped.",
  stopped: "Monitoring stopped.",
  closed: "Monitoring stopped.",
};

const LOST = "The connection to the server closed: reconnecting…";
const SESSION_UNKNOWN = "The server now serving this page does not know your session: sign out "
  + "and log in again to monitor calls.";

const monitor = {
  signaling: null,
  pc: null,
  mic: null,
  ready: false,        // the channel is up (ICE connected)
  selected: null,      // {call_id, agent, queue, caller} from the wallboard
  current: null,       // {call_id, agent, mode, queue, caller} from the server
  busy: false,
  lost: null,          // since the socket closed: what stopped with it ("" if nothing), till back
  settings: { audioProcessing: true, ...JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") },
};
window.omlMonitor = monitor; // inspection hook for tests and support

const el = {};

function make(tag, attributes = {}, text = "") {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text) element.textContent = text;
  return element;
}

function build(aside) {
  aside.replaceChildren();
  const title = make("h2", { id: "monitor-title" }, "Monitoring");
  el.call = make("p", { id: "monitor-call", "aria-live": "polite" }, "Select a call on the wallboard.");
  const modeLine = make("p", {}, "Mode: ");
  el.mode = make("output", { id: "monitor-mode", "aria-label": "Monitoring mode" }, "Not monitoring");
  modeLine.append(el.mode);
  const group = make("div", { role: "group", "aria-labelledby": "monitor-title", class: "monitor-buttons" });
  el.buttons = {};
  for (const [mode, label, hint] of MODES) {
    const button = make("button", { type: "button", id: `monitor-${mode}`, title: hint, "aria-pressed": "false" }, label);
    button.addEventListener("click", () => start(mode));
    el.buttons[mode] = button;
    group.append(button);
  }
  el.stop = make("button", { type: "button", id: "monitor-stop", class: "bad" }, "Stop");
  el.stop.addEventListener("click", stop);
  group.append(el.stop);
  el.status = make("p", { id: "monitor-status", role: "status", "aria-live": "polite", class: "muted-text" });
  el.channel = make("p", { class: "muted-text" }, "Audio channel: ");
  el.ice = make("output", { id: "monitor-channel", "aria-label": "Monitoring audio channel" }, "connecting");
  el.channel.append(el.ice);
  el.audio = make("audio", { id: "monitor-audio", autoplay: "" });
  aside.append(title, el.call, modeLine, group, el.status, el.channel, el.audio);
  render();
}

function describe(call) {
  if (!call) return "Select a call on the wallboard.";
  const parts = [`Caller ${call.caller || "unknown"}`];
  if (call.agent) parts.push(`agent ${call.agent}`);
  if (call.queue) parts.push(`queue ${call.queue}`);
  return parts.join(", ");
}

function render() {
  if (!el.mode) return;
  const current = monitor.current;
  const shown = current && (!monitor.selected || monitor.selected.call_id === current.call_id)
    ? current : monitor.selected;
  el.call.textContent = describe(shown);
  el.mode.textContent = current ? `${MODE_LABELS[current.mode]} (${describe(current)})` : "Not monitoring";
  const canStart = monitor.ready && !monitor.busy && (monitor.selected || current);
  for (const [mode] of MODES) {
    const button = el.buttons[mode];
    const active = Boolean(current && current.mode === mode
      && (!monitor.selected || monitor.selected.call_id === current.call_id));
    button.setAttribute("aria-pressed", String(active));
    button.disabled = !canStart;
  }
  el.stop.disabled = !current || monitor.busy;
  if (monitor.mic) {
    // The microphone only sends while someone may hear it (the server mixes nobody in listen).
    const talking = Boolean(current && current.mode !== "listen");
    for (const track of monitor.mic.getAudioTracks()) track.enabled = talking;
  }
}

function status(text) {
  if (el.status) el.status.textContent = text || "";
}

async function start(mode) {
  const call = monitor.selected || monitor.current;
  if (!call || !monitor.signaling) return;
  monitor.busy = true;
  render();
  try {
    await monitor.signaling.request("monitor", { call_id: call.call_id, mode });
    status("");
  } catch (error) {
    status(refusal(error));
  } finally {
    monitor.busy = false;
    render();
  }
}

async function stop() {
  if (!monitor.signaling) return;
  monitor.busy = true;
  render();
  try {
    await monitor.signaling.request("monitor-stop");
  } catch (error) {
    status(refusal(error));
  } finally {
    monitor.busy = false;
    render();
  }
}

function refusal(error) {
  if (error.code === "disconnected") return monitor.lost || LOST;
  const texts = {
    forbidden: "This call is outside your campaigns and queues.",
    "unknown-call": "That call is not in progress any more.",
    monitored: "Another supervisor is monitoring this call.",
    "no-channel": "The audio channel is not ready yet.",
  };
  return texts[error.code] || `Refused: ${error.message}`;
}

function onMessage(message) {
  if (message.type === "monitor-state") {
    monitor.current = message.call_id ? {
      call_id: message.call_id, agent: message.agent, mode: message.mode,
      queue: message.queue, caller: message.caller,
    } : null;
    if (!message.call_id && REASONS[message.reason]) status(REASONS[message.reason]);
    render();
  } else if (message.type === "session-ended") {
    status("Your session ended: log in again to monitor calls.");
    closeChannel();
    monitor.signaling.stop();
    monitor.signaling = null;
    monitor.current = null;
    render();
  }
}

function closeChannel() {
  monitor.ready = false;
  if (monitor.pc) {
    monitor.pc.close();
    monitor.pc = null;
  }
  if (el.ice) el.ice.textContent = "closed";
}

async function microphone() {
  if (monitor.mic) return monitor.mic;
  const processing = monitor.settings.audioProcessing !== false;
  monitor.mic = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing },
  });
  return monitor.mic;
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000); // the server takes what was gathered so far
  });
}

// Log the socket in and (re)build the channel: at every (re)connection of the socket.
async function connect(token) {
  const signaling = monitor.signaling;
  try {
    const ok = await signaling.request("supervisor-auth", { token });
    closeChannel();
    const pc = new RTCPeerConnection({ iceServers: ok.ice_servers || [] });
    monitor.pc = pc;
    const mic = await microphone();
    for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
    pc.addEventListener("track", (event) => {
      el.audio.srcObject = event.streams[0] || new MediaStream([event.track]);
    });
    pc.addEventListener("iceconnectionstatechange", () => {
      if (monitor.pc !== pc) return;
      el.ice.textContent = pc.iceConnectionState;
      monitor.ready = pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed";
      if (monitor.ready && monitor.lost !== null) {
        // Back (on this node or, behind a balancer, another): say what was lost, once.
        status(monitor.lost
          ? `${monitor.lost.replace(" Reconnecting…", "")} Reconnected: select the call and a mode to monitor it again.`
          : "");
        monitor.lost = null;
      }
      render();
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const answer = await signaling.request("supervisor-offer", { sdp: pc.localDescription.sdp });
    if (monitor.pc !== pc) return;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    render();
  } catch (error) {
    // A socket closed meanwhile: the close said so and the reconnection does this again.
    if (error.code === "session-invalid") {
      // Reconnected to a node that does not know the session (nodes without a shared database
      // each keep their own): say so rather than wait for a channel that will not come.
      status(SESSION_UNKNOWN);
      if (el.ice) el.ice.textContent = "closed";
      monitor.signaling.stop();
      monitor.signaling = null;
      monitor.current = null;
      render();
    } else if (error.code !== "disconnected") {
      status(`Monitoring is unavailable: ${error.message}`);
    }
  }
}

async function main() {
  const aside = document.getElementById("monitor");
  if (!aside) return;
  document.addEventListener("oml:select-call", (event) => {
    const detail = event.detail || {};
    if (!detail.call_id) return;
    monitor.selected = {
      call_id: String(detail.call_id), agent: detail.agent || "", queue: detail.queue || "",
      caller: detail.caller || "",
    };
    status("");
    render();
  });
  const { token } = await session.ready;
  build(aside);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const signaling = new Signaling(`${scheme}//${location.host}/ws`);
  monitor.signaling = signaling;
  signaling.addEventListener("message", (event) => onMessage(event.detail));
  signaling.addEventListener("open", () => connect(token));
  signaling.addEventListener("close", () => {
    // The server stops monitoring when the socket goes (a node stopping closes it with 1001:
    // a call it carried is gone with it); the reconnection starts afresh, at once after a
    // 1001 (`Signaling`), possibly on another node. The page says what stopped, not a hang.
    const current = monitor.current;
    if (current) {
      monitor.lost = `Monitoring stopped: the connection to the server closed while ${MODE_LABELS[current.mode].toLowerCase()} (${describe(current)}). Reconnecting…`;
    } else if (monitor.lost === null) {
      monitor.lost = "";
    }
    status(monitor.lost || LOST);
    monitor.current = null;
    closeChannel();
    if (el.ice) el.ice.textContent = "reconnecting";
    render();
  });
  signaling.start();
}

main();
