// Ring and beep with WebAudio: no media files, no network.
let context = null;

function audio() {
  if (!context) context = new AudioContext();
  if (context.state === "suspended") context.resume().catch(() => {});
  return context;
}

function tone(frequencies, start, duration, gain = 0.12) {
  const ctx = audio();
  const level = ctx.createGain();
  level.gain.setValueAtTime(0, start);
  level.gain.linearRampToValueAtTime(gain, start + 0.02);
  level.gain.setValueAtTime(gain, start + duration - 0.02);
  level.gain.linearRampToValueAtTime(0, start + duration);
  level.connect(ctx.destination);
  for (const f of frequencies) {
    const osc = ctx.createOscillator();
    osc.frequency.value = f;
    osc.connect(level);
    osc.start(start);
    osc.stop(start + duration);
  }
}

let ringTimer = null;

export function startRing() {
  if (ringTimer) return;
  const ring = () => {
    try {
      const now = audio().currentTime;
      tone([440, 480], now, 1.0);
    } catch (e) { /* no audio output: the visual alert remains */ }
  };
  ring();
  ringTimer = setInterval(ring, 3000);
}

export function stopRing() {
  if (ringTimer) clearInterval(ringTimer);
  ringTimer = null;
}

export function beep() {
  try {
    tone([880], audio().currentTime, 0.15, 0.15);
  } catch (e) { /* ignore */ }
}
