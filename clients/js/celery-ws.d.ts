// Types for celery-ws.js (celery_ws/static/celery_ws/celery-ws.js): the ES module
// `import { Client } from "celery-ws"`, and the global `CeleryWS` a script tag
// (`celery-ws/script`, or the server's /celery-ws.js) defines.
// tests/e2e/browser/test_js_package.py checks that every option, callback,
// method, export and error code of the source is declared here.

export as namespace CeleryWS;

/** A Redis stream id, "1700000000000-0": unique and increasing; compare with compareEventIds. */
export type EventId = string;

/** The connection's state, as onStateChange reports it. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** Every event's common fields. */
export interface BaseEvent {
  id: EventId;
  type: string;
  task_id: string;
  user_id: string | null;
  /** Unix seconds. */
  timestamp: number;
  /** The first task's id, on every event of a continuation (see workflowOf). */
  workflow_id?: string;
  parent_task_id?: string;
  requires_ack?: boolean;
  message_id?: string;
}

export interface TaskSentEvent extends BaseEvent { type: "task_sent"; name: string; }
export interface TaskStartedEvent extends BaseEvent { type: "task_started"; name: string; }

export interface ProgressEvent extends BaseEvent {
  type: "task_progress";
  current: number;
  total: number | null;
  /** Percent, or null without a total. */
  progress: number | null;
  message: string | null;
}

export interface StepResultEvent extends BaseEvent {
  type: "task_step_result";
  step: string;
  result: unknown;
  completed: boolean;
  message: string | null;
  status: string | null;
  error_code: string | null;
  error_message: string | null;
  step_number: number | null;
  /** Set while an answer is awaited (a question); null for a plain step result. */
  callback_id: string | null;
  /** A typed question's form: the JSON schema of its pydantic answer model. */
  answer_schema?: JSONSchema;
}

/** A question: a step result with a callback_id (answer it with confirm()). */
export interface ConfirmationRequestEvent extends StepResultEvent { callback_id: string; }

export interface ConfirmationAnsweredEvent extends BaseEvent {
  type: "confirmation_answered";
  callback_id: string;
  proceed: boolean;
  answered_by: string | null;
}

export interface ConfirmationExpiredEvent extends BaseEvent { type: "confirmation_expired"; callback_id: string; }

export type ConfirmationClosedEvent = ConfirmationAnsweredEvent | ConfirmationExpiredEvent;

export interface TaskSucceededEvent extends BaseEvent { type: "task_succeeded"; result: unknown; }
export interface TaskFailedEvent extends BaseEvent {
  type: "task_failed";
  /** The exception's class; "WorkerLost" when the worker died without a word. */
  error_code: string;
  error_message: string;
}
export interface TaskCancelledEvent extends BaseEvent {
  type: "task_cancelled";
  reason: string | null;
  requested_by: string | null;
}
export type DoneEvent = TaskSucceededEvent | TaskFailedEvent | TaskCancelledEvent;

export interface TaskRetryingEvent extends BaseEvent {
  type: "task_retrying";
  retries: number;
  eta: string | null;
  reason: string | null;
}

/** A task asked with ask() and returned: its workflow waits for the answer (not an end). */
export interface WaitingEvent extends BaseEvent {
  type: "task_waiting";
  workflow_id: string;
  callback_id: string;
  continuation_id: string;
}

/** The answer (or the timeout) is in: the workflow continues in continuation_id. */
export interface ContinuedEvent extends BaseEvent {
  type: "task_continued";
  workflow_id: string;
  continuation_id: string;
  callback_id?: string;
}

export interface HeartbeatEvent extends BaseEvent { type: "heartbeat"; interval: number; }

export type TaskEvent =
  | TaskSentEvent | TaskStartedEvent | ProgressEvent | StepResultEvent | ConfirmationAnsweredEvent
  | ConfirmationExpiredEvent | TaskSucceededEvent | TaskFailedEvent | TaskCancelledEvent | TaskRetryingEvent
  | WaitingEvent | ContinuedEvent | HeartbeatEvent;

