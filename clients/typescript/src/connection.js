// One connection to a vigil server: TCP or TLS, one JSON object per line, after the
// hello/welcome handshake (protocol v1, docs/protocol.md).

import net from "node:net";
import tls from "node:tls";
import { readFileSync } from "node:fs";
import { VigilError } from "./errors.js";
import { Inbox } from "./inbox.js";

export { VigilError };

export const PROTOCOL = 1;
const MAX_FRAME = 16 * 1024 * 1024;

function splitAddress(address) {
  const i = address.lastIndexOf(":");
  if (i < 0) throw new Error(`not host:port: ${address}`);
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(address.slice(i + 1)) };
}

/** A connection after the handshake: `send` frames, `recv` the server's. */
export class Connection {
  constructor(socket, address) {
    this.socket = socket;
    this.address = address;
    this.welcome = null;
    this.buffer = "";
    this.inbox = new Inbox();
    socket.setEncoding("utf8");
    socket.on("data", (chunk) => this.#take(chunk));
    socket.on("end", () => this.#finish(null));
    socket.on("close", () => this.#finish(null));
    socket.on("error", (e) => this.#finish(e));
  }

  /** Connects to `address` and says hello as `role`; rejects with VigilError on refusal. */
  static async open(address, role, { token, tls: tlsOptions, client = "vigil-fleet-js/0.1", timeout = 10000 } = {}) {
    const { host, port } = splitAddress(address);
    const socket = await new Promise((resolve, reject) => {
      const onError = (e) => reject(e);
      const s = tlsOptions
        ? tls.connect({
            host,
            port,
            servername: tlsOptions.serverName ?? host,
            ca: tlsOptions.caFile ? readFileSync(tlsOptions.caFile) : undefined,
          }, () => { s.off("error", onError); resolve(s); })
        : net.connect({ host, port }, () => { s.off("error", onError); resolve(s); });
      s.once("error", onError);
      s.setTimeout(timeout, () => s.destroy(new Error(`no connection within ${timeout} ms`)));
    });
    socket.setTimeout(0);
    socket.setNoDelay(true);
    const conn = new Connection(socket, address);
    const hello = { type: "hello", protocol: PROTOCOL, role, client };
    if (token !== undefined) hello.token = token;
    conn.send(hello);
    let first;
    try {
      first = await conn.recv(timeout);
    } catch (e) {
      conn.close();
      throw e;
    }
    if (first === null) throw new VigilError("closed", "the server closed the connection during the handshake");
    if (first.type === "error") {
      conn.close();
      throw new VigilError(first.code, first.message);
    }
    if (first.type !== "welcome") {
      conn.close();
      throw new VigilError("bad_frame", `expected welcome, got ${JSON.stringify(first)}`);
    }
    conn.welcome = first;
    return conn;
  }

  #take(chunk) {
    this.buffer += chunk;
    if (this.buffer.length > MAX_FRAME && !this.buffer.includes("\n")) {
      this.#finish(new VigilError("frame_too_large", `a frame over ${MAX_FRAME} bytes`));
      return;
    }
    let i;
    while ((i = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, i).trim();
      this.buffer = this.buffer.slice(i + 1);
      if (!line) continue;
      let frame;
      try {
        frame = JSON.parse(line);
      } catch {
        this.#finish(new VigilError("bad_frame", `not JSON: ${line.slice(0, 80)}`));
        return;
      }
      if (frame === null || typeof frame !== "object" || Array.isArray(frame)) {
        this.#finish(new VigilError("bad_frame", `not a JSON object: ${line.slice(0, 80)}`));
        return;
      }
      this.inbox.push(frame);
    }
  }

  #finish(error) {
    if (!error && this.buffer.trim()) error = new VigilError("bad_frame", "the connection closed in the middle of a frame");
    if (this.inbox.end(error)) this.socket.destroy();
  }

  /** Sends one frame (one line). */
  send(frame) {
    if (!this.inbox.ended) this.socket.write(JSON.stringify(frame) + "\n");
  }

  /** The next frame; null when the connection ended; rejects on a bad frame or after `timeout` ms. */
  recv(timeout) {
    return this.inbox.take(timeout);
  }

  close() {
    this.#finish(null);
  }
}
