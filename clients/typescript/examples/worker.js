// A Node worker: takes jobs, reports them, and leaves cleanly.
//   node clients/typescript/examples/worker.js 127.0.0.1:7400
import { AgentClient } from "../src/index.js";

const address = process.argv[2] ?? "127.0.0.1:7400";
const client = new AgentClient(address, [{ id: "node-worker-1", kind: "worker", heartbeatIntervalMs: 5000 }]).start();
for await (const event of client.events()) {
  console.log(event);
  if (event.type === "registered") break;
}
for (let n = 0; n < 3; n++) {
  const job = `job-${n}`;
  client.activity("node-worker-1", "working", job);
  client.job("node-worker-1", job, "running", { progress: 0 });
  await new Promise((r) => setTimeout(r, 300)); // the work
  client.job("node-worker-1", job, "completed", { progress: 1 });
}
client.activity("node-worker-1", "idle");
await client.stop();
