// TLS with a CA file and a server name, against a real `vigil serve` with the Rust tests'
// certificates (a CA, and a certificate for `localhost`).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { AgentClient } from "../src/index.js";
import { startServer } from "./server.js";

const dir = fileURLToPath(new URL("../../../tests/fixtures/tls/", import.meta.url));
let server;
before(async () => {
  server = await startServer({ VIGIL_SERVER__TLS_CERT: `${dir}cert.pem`, VIGIL_SERVER__TLS_KEY: `${dir}key.pem` });
});
after(async () => { await server.close(); });

async function until(client, type) {
  for (;;) {
    const e = await client.nextEvent(20000);
    if (e.type === type) return e;
  }
}

test("TLS with a CA file and a server name", async () => {
  const client = new AgentClient(server.address, [{ id: "tls-1" }], { tls: { caFile: `${dir}ca.pem`, serverName: "localhost" } }).start();
  assert.equal((await until(client, "registered")).id, "tls-1");
  await client.stop();
});

test("without the CA the certificate is not trusted, and the client says so", async () => {
  const client = new AgentClient(server.address, [{ id: "tls-2" }], { tls: { serverName: "localhost" } }).start();
  const seen = await until(client, "disconnected");
  assert.match(seen.error.toUpperCase(), /CERTIFICATE|SELF.SIGNED|ISSUER/);
  await client.abandon();
});
