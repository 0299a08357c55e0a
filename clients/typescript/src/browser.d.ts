// Type declarations of vigil-fleet/browser: the monitor over WebSocket.
import type { Frame, MonitorItem, MonitorOptions } from "./index.js";
export { VigilError } from "./index.js";

export declare class WebSocketConnection {
  static open(url: string, options?: { token?: string; role?: "monitor" | "admin"; client?: string; timeout?: number }): Promise<WebSocketConnection>;
  readonly welcome: Frame;
  send(frame: object): void;
  recv(timeoutMs?: number): Promise<Frame | null>;
  close(): void;
}

export declare class WebSocketMonitor implements AsyncIterable<MonitorItem> {
  constructor(urls: string | string[], options?: Omit<MonitorOptions, "tls">);
  lastSeq: number | null;
  close(): void;
  dropConnection(): void;
  [Symbol.asyncIterator](): AsyncIterator<MonitorItem>;
}
