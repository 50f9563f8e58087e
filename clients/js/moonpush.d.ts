// Types for moonpush.js (docs/client-js.md has the whole guide).

/** Close codes after which the client does not reconnect by default. */
export declare const STOP_CODES: readonly number[];

/** Where a channel stands: the epoch and the last seq handed to the listeners. */
export interface Position {
  epoch: string | null;
  seq: number;
}

/** Anything shaped like the browser's WebSocket (in Node: the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface MoonpushClientOptions {
  /** A fixed token (sent as ?token=). */
  token?: string;
  /** Called before every connection (and before a refresh): return a fresh token. Wins over `token`. */
  getToken?: () => string | Promise<string>;
  /** Channels to keep subscribed (besides the personal user:<id>, which every connection has). */
  channels?: string[];
  /** Device id (?device=), when the token does not name one. */
  device?: string;
  /** Where to resume from (e.g. what `positions()` returned before a page reload). */
  positions?: Record<string, { epoch?: string | null; seq: number }>;
  /** The user id, if known before the first welcome: lets the first URL resume user:<id> from `positions`. */
  user?: string;
  /** More query parameters for the connect URL. */
  params?: Record<string, string>;
  /** WebSocket implementation; default globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** Backoff: the first retry waits up to this many ms (full jitter). Default 500. */
  minDelayMs?: number;
  /** Backoff cap in ms. Default 30000. */
  maxDelayMs?: number;
  /** A connection open this long resets the backoff. Default 5000. */
  stableMs?: number;
  /** Connect + welcome must take less than this. Default 10000. */
  openTimeoutMs?: number;
  /** Acks are cumulative: coalesce them this long. Default 20. */
  ackDelayMs?: number;
  /** Refresh an expiring token at this fraction of its lifetime. Default 0.8. */
  refreshAt?: number;
  /** Give up after this many consecutive attempts that never got a welcome. Default Infinity. */
  maxAttempts?: number;
  /** Close codes that stop reconnecting; default STOP_CODES. */
  stopCodes?: number[];
}

export interface MessageEvent<T = unknown> {
  channel: string;
  seq: number;
  id: string;
  data: T;
}

export interface ResetEvent {
  channel: string;
  epoch: string;
  first_seq: number;
  last_seq: number;
  reason: "epoch" | "gap" | "ahead";
}

export interface WelcomeFrame {
  type: "welcome";
  conn: string;
  user: string;
  device: string;
  kind: string;
  channels: string[];
  epochs: Record<string, string>;
  acks: boolean;
  expires_in_ms?: number;
}

export type StateEvent =
  | { state: "connecting"; attempt: number }
  | { state: "open"; welcome: WelcomeFrame }
  | {
      state: "closed";
      code: number;
      reason: string;
      /** false: the client stopped (close(), a stop code, or maxAttempts: then gaveUp). */
      willReconnect: boolean;
      /** When willReconnect: the wait before the next attempt. */
      delayMs?: number;
      gaveUp?: boolean;
    };

export interface ErrorEvent {
  /** A server error frame's code (forbidden, bad_channel, unauthorized, ...) or the client's own:
   * handler_error, token_error, connect_error, open_timeout, bad_frame. */
  code: string;
  message: string;
  channel?: string;
  seq?: number;
  /** The error was the answer to a token refresh. */
  refresh?: boolean;
  cause?: unknown;
}

export interface MoonpushEvents {
  /** May return a promise: on ack routes the ack waits for it. */
  message: (m: MessageEvent) => void | Promise<unknown>;
  reset: (r: ResetEvent) => void;
  state: (s: StateEvent) => void;
  error: (e: ErrorEvent) => void;
  /** Server frames of other types (answers of the route's on_message plugins). */
  frame: (f: Record<string, unknown> & { type?: string }) => void;
}

export declare class MoonpushClient {
  constructor(url: string, options?: MoonpushClientOptions);
  readonly url: string;
  readonly state: "idle" | "connecting" | "open" | "closed";
  readonly welcome: WelcomeFrame | null;
  readonly channels: string[];
  connect(): this;
  close(code?: number, reason?: string): void;
  subscribe(channel: string): void;
  unsubscribe(channel: string): void;
  /** Sends a frame of the application's own type; false when not open. */
  send(frame: Record<string, unknown>): boolean;
  positions(): Record<string, Position>;
  /** Returns a function that removes the listener. */
  on<E extends keyof MoonpushEvents>(event: E, fn: MoonpushEvents[E]): () => void;
  off<E extends keyof MoonpushEvents>(event: E, fn: MoonpushEvents[E]): void;
}

export default MoonpushClient;
