// Bad input from a server: a garbage line, a socket closed in the middle of a frame. The
// client says so in a `disconnected` event and tries again; it never hangs.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { AgentClient, Monitor } from "../src/index.js";

const WELCOME = '{"type":"welcome","protocol":1,"session":"s","server":"fake/0","heartbeat_interval_ms":1000,"time":"2026-01-01T00:00:00.000Z"}\n';

async function fakeServer(afterWelcome) {
  const server = net.createServer((socket) => {
    socket.once("data", () => socket.end(WELCOME + afterWelcome));
    socket.on("error", () => {});
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { server, address: `127.0.0.1:${server.address().port}` };
}

async function disconnects(next, n) {
  const out = [];
  while (out.length < n) {
    const e = await next();
    if (e.type === "disconnected") out.push(e);
  }
  return out;
}

const fast = { backoffMinMs: 10, backoffMaxMs: 50 };

test("an agent client reports a garbage line and tries again", async () => {
  const { server, address } = await fakeServer("this is not json\n");
  const client = new AgentClient(address, [{ id: "a1" }], fast).start();
  const seen = await disconnects(() => client.nextEvent(20000), 2);
  assert.match(seen[0].error, /not JSON/);
  await client.abandon();
  server.close();
});

test("an agent client reports a frame cut short", async () => {
  const { server, address } = await fakeServer('{"type":"registered","id":"a1"');
  const client = new AgentClient(address, [{ id: "a1" }], fast).start();
  const [first] = await disconnects(() => client.nextEvent(20000), 1);
  assert.match(first.error, /middle of a frame/);
  await client.abandon();
  server.close();
});

test("a monitor reports a garbage line and tries again", async () => {
  const { server, address } = await fakeServer("[1,2,3]\n");
  const monitor = new Monitor(address, fast);
  const items = monitor[Symbol.asyncIterator]();
  const seen = await disconnects(async () => (await items.next()).value, 2);
  assert.match(seen[0].error, /not a JSON object/);
  monitor.close();
  server.close();
});
