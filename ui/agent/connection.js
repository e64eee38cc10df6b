// The signalling socket (docs/webrtc-signaling.md): JSON messages {"v":1,"type":...,"id":...},
// reconnection with exponential backoff, replies matched by "ref".
export class Signaling extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.stopped = true;
    this.attempt = 0;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    let opened = null;
    ws.onopen = () => {
      opened = Date.now();
      this.attempt = 0;
      this.dispatchEvent(new Event("open"));
    };
    ws.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message.ref !== undefined && this.pending.has(message.ref)) {
        const { resolve, reject } = this.pending.get(message.ref);
        this.pending.delete(message.ref);
        if (message.type === "error") reject(Object.assign(new Error(message.reason), { code: message.code }));
        else resolve(message);
      }
      this.dispatchEvent(new CustomEvent("message", { detail: message }));
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const { reject } of this.pending.values()) reject(Object.assign(new Error("connection lost"), { code: "disconnected" }));
      this.pending.clear();
      this.dispatchEvent(new Event("close"));
      if (!this.stopped) {
        // 1001 "going away" on a socket that served: the server stops and the balancer has
        // another node; go at once (spread over 250 ms so a node's pages do not all arrive in
        // the same instant). A socket refused at once with 1001 backs off as usual.
        const served = opened !== null && Date.now() - opened > 200;
        const delay = event.code === 1001 && served
          ? Math.random() * 250
          : Math.min(10000, 500 * 2 ** this.attempt) * (0.8 + Math.random() * 0.4);
        this.attempt += 1;
        this.timer = setTimeout(() => this.open(), delay);
      }
    };
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  request(type, fields = {}) {
    if (!this.connected) return Promise.reject(Object.assign(new Error("not connected"), { code: "disconnected" }));
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ v: 1, type, id, ...fields }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
  }

  // For tests and the reconnect path: drop the socket as a network failure would.
  drop() {
    if (this.ws) this.ws.close(4000, "dropped");
  }
}
