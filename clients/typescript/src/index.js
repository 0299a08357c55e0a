// vigil-fleet: agents and monitors for vigil (protocol v1). Node >= 18, no dependencies.
export { Connection, VigilError, PROTOCOL } from "./connection.js";
export { AgentClient, PROGRESS_STEP } from "./agent.js";
export { Monitor, admin } from "./admin.js";
export { MonitorCore } from "./monitor.js";
export { WebSocketConnection, WebSocketMonitor } from "./websocket.js";
