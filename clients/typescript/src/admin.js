// Admin calls for scripts (Node): one connection per call.
import { Connection, VigilError } from "./connection.js";
import { MonitorCore } from "./monitor.js";

/** Watches the fleet over TCP (see MonitorCore). */
export class Monitor extends MonitorCore {
  constructor(addresses, options = {}) {
    super((address, opts) => Connection.open(address, "monitor", opts), addresses, options);
  }
}

/** One admin call on a connection of its own; resolves with the result's `data`. */
export async function admin(address, op, args = {}, options = {}) {
  const conn = await Connection.open(address, "admin", options);
  try {
    conn.send({ type: "admin", op, args, ref: 1 });
    for (;;) {
      const f = await conn.recv();
      if (f === null) throw new VigilError("closed", "the server closed the connection without answering");
      if (f.ref !== 1 && !(f.type === "error" && f.ref === undefined)) continue;
      if (f.type === "result" && f.ok !== false) return f.data;
      throw new VigilError(f.code ?? "error", f.message ?? JSON.stringify(f.data));
    }
  } finally {
    conn.close();
  }
}
