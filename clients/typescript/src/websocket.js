// The protocol over WebSocket (`GET /ws` on vigil's HTTP port), for browsers: the same frames,
// one JSON object per text message. Uses the platform's `WebSocket` (browsers; Node 22, or
// Node 20 with --experimental-websocket).

import { VigilError } from "./errors.js";
import { Inbox } from "./inbox.js";
import { MonitorCore } from "./monitor.js";

export class WebSocketConnection {
  constructor(ws) {
    this.ws = ws;
    this.inbox = new Inbox();
    this.welcome = null;
    ws.onmessage = (m) => {
      let frame;
      try {
        frame = JSON.parse(m.data);
      } catch {
        return this.#finish(new VigilError("bad_frame", `not JSON: ${String(m.data).slice(0, 80)}`));
      }
      if (frame === null || typeof frame !== "object" || Array.isArray(frame)) {
        return this.#finish(new VigilError("bad_frame", "not a JSON object"));
      }
      this.inbox.push(frame);
    };
    ws.onclose = () => this.#finish(null);
    ws.onerror = () => this.#finish(new Error("the WebSocket failed"));
  }

  /** Opens `url` (`ws://host:port/ws`) and says hello as a monitor (or admin, with its token). */
  static async open(url, { token, role = "monitor", client = "vigil-fleet-js/0.1", timeout = 10000 } = {}) {
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no connection within ${timeout} ms`)), timeout);
      ws.onopen = () => { clearTimeout(timer); resolve(); };
      ws.onerror = () => { clearTimeout(timer); reject(new Error(`cannot connect to ${url}`)); };
    });
    const conn = new WebSocketConnection(ws);
    const hello = { type: "hello", protocol: 1, role, client };
    if (token !== undefined) hello.token = token;
    conn.send(hello);
    const first = await conn.recv(timeout);
    if (first === null) throw new VigilError("closed", "the server closed the connection during the handshake");
    if (first.type === "error") {
      conn.close();
      throw new VigilError(first.code, first.message);
    }
    conn.welcome = first;
    return conn;
  }

  #finish(error) {
    if (this.inbox.end(error)) {
      try { this.ws.close(); } catch { /* closed already */ }
    }
  }

  send(frame) {
    if (!this.inbox.ended) this.ws.send(JSON.stringify(frame));
  }

  recv(timeout) {
    return this.inbox.take(timeout);
  }

  close() {
    this.#finish(null);
  }
}

/** Watches the fleet over WebSocket, in a browser: a snapshot, then every event once, across
 * lost connections (the same loop as the TCP monitor). */
export class WebSocketMonitor extends MonitorCore {
  constructor(urls, options = {}) {
    super((url, opts) => WebSocketConnection.open(url, opts), urls, options);
  }
}
