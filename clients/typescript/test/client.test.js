// The agent client, the monitor and admin calls against a real `vigil serve`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { AgentClient, Connection, Monitor, admin } from "../src/index.js";
import { startServer } from "./server.js";

// With the server's 500 ms grace, a beat has 750 ms to spare (it leaves 250 ms early).
const INTERVAL_MS = 1000;
let server;
before(async () => { server = await startServer(); });
after(async () => { await server.close(); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(client, type, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const e = await client.nextEvent(Math.max(10, deadline - Date.now()));
    if (e.type === type) return e;
  }
}

async function eventsOf(id) {
  return admin(server.address, "events", { id, limit: 1000 });
}

const spec = (id) => ({ id, kind: "worker", heartbeatIntervalMs: INTERVAL_MS });

test("beats keep an agent online", async () => {
  const client = new AgentClient(server.address, [spec("js-1")]).start();
  const reg = await until(client, "registered");
  assert.equal(reg.heartbeatIntervalMs, INTERVAL_MS);
  await sleep(5 * INTERVAL_MS);
  assert.deepEqual((await eventsOf("js-1")).map((e) => e.event), ["registered"]);
  assert.equal((await admin(server.address, "get", { id: "js-1" })).status, "online");
  await client.stop();
  assert.equal((await admin(server.address, "get", { id: "js-1" })).status, "left");
});

test("an agent that stops beating goes degraded, then offline", async () => {
  const client = new AgentClient(server.address, [spec("js-2")]).start();
  await until(client, "registered");
  await client.abandon();
  // The log holds only durable events (the agent's status may show a change a moment before).
  const deadline = Date.now() + 20000;
  let steps = [];
  while (!steps.some(([, to]) => to === "offline")) {
    assert.ok(Date.now() < deadline, `not offline in time: ${JSON.stringify(steps)}`);
    await sleep(50);
    steps = (await eventsOf("js-2")).filter((e) => e.event === "transition").map((e) => [e.from, e.to]);
  }
  assert.deepEqual(steps, [["online", "degraded"], ["degraded", "offline"]]);
});

test("a takeover from another connection is an evicted event", async () => {
  const client = new AgentClient(server.address, [spec("js-3")]).start();
  await until(client, "registered");
  const other = await Connection.open(server.address, "agent");
  other.send({ type: "register", id: "js-3", takeover: true, ref: 1 });
  const ev = await until(client, "evicted");
  assert.deepEqual([ev.id, ev.reason], ["js-3", "taken_over"]);
  other.close();
  await client.stop();
});

test("reports are coalesced, recorded once, and the last ones go out before a stop", async () => {
  const client = new AgentClient(server.address, [spec("js-4")]).start();
  await until(client, "registered");
  for (let i = 0; i < 3; i++) client.activity("js-4", "working");
  client.job("js-4", "j1", "running", { progress: 0.5 });
  client.job("js-4", "j1", "running", { progress: 0.501 });
  client.job("js-4", "j1", "completed", { progress: 1 });
  await client.stop();
  const evs = await eventsOf("js-4");
  assert.deepEqual(evs.filter((e) => e.event === "activity").map((e) => e.to), ["working"]);
  assert.deepEqual(evs.filter((e) => e.event === "job").map((e) => e.to), ["running", "completed"]);
});

test("a server restart is survived without a transition", async () => {
  const client = new AgentClient(server.address, [spec("js-5")]).start();
  const first = await until(client, "registered");
  await server.stop();
  await server.start();
  const again = await until(client, "registered");
  assert.equal(again.incarnation, first.incarnation + 1);
  await sleep(5 * INTERVAL_MS);
  assert.deepEqual((await eventsOf("js-5")).map((e) => e.event), ["registered", "registered"]);
  await client.stop();
});

test("a monitor gets a snapshot, then every event once across a lost connection", async () => {
  const register = async (ids) => {
    const c = await Connection.open(server.address, "agent");
    ids.forEach((id, i) => c.send({ type: "register", id, heartbeat_interval_ms: 60000, ref: i }));
    for (let seen = 0; seen < ids.length; seen++) assert.equal((await c.recv(20000)).type, "registered");
    return c;
  };
  const monitor = new Monitor(server.address, { topics: ["agents"], ids: ["m-1", "m-2", "m-3", "m-4"] });
  const items = monitor[Symbol.asyncIterator]();
  const first = (await items.next()).value;
  assert.equal(first.type, "snapshot");
  const a = await register(["m-1", "m-2"]);
  const got = [];
  while (got.length < 2) {
    const item = (await items.next()).value;
    if (item.type === "event") got.push(item);
  }
  monitor.dropConnection();
  const b = await register(["m-3", "m-4"]);
  let dropped = false;
  while (got.length < 4) {
    const item = (await items.next()).value;
    if (item.type === "disconnected") dropped = true;
    else if (item.type === "event") got.push(item);
  }
  assert.ok(dropped);
  assert.deepEqual(got.map((e) => e.frame.agent), ["m-1", "m-2", "m-3", "m-4"]);
  const seqs = got.map((e) => e.seq);
  assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
  assert.equal(new Set(seqs).size, 4, "none twice");
  monitor.close();
  a.close();
  b.close();
});

test("an admin refusal carries the protocol's code", async () => {
  await assert.rejects(admin(server.address, "get", { id: "nobody" }), (e) => e.code === "unknown_agent");
});

test("the worker example runs and what it reports is recorded", async () => {
  const { execFile } = await import("node:child_process");
  const { fileURLToPath } = await import("node:url");
  const example = fileURLToPath(new URL("../examples/worker.js", import.meta.url));
  await new Promise((resolve, reject) =>
    execFile(process.execPath, [example, server.address], { timeout: 60000 }, (e, _out, err) => (e ? reject(new Error(err || e.message)) : resolve())),
  );
  const evs = await eventsOf("node-worker-1");
  const completed = evs.filter((e) => e.event === "job" && e.to === "completed").map((e) => e.job);
  assert.deepEqual(completed, ["job-0", "job-1", "job-2"]);
  assert.equal(evs[evs.length - 1].event, "deregistered");
});
