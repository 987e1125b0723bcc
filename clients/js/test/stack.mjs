// Starts stack.py (a redis-server, `celery-ws serve` in token mode and a Celery
// worker, all real) with the repository's virtualenv, and talks to it in JSON
// lines. CELERY_WS_PYTHON names another Python that has celery-ws installed.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const REPO = join(here, "..", "..", "..");
const START_TIMEOUT = 60000;

export async function startStack() {
  const python = process.env.CELERY_WS_PYTHON || join(REPO, ".venv", "bin", "python");
  const child = spawn(python, [join(here, "stack.py")], { cwd: REPO, stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout });
  const waiting = [];
  const exited = new Promise((resolve) => child.once("exit", resolve));
  lines.on("line", (line) => {
    const next = waiting.shift();
    if (next) next.resolve(JSON.parse(line));
  });
  child.once("exit", (code) => {
    for (const next of waiting.splice(0)) next.reject(new Error(`stack.py exited (${code})`));
  });
  const reply = (timeout) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("stack.py did not answer in time")), timeout);
    waiting.push({
      resolve: (value) => { clearTimeout(timer); resolve(value); },
      reject: (err) => { clearTimeout(timer); reject(err); },
    });
  });
  const ready = await reply(START_TIMEOUT);

  async function ask(request) {
    const answer = reply(START_TIMEOUT);
    child.stdin.write(JSON.stringify(request) + "\n");
    const value = await answer;
    if (value.error) throw new Error(value.error);
    return value;
  }

  return {
    url: ready.url,
    httpUrl: ready.http_url,
    token: async (user, ttl = 60) => (await ask({ op: "token", user, ttl })).token,
    start: async (user, steps = 5) => (await ask({ op: "start", user, steps })).task_id,
    result: async (taskId) => (await ask({ op: "result", task_id: taskId })).result,
    logs: async () => (await ask({ op: "logs" })).logs,
    async stop() {
      child.stdin.end();   // stack.py stops the server, the worker and Redis
      const timer = setTimeout(() => child.kill("SIGKILL"), 30000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Resolves with the first value `check()` returns that is not undefined; bounded in time. */
export async function until(check, what, timeout = 20000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
