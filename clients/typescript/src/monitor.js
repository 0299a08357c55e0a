// Watching the fleet: Monitor, a subscription that survives lost connections. It remembers
// the last seq it yielded; after a lost connection or `lagged` it subscribes `since` that seq
// (nothing missed, nothing twice); after `resync_required` it starts again from a snapshot.

import { VigilError } from "./errors.js";
import { backoff } from "./backoff.js";

const FATAL = new Set(["unauthorized", "unsupported_protocol", "forbidden", "invalid_field", "missing_field"]);

/** The monitor's loop over any transport: `open(address, options)` resolves with a connection
 * after the handshake as a monitor (`send`, `recv`, `close`). */
export class MonitorCore {
  constructor(open, addresses, { topics, kinds = [], ids = [], statuses = [], since, backoffMinMs = 100, backoffMaxMs = 30000, ...options } = {}) {
    this.open = open;
    this.addresses = typeof addresses === "string" ? [addresses] : [...addresses];
    this.topics = topics;
    this.filter = { kinds, ids, statuses };
    this.lastSeq = since ?? null;
    this.backoffMs = [backoffMinMs, backoffMaxMs];
    this.options = options;
    this.conn = null;
    this.closed = false;
    this.ref = 0;
  }

  close() {
    this.closed = true;
    if (this.conn) this.conn.close();
  }

  /** Closes the connection as a network failure would (the monitor connects again). */
  dropConnection() {
    if (this.conn) this.conn.close();
  }

  #subscribe(conn) {
    this.ref++;
    const f = { type: "subscribe", filter: this.filter, ref: this.ref };
    if (this.topics) f.topics = this.topics;
    if (this.lastSeq === null) f.snapshot = true;
    else f.since = this.lastSeq;
    conn.send(f);
  }

  async *[Symbol.asyncIterator]() {
    let attempt = 0, n = 0;
    while (!this.closed) {
      let error = "";
      let conn;
      try {
        conn = await this.open(this.addresses[n++ % this.addresses.length], this.options);
      } catch (e) {
        if (e instanceof VigilError && FATAL.has(e.code)) throw e;
        error = String(e.message ?? e);
      }
      if (conn) {
        this.conn = conn;
        try {
          this.#subscribe(conn);
          for (;;) {
            const f = await conn.recv();
            if (f === null) { error = "the server closed the connection"; break; }
            if (f.type === "ack" && f.ref === this.ref) attempt = 0;
            else if (f.type === "snapshot") {
              this.lastSeq = f.seq;
              yield { type: "snapshot", seq: f.seq, agents: f.agents ?? [], jobs: f.jobs ?? [], stats: f.stats ?? {} };
            } else if (f.type === "event") {
              if (this.lastSeq !== null && f.seq <= this.lastSeq) continue; // yielded already
              this.lastSeq = f.seq;
              yield { type: "event", seq: f.seq, frame: f };
            } else if (f.type === "stats") yield { type: "stats", frame: f };
            else if (f.type === "lagged") {
              if (this.lastSeq === null) this.lastSeq = f.last_seq ?? 0;
              this.#subscribe(conn);
            } else if (f.type === "resync_required") {
              this.lastSeq = null;
              this.#subscribe(conn);
            } else if (f.type === "error" && f.ref === this.ref) {
              if (FATAL.has(f.code)) throw new VigilError(f.code, f.message);
              error = `subscribe refused: ${f.code}: ${f.message}`;
              break;
            }
          }
        } catch (e) {
          if (e instanceof VigilError && FATAL.has(e.code)) throw e;
          error = String(e.message ?? e);
        } finally {
          this.conn = null;
          conn.close();
        }
      }
      if (this.closed) return;
      const delay = backoff(attempt, this.backoffMs[0], this.backoffMs[1]);
      attempt++;
      yield { type: "disconnected", error, retryInMs: delay };
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

