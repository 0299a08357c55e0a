// The browser monitor (over WebSocket, `GET /ws`) against a real `vigil serve`: a snapshot,
// then every event once across a lost connection. Needs the platform's WebSocket (Node 22,
// or Node 20 with --experimental-websocket; the cargo test passes it).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Connection } from "../src/index.js";
import { WebSocketMonitor } from "../src/browser.js";
import { startServer } from "./server.js";

const skip = typeof WebSocket === "undefined" && "this Node has no WebSocket (use --experimental-websocket)";
let server;
before(async () => { if (!skip) server = await startServer(); });
after(async () => { if (server) await server.close(); });

test("a WebSocket monitor gets a snapshot, then every event once across a lost connection", { skip }, async () => {
  const register = async (ids) => {
    const c = await Connection.open(server.address, "agent");
    ids.forEach((id, i) => c.send({ type: "register", id, heartbeat_interval_ms: 60000, ref: i }));
    for (let seen = 0; seen < ids.length; seen++) assert.equal((await c.recv(20000)).type, "registered");
    return c;
  };
  const monitor = new WebSocketMonitor(`ws://${server.http}/ws`, { topics: ["agents"] });
  const items = monitor[Symbol.asyncIterator]();
  const first = (await items.next()).value;
  assert.equal(first.type, "snapshot");
  const a = await register(["w-1", "w-2"]);
  const got = [];
  while (got.length < 2) {
    const item = (await items.next()).value;
    if (item.type === "event") got.push(item);
  }
  monitor.dropConnection();
  const b = await register(["w-3"]);
  let dropped = false;
  while (got.length < 3) {
    const item = (await items.next()).value;
    if (item.type === "disconnected") dropped = true;
    else if (item.type === "event") got.push(item);
  }
  assert.ok(dropped);
  assert.deepEqual(got.map((e) => e.seq), [first.seq + 1, first.seq + 2, first.seq + 3]);
  assert.deepEqual(got.map((e) => e.frame.agent), ["w-1", "w-2", "w-3"]);
  monitor.close();
  a.close();
  b.close();
});
