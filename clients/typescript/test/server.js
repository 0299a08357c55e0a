// A real `vigil serve` for the tests: VIGIL_BIN, on a free port, with a SurrealKV store of
// its own so that it can be restarted (`stop`, `start`); `close` ends it and removes the store.
import { spawn } from "node:child_process";
import net from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function startServer(extraEnv = {}) {
  const bin = process.env.VIGIL_BIN;
  if (!bin) throw new Error("VIGIL_BIN must name the vigil binary (cargo test sets it)");
  const address = `127.0.0.1:${await freePort()}`;
  const dir = mkdtempSync(join(tmpdir(), "vigil-js-"));
  const store = `surrealkv://${dir}/db`;
  const server = { address, proc: null };
  server.start = () =>
    new Promise((resolve, reject) => {
      const proc = spawn(bin, ["serve", "--agent-listen", address, "--http-listen", "127.0.0.1:0", "--store", store], {
        // Half a second of grace: a loaded machine that delays a beat does not make an agent
        // late, while a client beating at its interval or slower still is.
        env: { ...process.env, RUST_LOG: "warn,vigil=info", NO_COLOR: "1", VIGIL_POLICY__GRACE: "500ms", ...extraEnv },
        stdio: ["ignore", "ignore", "pipe"],
      });
      server.proc = proc;
      const timer = setTimeout(() => reject(new Error("vigil serve did not start within 60 s")), 60000);
      const lines = createInterface({ input: proc.stderr });
      lines.on("line", (line) => {
        if (line.includes("vigil is supervising")) {
          server.http = /http=(\S+)/.exec(line)?.[1];
          clearTimeout(timer);
          resolve();
        }
      });
      proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`vigil serve exited (${code})`)); });
    });
  server.stop = () =>
    new Promise((resolve) => {
      const proc = server.proc;
      if (!proc || proc.exitCode !== null) return resolve();
      proc.removeAllListeners("exit");
      proc.on("exit", () => resolve());
      proc.kill("SIGTERM");
    });
  // Stops it for good and removes its store.
  server.close = async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  await server.start();
  return server;
}