/** What a task subscription returns first: the latest progress, step result and final event. */
export interface TaskState {
  progress: ProgressEvent | null;
  step_result: StepResultEvent | null;
  final: DoneEvent | null;
}

/** Replies to the client's own frames, and messages sent with broadcast/send_to_user/send_to_task. */
export interface ReplyFrame {
  type: "authenticated" | "subscription_confirmed" | "unsubscribed" | "confirmation_received"
    | "cancel_received" | "ack_received" | "pong" | string;
  user_id?: string | null;
  task_id?: string | null;
  expires_at?: number;
  /** subscription_confirmed after a last_event_id: false when history was lost. */
  recovered?: boolean;
  /** subscription_confirmed for a task_id. */
  state?: TaskState;
  [field: string]: unknown;
}

/** Error codes of the server's error frames. */
export type ServerErrorCode =
  | "invalid_json" | "invalid_message" | "unknown_action" | "unknown_callback" | "unknown_message"
  | "invalid_answer" | "already_answered" | "confirmation_expired" | "task_finished" | "not_found"
  | "forbidden" | "rate_limited" | "internal_error";

/**
 * Error codes of the connection, from the client itself. It stops after
 * "unauthorized" (close 4401, unless a token function can renew an expired
 * token) and "invalid_url"; after the others it keeps reconnecting with backoff,
 * reporting each once until a connection is accepted again.
 */
export type ConnectionErrorCode =
  /** close 4401: the token was refused or expired */
  | "unauthorized"
  /** the server answered the upgrade with an HTTP error: 403 from its Origin check, 503 when full */
  | "handshake_refused"
  /** close 1008: sustained flooding past the rate limit */
  | "policy_violation"
  /** close 1013: too many connections for this user, or a resume over the rate budget */
  | "try_again_later"
  /** the token function threw or rejected */
  | "token_unavailable"
  /** a resume found the history trimmed: reload the state */
  | "history_lost"
  /** the URL was refused, or there is no WebSocket (pass options.WebSocket) */
  | "invalid_url";

export type ErrorCode = ServerErrorCode | ConnectionErrorCode;

export interface ErrorEvent {
  type: "error";
  code: ErrorCode;
  message: string;
  /** invalid_message: the field; invalid_answer: the fields of the answer that do not fit (dotted paths). */
  field?: string;
  fields?: string[];
  callback_id?: string;
  task_id?: string;
  message_id?: string;
  /** unauthorized, policy_violation, try_again_later: the close code. */
  closeCode?: number;
  /** handshake_refused: the HTTP status when the runtime tells it (Node's ws does, browsers do not). */
  status?: number | null;
  /** history_lost: the subscription_confirmed frame. */
  frame?: ReplyFrame;
}

/** A token, or a function returning one (or a promise of one): called per connection and before exp. */
export type TokenSource = string | (() => string | Promise<string>);

/** What the client needs of a WebSocket: the browser's, or the ws package's in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

/** The WebSocket class to use: the global one by default; in Node 20, the ws package's. */
export type WebSocketClass = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions {
  /** Open mode: follow this user's tasks. */
  userId?: string;
  /** Token mode: a JWT from your application; a function is called per connection and renewed before exp. */
  token?: TokenSource;
  /** Tasks to follow from the start (their state comes first). */
  taskId?: string | string[];
  taskIds?: string[];
  /** Resume after this event (a page that kept it across a reload). */
  lastEventId?: EventId;
  /** Reconnect backoff, ms: from minDelay (500) doubling to maxDelay (15000), with jitter. */
  minDelay?: number;
  maxDelay?: number;
  /** Keepalive ping every so many ms (25000); 0 turns it off. */
  pingInterval?: number;
  WebSocket?: WebSocketClass;

  onProgress?(this: Client, event: ProgressEvent): void;
  /** A step result that is not a question. */
  onStepResult?(this: Client, event: StepResultEvent): void;
  /** A question (callback_id set, answer_schema for a typed one): answer with confirm(). */
  onConfirmationRequest?(this: Client, event: ConfirmationRequestEvent): void;
  /** A question was answered (by anyone) or expired: take it off the page. */
  onConfirmationClosed?(this: Client, event: ConfirmationClosedEvent): void;
  /** task_waiting: a workflow waits for an answer (not an end). */
  onWaiting?(this: Client, event: WaitingEvent): void;
  /** task_continued: once per continuation_id. */
  onContinued?(this: Client, event: ContinuedEvent): void;
  /** The end of a workflow (or a task): once, never for task_waiting. */
  onDone?(this: Client, event: DoneEvent): void;
  onError?(this: Client, error: ErrorEvent): void;
  /** Every frame, events and replies, as received (state events included). */
  onEvent?(this: Client, frame: TaskEvent | ReplyFrame): void;
  onStateChange?(this: Client, state: ConnectionState): void;
}

