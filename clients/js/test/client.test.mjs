// The npm package against a real celery-ws server, Redis and Celery worker
// (started by stack.mjs): the same file the server serves, connecting with a
// token, following a task, its progress, answering its typed question, a late
// subscription's state, a refused origin and token renewal.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import CeleryWS, { Client, renderAnswerForm, tokenExpiry } from "celery-ws";
import { startStack, until } from "./stack.mjs";

const here = dirname(fileURLToPath(import.meta.url));
let stack;
let users = 0;

before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

/** A client that records what it hears; `options` add to or override its own. */
function recorded(options) {
  const log = { progress: [], questions: [], closed: [], done: [], errors: [], states: [], steps: [] };
  const client = new Client(stack.url, {
    WebSocket,
    onProgress: (e) => log.progress.push(e),
    onStepResult: (e) => log.steps.push(e),
    onConfirmationRequest: (e) => log.questions.push(e),
    onConfirmationClosed: (e) => log.closed.push(e),
    onDone: (e) => log.done.push(e),
    onError: (e) => log.errors.push(e),
    onStateChange: (s) => log.states.push(s),
    ...options,
  });
  return { client, log };
}

const newUser = () => `npm-user-${process.pid}-${++users}`;

test("the package's script build is the file the server serves, and the ES module exports its API", async () => {
  const served = await (await fetch(`${stack.httpUrl}/celery-ws.js`)).text();
  assert.equal(readFileSync(join(here, "..", "dist", "celery-ws.js"), "utf8"), served);
  assert.equal(typeof Client, "function");
  assert.equal(typeof renderAnswerForm, "function");
  assert.equal(CeleryWS.Client, Client);
  assert.equal(globalThis.CeleryWS, undefined);  // the ES module sets no global
});

test("connects with a token, follows a task's progress and answers its typed question", async (t) => {
  const user = newUser();
  let tokens = 0;
  const { client, log } = recorded({ token: () => { tokens++; return stack.token(user); } });
  t.after(() => client.close());
  client.connect();
  await until(() => log.states.includes("open"), "the connection");
  const taskId = await stack.start(user, 5);

  const question = await until(() => log.questions[0], "the question");
  assert.equal(question.task_id, taskId);
  assert.equal(question.message, "How many rows?");
  assert.deepEqual(question.answer_schema.required, ["rows"]);
  const progress = log.progress.filter((e) => e.task_id === taskId);
  assert.ok(progress.length >= 1);
  assert.equal(progress.at(-1).progress, 100);
  assert.equal(progress.at(-1).message, "Counted 5 of 5");

  // an answer that does not fit the model: refused, naming the field; the question stays open
  client.confirm(question.callback_id, true, "", { rows: 500 });
  const refused = await until(() => log.errors.find((e) => e.code === "invalid_answer"), "invalid_answer");
  assert.deepEqual(refused.fields, ["rows"]);
  assert.equal(refused.callback_id, question.callback_id);

  client.confirm(question.callback_id, true, "from node", { rows: 12, mode: "fast" });
  const done = await until(() => log.done[0], "the task's end");
  assert.equal(done.type, "task_succeeded");
  assert.deepEqual(done.result, { proceed: true, data: { rows: 12, mode: "fast" }, answered_by: user });
  assert.equal(log.closed.length, 1);
  assert.equal(log.closed[0].type, "confirmation_answered");
  assert.equal(tokens, 1);
  assert.deepEqual(await stack.result(taskId), done.result);
});

test("subscribe({taskId}) to a finished task hands its state to the callbacks, its question closed", async (t) => {
  const user = newUser();
  const first = recorded({ token: () => stack.token(user) });
  t.after(() => first.client.close());
  first.client.connect();
  const taskId = await stack.start(user, 3);
  const question = await until(() => first.log.questions[0], "the question");
  first.client.confirm(question.callback_id, false, "not now");
  await until(() => first.log.done[0], "the task's end");

  const late = recorded({ token: () => stack.token(user) });
  t.after(() => late.client.close());
  late.client.connect();
  await until(() => late.log.states.includes("open"), "the late connection");
  assert.equal(late.client.subscribe({ taskId }), late.client);
  const done = await until(() => late.log.done[0], "the state's final event");
  assert.equal(done.task_id, taskId);
  assert.deepEqual(done.result, { proceed: false, data: null, answered_by: user });
  assert.equal(late.log.progress.at(-1).progress, 100);
  assert.deepEqual(late.log.questions, []);   // answered: no question
  assert.equal(late.log.steps.length, 1);      // the question's step, as a step
  assert.equal(late.log.steps[0].callback_id, null);
});

test("a handshake refused by the Origin check reaches onError with the HTTP status", async (t) => {
  class FromAnotherSite extends WebSocket {
    constructor(url, protocols) { super(url, protocols, { origin: "https://elsewhere.example" }); }
  }
  const user = newUser();
  const { client, log } = recorded({
    WebSocket: FromAnotherSite, token: () => stack.token(user), minDelay: 50, maxDelay: 100,
  });
  t.after(() => client.close());
  client.connect();
  const error = await until(() => log.errors[0], "onError");
  await new Promise((resolve) => setTimeout(resolve, 500));   // more refused attempts: one report
  assert.deepEqual(log.errors.map((e) => [e.code, e.status]), [["handshake_refused", 403]]);
  assert.match(error.message, /CELERY_WS_ALLOWED_ORIGINS/);
  assert.equal(client.state, "reconnecting");
  const status = await (await fetch(`${stack.httpUrl}/status`)).json();
  assert.ok(status.connections_rejected_origin >= 2);
  assert.match(await stack.logs(), /Origin 'https:\/\/elsewhere.example' is not allowed/);
});

test("a token function is called again before its token expires, without a reconnect", async (t) => {
  const user = newUser();
  const minted = [];
  const { client, log } = recorded({
    token: async () => { minted.push(await stack.token(user, 4)); return minted.at(-1); },
  });
  t.after(() => client.close());
  client.connect();
  await until(() => log.states.includes("open"), "the connection");
  const firstExpiry = tokenExpiry(minted[0]);
  assert.ok(firstExpiry > Date.now());
  await until(() => minted.length >= 3 || undefined, "two renewals", 12000);
  const taskId = await stack.start(user, 2);   // still delivered on the renewed connection
  await until(() => log.questions.find((e) => e.task_id === taskId), "the question");
  assert.deepEqual(log.states, ["connecting", "open"]);
  assert.deepEqual(log.errors, []);
  client.confirm(log.questions.at(-1).callback_id, false);
  await until(() => log.done[0], "the task's end");
});
