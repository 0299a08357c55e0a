// Agents kept registered and beating on one connection: AgentClient. The same rules as the
// Python client (docs/clients.md): beats every 0.75 x interval with +-10% jitter, the first
// within a quarter period; reconnection with exponential backoff, full jitter and takeover;
// reports coalesced as the server does; typed events.

import { Connection, VigilError } from "./connection.js";
import { Inbox } from "./inbox.js";
import { backoff } from "./backoff.js";

export const PROGRESS_STEP = 0.01;
const FATAL = new Set(["unauthorized", "unsupported_protocol", "forbidden"]);

function registerFrame(spec, takeover) {
  const f = { type: "register", id: spec.id, ref: `register:${spec.id}` };
  for (const k of ["name", "kind", "metadata", "capabilities"]) if (spec[k] !== undefined) f[k] = spec[k];
  if (spec.heartbeatIntervalMs !== undefined) f.heartbeat_interval_ms = spec.heartbeatIntervalMs;
  if (takeover) f.takeover = true;
  return f;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class AgentClient {
  constructor(addresses, agents = [], options = {}) {
    this.addresses = typeof addresses === "string" ? [addresses] : [...addresses];
    this.options = { beatRatio: 0.75, jitter: 0.1, backoffMinMs: 100, backoffMaxMs: 30000, takeover: false, ...options };
    this.agents = new Map();
    for (const a of agents) this.agents.set(a.id, this.#state(a));
    this.inbox = new Inbox();
    this.registered = new Set();
    this.stopping = false;
    this.conn = null;
    this.kick = null;
    this.running = null;
  }

  #state(spec) {
    return { spec, interval: 1000, nextBeat: null, health: "healthy", metrics: null, activity: null, activitySent: null, jobs: new Map(), pending: [] };
  }

  #emit(event) {
    this.inbox.push(event);
  }

  #wake() {
    if (this.kick) this.kick();
  }

  /** Starts the background loop. */
  start() {
    if (!this.running) this.running = this.#run();
    return this;
  }

  /** Deregisters every agent and closes the connection. */
  async stop(timeoutMs = 5000) {
    this.stopping = true;
    this.#wake();
    if (this.running) await Promise.race([this.running, sleep(timeoutMs)]);
    if (this.conn) this.conn.close();
  }

  /** Stops at once, as if the process had died: nothing is deregistered. */
  async abandon() {
    this.stopping = true;
    this.abandoned = true;
    if (this.conn) this.conn.close();
    this.#wake();
    if (this.running) await this.running.catch(() => {});
  }

  /** The next event; rejects after `timeoutMs`. */
  nextEvent(timeoutMs) {
    return this.inbox.take(timeoutMs, "event");
  }

  /** What happens, as it happens. */
  async *events() {
    for (;;) yield await this.nextEvent();
  }

  add(spec) {
    if (!this.agents.has(spec.id)) {
      this.agents.set(spec.id, this.#state(spec));
      this.#wake();
    }
  }

  health(id, status = "healthy", metrics = null) {
    const a = this.agents.get(id);
    if (a) { a.health = status; a.metrics = metrics; }
  }

  activity(id, activity, detail) {
    const a = this.agents.get(id);
    if (!a) return;
    if (a.activity && a.activity[0] === activity && a.activity[1] === detail) return;
    a.activity = [activity, detail];
    this.#wake();
  }

  job(id, job, state, { progress, result, error } = {}) {
    const a = this.agents.get(id);
    if (!a) return;
    const frame = { type: "job", id, job, state };
    if (progress !== undefined) frame.progress = Math.max(0, Math.min(1, progress));
    if (result !== undefined) frame.result = result;
    if (error !== undefined) frame.error = error;
    const pending = a.pending.filter((f) => f.job === job);
    const last = pending.length ? pending[pending.length - 1] : a.jobs.get(job);
    const sameState = last && last.state === state && result === undefined && error === undefined;
    if (sameState) {
      const p0 = last.progress, p1 = frame.progress;
      if (p0 === p1 || (p0 !== undefined && p1 !== undefined && Math.abs(p1 - p0) < PROGRESS_STEP && p1 < 1)) return;
    }
    if (sameState && pending.length) a.pending[a.pending.indexOf(last)] = frame;
    else a.pending.push(frame);
    this.#wake();
  }

  #period(a) {
    const j = this.options.jitter;
    return a.interval * this.options.beatRatio * (1 - j + Math.random() * 2 * j);
  }

  async #connect(n) {
    let error;
    for (let i = 0; i < this.addresses.length; i++) {
      const address = this.addresses[(n + i) % this.addresses.length];
      try {
        return await Connection.open(address, "agent", this.options);
      } catch (e) {
        if (e instanceof VigilError && FATAL.has(e.code)) throw e;
        error = e;
      }
    }
    throw error;
  }

  async #run() {
    let attempt = 0, n = 0, before = false;
    while (!this.stopping) {
      let error;
      try {
        const conn = await this.#connect(n++);
        this.#emit({ type: "connected", address: conn.address, session: conn.welcome.session, reconnect: before });
        const takeover = before || this.options.takeover;
        before = true;
        try {
          if (await this.#session(conn, takeover)) return;
          attempt = 0;
          error = "the server closed the connection";
        } catch (e) {
          error = String(e.message ?? e);
        } finally {
          conn.close();
        }
      } catch (e) {
        if (e instanceof VigilError && FATAL.has(e.code)) {
          this.#emit({ type: "rejected", code: e.code, message: e.detail });
          return;
        }
        error = String(e.message ?? e);
      }
      if (this.stopping) return;
      const delay = backoff(attempt, this.options.backoffMinMs, this.options.backoffMaxMs);
      attempt++;
      this.#emit({ type: "disconnected", error, retryInMs: delay });
      await new Promise((r) => { this.kick = r; setTimeout(r, delay); });
      this.kick = null;
    }
  }

  async #session(conn, takeover) {
    this.conn = conn;
    this.registered = new Set();
    const sent = new Set();
    for (const a of this.agents.values()) { a.nextBeat = null; a.activitySent = null; }
    let deregistering = false;
    let done = null;
    const reader = this.#read(conn).then((r) => { done = { r }; this.#wake(); }, (e) => { done = { e }; this.#wake(); });
    try {
      for (;;) {
        if (done) {
          if (done.e) throw done.e;
          return done.r;
        }
        if (!deregistering) {
          if (!this.stopping) {
            for (const a of this.agents.values()) {
              if (!sent.has(a.spec.id)) { sent.add(a.spec.id); conn.send(registerFrame(a.spec, takeover)); }
            }
          }
          const now = Date.now();
          for (const a of this.agents.values()) {
            if (!this.registered.has(a.spec.id)) continue;
            if (!this.stopping && a.nextBeat !== null && a.nextBeat <= now) {
              const beat = { type: "heartbeat", id: a.spec.id };
              if (a.health !== "healthy") beat.status = a.health;
              if (a.metrics) beat.metrics = a.metrics;
              conn.send(beat);
              a.nextBeat = now + this.#period(a);
            }
            // Reports go out before a stop's deregistration: the last ones count.
            if (a.activity && (!a.activitySent || a.activity[0] !== a.activitySent[0] || a.activity[1] !== a.activitySent[1])) {
              const f = { type: "activity", id: a.spec.id, activity: a.activity[0] };
              if (a.activity[1] !== undefined) f.detail = a.activity[1];
              conn.send(f);
              a.activitySent = a.activity;
            }
            while (a.pending.length) {
              const f = a.pending.shift();
              conn.send(f);
              a.jobs.set(f.job, f);
            }
          }
        }
        if (this.stopping && !deregistering) {
          deregistering = true;
          for (const id of this.registered) conn.send({ type: "deregister", id });
          if (!this.registered.size) return true;
        }
        const waits = [...this.agents.values()].map((a) => a.nextBeat).filter((t) => t !== null);
        const timeout = waits.length ? Math.max(0, Math.min(...waits) - Date.now()) : 1000;
        await new Promise((r) => { this.kick = r; setTimeout(r, timeout); });
        this.kick = null;
      }
    } finally {
      this.conn = null;
      conn.close();
      await reader;
    }
  }

  async #read(conn) {
    for (;;) {
      const f = await conn.recv();
      if (f === null) return this.stopping && this.registered.size === 0;
      const id = f.id;
      if (f.type === "registered" && this.agents.has(id)) {
        const a = this.agents.get(id);
        a.interval = Math.max(1, Number(f.heartbeat_interval_ms ?? 1000));
        a.nextBeat = Date.now() + this.#period(a) / 4;
        this.registered.add(id);
        this.#emit({ type: "registered", id, incarnation: f.incarnation, heartbeatIntervalMs: f.heartbeat_interval_ms });
      } else if (f.type === "evicted") {
        this.agents.delete(id);
        this.registered.delete(id);
        this.#emit({ type: "evicted", id, reason: f.reason });
      } else if (f.type === "deregistered") {
        this.agents.delete(id);
        this.registered.delete(id);
        this.#emit({ type: "deregistered", id });
        if (this.stopping && this.registered.size === 0) return true;
      } else if (f.type === "error") {
        const ref = typeof f.ref === "string" && f.ref.startsWith("register:") ? f.ref.slice(9) : undefined;
        if (f.code === "rate_limited") this.#emit({ type: "rate_limited", message: f.message });
        else {
          if (ref !== undefined) this.agents.delete(ref);
          this.#emit({ type: "rejected", code: f.code, message: f.message, id: ref });
        }
      }
      this.#wake();
    }
  }
}
