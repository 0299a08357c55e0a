// vigil-fleet for browsers: the monitor over WebSocket (no Node modules).
export { VigilError } from "./errors.js";
export { WebSocketConnection, WebSocketMonitor } from "./websocket.js";
