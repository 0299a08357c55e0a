// Type declarations of vigil-fleet (protocol v1, docs/protocol.md).

export declare const PROTOCOL: 1;
export declare const PROGRESS_STEP: 0.01;

export interface TlsOptions {
  /** A PEM file with the CA to trust (default: Node's). */
  caFile?: string;
  /** The name the certificate must carry (default: the host connected to). */
  serverName?: string;
}

export interface ConnectOptions {
  token?: string;
  tls?: TlsOptions;
  client?: string;
  timeout?: number;
}

export declare class VigilError extends Error {
  /** The protocol's error code (`unauthorized`, `unknown_agent`, ...). */
  code: string;
  detail: string;
}

export type Frame = { type: string; [key: string]: unknown };

export declare class Connection {
  static open(address: string, role: "agent" | "monitor" | "admin", options?: ConnectOptions): Promise<Connection>;
  readonly address: string;
  readonly welcome: Frame;
  send(frame: object): void;
  recv(timeoutMs?: number): Promise<Frame | null>;
  close(): void;
}

export interface AgentSpec {
  id: string;
  name?: string;
  kind?: string;
  metadata?: Record<string, string>;
  capabilities?: string[];
  heartbeatIntervalMs?: number;
}

export type AgentEvent =
  | { type: "connected"; address: string; session?: string; reconnect: boolean }
  | { type: "registered"; id: string; incarnation: number; heartbeatIntervalMs: number }
  | { type: "evicted"; id: string; reason: "taken_over" | "evicted" | string }
  | { type: "deregistered"; id: string }
  | { type: "rejected"; code: string; message: string; id?: string }
  | { type: "rate_limited"; message: string }
  | { type: "disconnected"; error: string; retryInMs: number };

export interface AgentClientOptions extends ConnectOptions {
  takeover?: boolean;
  beatRatio?: number;
  jitter?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
}

export type JobState = "submitted" | "assigned" | "running" | "completed" | "failed";

export declare class AgentClient {
  constructor(addresses: string | string[], agents?: AgentSpec[], options?: AgentClientOptions);
  start(): this;
  stop(timeoutMs?: number): Promise<void>;
  abandon(): Promise<void>;
  nextEvent(timeoutMs?: number): Promise<AgentEvent>;
  events(): AsyncGenerator<AgentEvent>;
  add(spec: AgentSpec): void;
  health(id: string, status?: "healthy" | "degraded" | "unhealthy", metrics?: Record<string, number> | null): void;
  activity(id: string, activity: string, detail?: string): void;
  job(id: string, job: string, state: JobState, fields?: { progress?: number; result?: unknown; error?: string }): void;
}

export type MonitorItem =
  | { type: "snapshot"; seq: number; agents: Frame[]; jobs: Frame[]; stats: Frame }
  | { type: "event"; seq: number; frame: Frame }
  | { type: "stats"; frame: Frame }
  | { type: "disconnected"; error: string; retryInMs: number };

export interface MonitorOptions extends ConnectOptions {
  topics?: Array<"agents" | "jobs" | "stats" | "alerts">;
  kinds?: string[];
  ids?: string[];
  statuses?: string[];
  since?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
}

export declare class Monitor implements AsyncIterable<MonitorItem> {
  constructor(addresses: string | string[], options?: MonitorOptions);
  lastSeq: number | null;
  close(): void;
  dropConnection(): void;
  [Symbol.asyncIterator](): AsyncIterator<MonitorItem>;
}

export declare function admin(address: string, op: string, args?: object, options?: ConnectOptions): Promise<any>;

export { WebSocketConnection, WebSocketMonitor } from "./browser.js";
