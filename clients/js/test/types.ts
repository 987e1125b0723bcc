// Compiled (never run) by `npm test` (tsc --noEmit): celery-ws.d.ts used as a page
// and as a Node program would use it, so a declaration that does not hold fails.
import CeleryWS, {
  Client, compareEventIds, renderAnswerForm, tokenExpiry, workflowOf,
  type AnswerForm, type ConnectionState, type DoneEvent, type ErrorEvent, type ProgressEvent,
} from "celery-ws";
import WebSocket from "ws";

declare const container: HTMLElement;

const client: Client = new Client("wss://ws.example/", {
  token: async () => "jwt",
  taskId: ["t1"],
  minDelay: 100,
  onProgress(e: ProgressEvent) { const percent: number | null = e.progress; void percent; },
  onConfirmationRequest(e) {
    const form: AnswerForm | null = e.answer_schema ? renderAnswerForm(e.answer_schema, container) : null;
    const data = form ? form.value() : null;
    if (!form || data) this.confirm(e.callback_id, true, "fine", data);
  },
  onConfirmationClosed(e) { const id: string = e.callback_id; void id; },
  onWaiting(e) { void e.continuation_id; },
  onContinued(e) { void e.workflow_id; },
  onDone(e: DoneEvent) { if (e.type === "task_failed") void e.error_message; },
  onError(e: ErrorEvent) {
    if (e.code === "invalid_answer") void e.fields;
    if (e.code === "handshake_refused") void e.status;
    if (e.code === "try_again_later") void e.closeCode;
  },
  onStateChange(state: ConnectionState) { void state; },
});
client.connect().subscribe({ taskId: "t2", lastEventId: "1-0" }).subscribe({ userId: "u" });
const sent: boolean = client.cancel("t2");
const waiting: boolean = client.isWaiting("t1");
const order: -1 | 0 | 1 = compareEventIds("1-0", "2-0");
const workflow: string | null = workflowOf({ workflow_id: "w", task_id: "t" });
const expiry: number | null = tokenExpiry("a.b.c");
const same: typeof Client = CeleryWS.Client;
const inNode = new Client("ws://127.0.0.1:8765/", { userId: "u", WebSocket });  // the ws package's class
inNode.close();
void [sent, waiting, order, workflow, expiry, same];