export interface Subscription {
  /** Open mode only: a token's connection follows its own user. */
  userId?: string;
  taskId?: string;
  /** Replay the events after this one instead of handing over the task's state. */
  lastEventId?: EventId;
}

export class Client {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly state: ConnectionState;
  /** The newest event id seen: where a reconnect resumes. */
  readonly lastEventId: EventId | null;
  readonly userIds: string[];
  readonly taskIds: string[];
  readonly options: ClientOptions;
  /** Open the connection; it reconnects by itself until close(). */
  connect(): this;
  /** Close for good: no reconnect until connect() is called again. */
  close(): void;
  /** Follow a task (its state first) or, in open mode, a user; kept across reconnects. */
  subscribe(what: Subscription): this;
  /** Answer a question; `data` for a typed one. Returns whether it was sent now (else queued). */
  confirm(callbackId: string, proceed: boolean, feedback?: string | null, data?: Record<string, unknown> | null): boolean;
  /** Cancel a task or a waiting workflow. Returns whether it was sent now (else queued). */
  cancel(taskId: string): boolean;
  /** Whether a workflow (its first task's id) waits for an answer. */
  isWaiting(workflowId: string): boolean;
}

/** A JSON schema as pydantic writes it (the parts the form reads). */
export interface JSONSchema {
  type?: string;
  title?: string;
  description?: string;
  properties?: Record<string, JSONSchema>;
  required?: string[];
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  $ref?: string;
  $defs?: Record<string, JSONSchema>;
  anyOf?: JSONSchema[];
  allOf?: JSONSchema[];
  [keyword: string]: unknown;
}

export interface AnswerForm {
  /** The form's root element, appended to the container. */
  readonly element: HTMLElement;
  /** The answer's data typed as the schema says, or null when a field cannot be read (it then says why). */
  value(): Record<string, unknown> | null;
  /** Mark the fields an invalid_answer error names; returns those it has no input for. */
  showErrors(fields: string[]): string[];
  clearErrors(): void;
}

/** Render a form for a typed question's answer_schema into `container`. */
export function renderAnswerForm(schema: JSONSchema, container: HTMLElement): AnswerForm;

/** Compare two event ids: -1, 0 or 1. Throws TypeError for anything else. */
export function compareEventIds(a: EventId, b: EventId): -1 | 0 | 1;
/** "1700000000000-0" -> [1700000000000, 0], or null. */
export function parseEventId(id: unknown): [number, number] | null;
/** The workflow an event belongs to: workflow_id, else task_id. */
export function workflowOf(event: { workflow_id?: string | null; task_id?: string | null } | null): string | null;
/** A JWT's exp in ms since the epoch, or null. */
export function tokenExpiry(token: unknown): number | null;
/** "celery-ws.v1". */
export const SUBPROTOCOL: string;

declare const CeleryWS: {
  Client: typeof Client;
  renderAnswerForm: typeof renderAnswerForm;
  compareEventIds: typeof compareEventIds;
  parseEventId: typeof parseEventId;
  workflowOf: typeof workflowOf;
  tokenExpiry: typeof tokenExpiry;
  SUBPROTOCOL: string;
};
export default CeleryWS;
