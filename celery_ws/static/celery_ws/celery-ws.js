/*
 * celery-ws browser client. Plain JavaScript, no dependencies, no build step:
 *
 *   <script src="/celery-ws.js"></script>
 *   <script>
 *     const ws = new CeleryWS.Client("ws://127.0.0.1:8765/", {
 *       userId: "user_123",                    // open mode; or token: "..." or () => fetchToken() (token mode)
 *       taskId: "...",                         // tasks to follow from the start (their state comes first)
 *       onProgress(e) {}, onStepResult(e) {}, onConfirmationRequest(e) {}, onConfirmationClosed(e) {},
 *       onWaiting(e) {}, onContinued(e) {}, onDone(e) {},
 *       onError(e) {}, onEvent(frame) {}, onStateChange(state) {},
 *     });
 *     ws.connect();
 *     ws.subscribe({taskId: "..."});           // later: a task (its state first), or a user in open mode
 *     ws.confirm(callbackId, true, "looks fine", {rows: 10});   // data: a typed question's answer
 *     ws.cancel(taskId);
 *     const form = CeleryWS.renderAnswerForm(e.answer_schema, element);  // form.value() -> data or null
 *   </script>
 *
 * Also an ES module and a CommonJS module (the npm package `celery-ws`, built
 * from this very file): the wrapper at the bottom hands the API to whichever
 * loads it.
 *
 * It reconnects by itself (exponential backoff with jitter), resumes from the
 * last event it saw (`last_event_id`), drops events it has already delivered,
 * and answers `requires_ack` events. States: "connecting", "open",
 * "reconnecting", "closed".
 *
 * A task subscription's `state` (the latest progress, step result and final
 * event, for a page opened late) goes through the same callbacks as live
 * events: onProgress, onStepResult or onConfirmationRequest (only a question
 * still open), onDone. Not on a resume that recovered the history: the replay
 * carries the same events in order.
 *
 * onError gets error frames and what the connection itself ran into, each with
 * a `code`: "unauthorized" (close 4401: stops, unless a token function can
 * renew an expired token), "handshake_refused" (the server answered the
 * upgrade with an HTTP error, such as 403 from its Origin check or 503 when
 * full; `status` when the runtime tells it, browsers do not),
 * "policy_violation" (close 1008, flooding), "try_again_later" (close 1013),
 * "token_unavailable", "history_lost", "invalid_url". It keeps reconnecting
 * (with backoff) after all but "unauthorized" and "invalid_url"; each is
 * reported once until a connection is accepted again.
 *
 * A token function is called again shortly before the token's `exp` (read
 * from the JWT's payload: 80 % of its life, at most a minute early), and the
 * connection moves to the fresh token, resuming where it was.
 *
 * Workflows: a task that asks with `ask()` emits `task_waiting` (onWaiting:
 * waiting for the person's answer, not an end) and a continuation task carries
 * on under its own id once the answer is in (`task_continued`: onContinued,
 * once per continuation_id). Every event of a continuation carries
 * `workflow_id`, the first task's id: show events under
 * `CeleryWS.workflowOf(e)` (`e.workflow_id || e.task_id`). onDone fires once
 * per workflow, for the event that ends it, never for `task_waiting`.
 */
(function (root, factory) {
  // a classic script sets window.CeleryWS; CommonJS gets module.exports; the
  // npm package's ES module defines `module` around this file and exports it
  var api = factory(root);
  if (typeof module === "object" && module && module.exports) module.exports = api;
  else root.CeleryWS = api;
})(typeof globalThis !== "undefined" ? globalThis : this, function (global) {
  "use strict";

  var SUBPROTOCOL = "celery-ws.v1";
  var CLOSE_UNAUTHORIZED = 4401;
  // closes the server starts that the page should hear of (it reconnects after them, with backoff)
  var CLOSE_ERRORS = { 1008: "policy_violation", 1013: "try_again_later" };
  var REFRESH_SHARE = 0.8;        // a token is renewed after this share of its life ...
  var REFRESH_MARGIN = 60000;     // ... or this many ms before its exp, whichever is later
  var TERMINAL = { task_succeeded: true, task_failed: true, task_cancelled: true };
  var SEEN_LIMIT = 5000;   // ids remembered to drop duplicates
  var QUEUE_LIMIT = 100;   // actions kept while disconnected
  var WAITING = "task_waiting";      // a task asked and returned: its workflow waits for the answer
  var CONTINUED = "task_continued";  // the answer is in: the workflow continues in another task

  /** "1795651777522-0" -> [1795651777522, 0], or null for anything else. */
  function parseEventId(id) {
    if (typeof id !== "string") return null;
    var m = /^(\d+)-(\d+)$/.exec(id);
    return m ? [Number(m[1]), Number(m[2])] : null;
  }

  /** Compare two stream ids as (milliseconds, sequence) pairs: -1, 0 or 1. */
  function compareEventIds(a, b) {
    var x = parseEventId(a), y = parseEventId(b);
    if (!x || !y) throw new TypeError("not an event id: " + (x ? b : a));
    if (x[0] !== y[0]) return x[0] < y[0] ? -1 : 1;
    if (x[1] !== y[1]) return x[1] < y[1] ? -1 : 1;
    return 0;
  }

  function noop() {}

  /** A JWT's `exp` in milliseconds since the epoch, or null (not a JWT, no exp). */
  function tokenExpiry(token) {
    if (typeof token !== "string") return null;
    var part = token.split(".")[1];
    if (!part || typeof atob !== "function") return null;
    try {
      var json = atob(part.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((part.length + 3) % 4));
      var exp = JSON.parse(json).exp;
      return typeof exp === "number" && isFinite(exp) ? exp * 1000 : null;
    } catch (err) {
      return null;
    }
  }

  /** The http(s) URL of a ws(s) URL: where to ask whether the server answers at all. */
  function httpUrl(url) {
    return url.replace(/^ws(s?):/i, "http$1:");
  }

  /** The workflow an event belongs to: the first task's id (`workflow_id`), else its `task_id`. */
  function workflowOf(frame) {
    if (!frame) return null;
    if (frame.workflow_id != null && frame.workflow_id !== "") return String(frame.workflow_id);
    return frame.task_id != null && frame.task_id !== "" ? String(frame.task_id) : null;
  }

  /** A set that forgets its oldest entries past `limit`. */
  function BoundedSet(limit) {
    this.limit = limit;
    this.items = new Set();
    this.order = [];
  }
  BoundedSet.prototype.has = function (key) { return this.items.has(key); };
  BoundedSet.prototype.add = function (key) {
    if (this.items.has(key)) return;
    this.items.add(key);
    this.order.push(key);
    if (this.order.length > this.limit) this.items.delete(this.order.shift());
  };

  function Client(url, options) {
    if (!(this instanceof Client)) return new Client(url, options);
    var o = options || {};
    this.url = url;
    this.token = o.token || null;
    this.options = o;
    this.minDelay = o.minDelay != null ? o.minDelay : 500;
    this.maxDelay = o.maxDelay != null ? o.maxDelay : 15000;
    this.pingInterval = o.pingInterval != null ? o.pingInterval : 25000;
    this.WebSocket = o.WebSocket || null;   // else the global one, looked up when connecting
    this.state = "closed";
    this.lastEventId = parseEventId(o.lastEventId) ? o.lastEventId : null;
    this.userIds = [];
    this.taskIds = [];
    if (o.userId) this.userIds.push(String(o.userId));
    [].concat(o.taskId || o.taskIds || []).forEach(function (t) { this.taskIds.push(String(t)); }, this);
    this._socket = null;
    this._wanted = false;       // connect() called and close() not
    this._attempt = 0;          // failed attempts since the last good connection
    this._timer = null;         // reconnect timer
    this._pinger = null;
    this._lastFrameAt = 0;
    this._seen = new Set();
    this._seenOrder = [];
    this._queue = [];
    this._ready = false;        // subscribed (open mode) or authenticated (token mode)
    this._pending = new Map();  // workflow id -> continuation ids waiting for an answer
    this._continued = new BoundedSet(SEEN_LIMIT);  // continuation ids seen in task_continued
    this._ended = new BoundedSet(SEEN_LIMIT);      // workflows whose onDone fired
    this._refresher = null;     // timer renewing a token function's token before it expires
    this._reported = {};        // connection errors reported since the last accepted connection
    this._failedHandshakes = 0; // in a row, since a socket last opened
  }

  /** Whether a workflow (its first task's id) waits for an answer. */
  Client.prototype.isWaiting = function (workflowId) {
    var pending = this._pending.get(String(workflowId));
    return !!pending && pending.size > 0;
  };

  // Workflow bookkeeping for one event. Returns "repeated" for a task_continued
  // already seen (dropped), "end" for the event that ends its workflow, else "".
  Client.prototype._track = function (frame) {
    var type = frame.type;
    var workflow = workflowOf(frame);
    if (workflow === null) return TERMINAL[type] ? "end" : "";
    var continuation = frame.continuation_id != null ? String(frame.continuation_id) : null;
    var pending = this._pending.get(workflow);
    if (type === WAITING) {
      var key = continuation !== null ? continuation : "task:" + frame.task_id;
      if (this._continued.has(key)) return "";
      if (!pending) this._pending.set(workflow, pending = new Set());
      pending.add(key);
    } else if (type === CONTINUED) {
      if (continuation !== null && this._continued.has(continuation)) return "repeated";
      if (continuation !== null) this._continued.add(continuation);
      if (pending) {
        if (continuation === null) pending.clear();
        else pending.delete(continuation);
        if (!pending.size) this._pending.delete(workflow);
      }
    } else if (TERMINAL[type]) {
      // a task's own end while its workflow waits is not the workflow's end
      // (a waiting workflow cancelled is: task_cancelled of its first task)
      var ends = frame.workflow_id != null || type === "task_cancelled" || !this.isWaiting(workflow);
      if (!ends || this._ended.has(workflow)) return "";
      this._pending.delete(workflow);
      this._ended.add(workflow);
      return "end";
    }
    return "";
  };

  Client.prototype._call = function (name, arg) {
    var fn = this.options[name] || noop;
    try {
      fn.call(this, arg);
    } catch (err) {
      if (global.console) global.console.error("celery-ws: " + name + " threw", err);
    }
  };

  Client.prototype._setState = function (state) {
    if (this.state === state) return;
    this.state = state;
    this._call("onStateChange", state);
  };

  Client.prototype._socketUrl = function (token) {
    if (!token) return this.url;
    var query = "token=" + encodeURIComponent(token);
    if (this.lastEventId) query += "&last_event_id=" + encodeURIComponent(this.lastEventId);
    return this.url + (this.url.indexOf("?") >= 0 ? "&" : "?") + query;
  };

  /** Open the connection; reconnects by itself until close(). */
  Client.prototype.connect = function () {
    this._wanted = true;
    if (this._socket || this._timer) return this;
    this._open(false);
    return this;
  };

  // `token` may be a function returning a token (or a promise of one): it is
  // called for every connection, so a page keeps working past a token's expiry.
  Client.prototype._open = function (again) {
    var self = this;
    this._timer = null;
    this._ready = false;
    this._setState(again ? "reconnecting" : "connecting");
    if (typeof this.token !== "function") {
      this._openWith(this.token);
      return;
    }
    Promise.resolve().then(function () { return self.token(); }).then(function (token) {
      if (self._wanted) self._openWith(token);
    }, function (err) {
      self._report({ type: "error", code: "token_unavailable", message: String(err) });
      if (self._wanted) self._scheduleReconnect();
    });
  };

  Client.prototype._openWith = function (token) {
    var self = this;
    var socket;
    try {
      var WebSocketClass = this.WebSocket || global.WebSocket;
      if (!WebSocketClass) throw new TypeError("no WebSocket here: pass options.WebSocket (in Node, the ws package's)");
      socket = new WebSocketClass(this._socketUrl(token), [SUBPROTOCOL]);
    } catch (err) {
      this._call("onError", { type: "error", code: "invalid_url", message: String(err) });
      this._wanted = false;
      this._setState("closed");
      return;
    }
    this._socket = socket;
    if (typeof this.token === "function") this._scheduleRefresh(token);
    socket.onopen = function () {
      if (self._socket !== socket) return;
      socket._opened = true;
      self._failedHandshakes = 0;
      self._lastFrameAt = Date.now();
      self._setState("open");
      if (!self.token) self._subscribeAll();
      self._startPinging();
    };
    socket.onmessage = function (message) {
      if (self._socket !== socket) return;
      if (!socket._accepted) self._reported = {};   // accepted: report troubles afresh
      socket._accepted = true;
      self._lastFrameAt = Date.now();
      self._attempt = 0;
      var frame;
      try {
        frame = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      if (frame && typeof frame === "object") self._receive(frame);
    };
    socket.onclose = function (event) {
      if (self._socket !== socket) return;
      self._socket = null;
      self._ready = false;
      self._stopPinging();
      // a token that expired while connected is renewed by a token function; a
      // token refused at once would be refused again
      var renewable = typeof self.token === "function" && socket._accepted;
      if (event.code === CLOSE_UNAUTHORIZED && !renewable) {
        self._wanted = false;
        self._call("onError", {
          type: "error", code: "unauthorized", closeCode: event.code, message: event.reason || "Unauthorized",
        });
      } else if (CLOSE_ERRORS[event.code]) {
        self._report({
          type: "error", code: CLOSE_ERRORS[event.code], closeCode: event.code,
          message: event.reason || "The server closed the connection (" + event.code + ")",
        });
      } else if (!socket._opened && self._wanted) {
        self._handshakeFailed(socket);
      }
      if (!self._wanted) {
        self._setState("closed");
        return;
      }
      self._scheduleReconnect();
    };
    socket.onerror = function (event) {
      // onclose follows and decides; Node's ws names the HTTP status of a refused handshake
      var status = /server response: (\d{3})/.exec((event && event.message) || "");
      if (status) socket._status = Number(status[1]);
    };
  };

  /** onError once per kind of trouble until a connection is accepted again. */
  Client.prototype._report = function (error) {
    if (this._reported[error.code]) return;
    this._reported[error.code] = true;
    this._call("onError", error);
  };

  // A handshake that failed before the socket opened: the server is down, or it
  // refused the upgrade over HTTP (403 from its Origin check, 503 when full).
  // Browsers tell the page neither, so after two failures in a row (one could
  // be a server coming back up) ask the server for anything over plain HTTP:
  // an answer means it is up and refused this client.
  Client.prototype._handshakeFailed = function (socket) {
    var self = this;
    var status = socket._status || null;
    this._failedHandshakes++;
    var refused = {
      type: "error", code: "handshake_refused", status: status,
      message: "The server refused the WebSocket handshake" + (status ? " (HTTP " + status + ")" : "") +
               ": this page's origin is not allowed (CELERY_WS_ALLOWED_ORIGINS), or the server is full",
    };
    if (status) {
      this._report(refused);
      return;
    }
    if (this._failedHandshakes < 2 || this._reported.handshake_refused || typeof fetch !== "function") return;
    fetch(httpUrl(this.url), { mode: "no-cors", cache: "no-store", credentials: "omit" }).then(function () {
      if (self._wanted && !(self._socket && self._socket._opened)) self._report(refused);
    }, noop);
  };

  // A token function's token is renewed before the server closes the connection
  // at its expiry: the connection moves to the fresh token and resumes.
  Client.prototype._scheduleRefresh = function (token) {
    var self = this;
    clearTimeout(this._refresher);
    this._refresher = null;
    var exp = tokenExpiry(token);
    if (exp === null) return;
    var life = Math.max(0, exp - Date.now());
    var delay = Math.min(Math.max(life * REFRESH_SHARE, life - REFRESH_MARGIN), 0x7fffffff);
    this._refresher = setTimeout(function () { self._refresh(); }, delay);
  };

  Client.prototype._refresh = function () {
    var self = this;
    var old = this._socket;
    this._refresher = null;
    if (!old || !this._wanted) return;   // not connected: the next connection asks for a token anyway
    Promise.resolve().then(function () { return self.token(); }).then(function (token) {
      if (!self._wanted || self._socket !== old) return;   // closed or reconnected meanwhile
      self._socket = null;
      self._ready = false;
      self._stopPinging();
      try { old.close(1000, "token renewed"); } catch (err) { /* already closing */ }
      self._openWith(token);   // resumes from lastEventId: nothing is missed in between
    }, function (err) {
      // keep this connection; when it closes at the expiry, reconnecting asks again
      self._report({ type: "error", code: "token_unavailable", message: String(err) });
    });
  };

  Client.prototype._scheduleReconnect = function () {
    var self = this;
    var base = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this._attempt));
    var delay = base / 2 + Math.random() * base / 2;   // jitter: 50-100 % of the step
    this._attempt = Math.min(this._attempt + 1, 30);
    this._setState("reconnecting");
    this._timer = setTimeout(function () { self._open(true); }, delay);
  };

  /** Close for good: no reconnect until connect() is called again. */
  Client.prototype.close = function () {
    this._wanted = false;
    if (this._timer) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    clearTimeout(this._refresher);
    this._refresher = null;
    this._stopPinging();
    var socket = this._socket;
    this._socket = null;
    this._ready = false;
    if (socket) {
      try { socket.close(1000, "client closed"); } catch (err) { /* already closing */ }
    }
    this._setState("closed");
  };

  Client.prototype._send = function (frame) {
    var socket = this._socket;
    if (!socket || socket.readyState !== 1) return false;
    socket.send(JSON.stringify(frame));
    return true;
  };

  /** Send now when connected and subscribed; else keep it for the next connection. */
  Client.prototype._sendOrQueue = function (frame) {
    if (this._ready && this._send(frame)) return true;
    if (this._queue.length >= QUEUE_LIMIT) this._queue.shift();
    this._queue.push(frame);
    return false;
  };

  Client.prototype._flushQueue = function () {
    var queue = this._queue;
    this._queue = [];
    for (var i = 0; i < queue.length; i++) {
      if (!this._send(queue[i])) {
        this._queue = queue.slice(i).concat(this._queue);
        return;
      }
    }
  };

  Client.prototype._subscribeFrame = function (key, value, since) {
    var frame = { action: "subscribe" };
    frame[key] = value;
    if (since) frame.last_event_id = since;
    return frame;
  };

  // On every connection: each subscription resumes from the last event seen
  // (a first connection from options.lastEventId, if any).
  Client.prototype._subscribeAll = function () {
    var since = this.lastEventId;
    if (!this.token) {
      this.userIds.forEach(function (u) { this._send(this._subscribeFrame("user_id", u, since)); }, this);
    }
    this.taskIds.forEach(function (t) { this._send(this._subscribeFrame("task_id", t, since)); }, this);
    this._ready = true;
    this._flushQueue();
  };

  /**
   * Follow a task or, in open mode, a user, from now on and across reconnects;
   * `{userId, taskId, lastEventId}`. A task's `state` (its latest progress,
   * step result and final event) comes first, through the usual callbacks, so
   * a page opened late shows where the task is; with `lastEventId` the events
   * after that one are replayed instead. Returns the client.
   */
  Client.prototype.subscribe = function (what) {
    var w = what || {};
    var since = parseEventId(w.lastEventId) ? w.lastEventId : null;
    if (w.userId != null && w.userId !== "") this._follow("user_id", this.userIds, String(w.userId), since);
    if (w.taskId != null && w.taskId !== "") this._follow("task_id", this.taskIds, String(w.taskId), since);
    return this;
  };

  Client.prototype._follow = function (key, ids, id, since) {
    if (ids.indexOf(id) >= 0) return;
    ids.push(id);
    if (this._ready) this._send(this._subscribeFrame(key, id, since));
  };

  /**
   * Answer a question: `proceed`, optional `feedback`, and for a typed question
   * (one with `answer_schema`) the answer's `data`, an object that fits the
   * schema (renderAnswerForm's value()). An answer that does not fit comes back
   * as an "invalid_answer" error naming its `fields`, the question still open.
   * Returns whether it was sent now (else it is queued for the next connection).
   */
  Client.prototype.confirm = function (callbackId, proceed, feedback, data) {
    var frame = { action: "confirm", callback_id: String(callbackId), proceed: !!proceed };
    if (feedback != null && feedback !== "") frame.feedback = String(feedback);
    if (data != null) frame.data = data;
    return this._sendOrQueue(frame);
  };

  /** Cancel a task. Returns whether it was sent now (else queued). */
  Client.prototype.cancel = function (taskId) {
    return this._sendOrQueue({ action: "cancel", task_id: String(taskId) });
  };

  Client.prototype._startPinging = function () {
    var self = this;
    this._stopPinging();
    if (!this.pingInterval) return;
    this._pinger = setInterval(function () {
      var socket = self._socket;
      if (!socket) return;
      if (Date.now() - self._lastFrameAt > 2 * self.pingInterval + 5000) {
        // nothing heard for two pings: the connection is dead without knowing it
        self._socket = null;
        self._ready = false;
        self._stopPinging();
        try { socket.close(4000, "no answer to ping"); } catch (err) { /* ignore */ }
        if (self._wanted) self._scheduleReconnect();
        return;
      }
      self._send({ action: "ping", timestamp: Date.now() });
    }, this.pingInterval);
  };

  Client.prototype._stopPinging = function () {
    if (this._pinger) clearInterval(this._pinger);
    this._pinger = null;
  };

  /** True the first time an id is seen; remembers the newest SEEN_LIMIT ids. */
  Client.prototype._firstSighting = function (id) {
    if (this._seen.has(id)) return false;
    this._seen.add(id);
    this._seenOrder.push(id);
    if (this._seenOrder.length > SEEN_LIMIT) this._seen.delete(this._seenOrder.shift());
    if (!this.lastEventId || compareEventIds(id, this.lastEventId) > 0) this.lastEventId = id;
    return true;
  };

  Client.prototype._receive = function (frame) {
    if (parseEventId(frame.id) && !this._firstSighting(frame.id)) return;  // a duplicate
    if (frame.requires_ack && frame.message_id != null) {
      this._send({ action: "ack", message_id: frame.message_id });
    }
    var type = frame.type;
    if (type === "authenticated") {
      this._subscribeAll();
    } else if (type === "subscription_confirmed" && frame.recovered === false) {
      this._call("onError", {
        type: "error", code: "history_lost", frame: frame,
        message: "Some events were lost while disconnected; reload to see the current state",
      });
    }
    var role = this._track(frame);
    if (role === "repeated") return;  // task_continued again (it is sent at least once)
    this._call("onEvent", frame);
    if (type === "task_progress") this._call("onProgress", frame);
    else if (type === "task_step_result") {
      this._call(frame.callback_id != null ? "onConfirmationRequest" : "onStepResult", frame);
    } else if (TERMINAL[type]) {
      if (role === "end") this._call("onDone", frame);
    } else if (type === WAITING) this._call("onWaiting", frame);
    else if (type === CONTINUED) this._call("onContinued", frame);
    else if (type === "confirmation_answered" || type === "confirmation_expired") {
      this._call("onConfirmationClosed", frame);
    } else if (type === "error") this._call("onError", frame);
    if (type === "subscription_confirmed" && frame.state && frame.recovered !== true) this._applyState(frame.state);
  };

  // A task subscription's state, through the callbacks live events take (not
  // after a resume that recovered the history: the replay carries the same
  // events, in order). A step result is a question only while it is open: the
  // server sends its callback_id as null once the question is closed, and a
  // final event closes every question of its task.
  Client.prototype._applyState = function (state) {
    var step = state.step_result;
    if (step && step.callback_id != null && state.final) step = Object.assign({}, step, { callback_id: null });
    [state.progress, step, state.final].forEach(function (event) {
      if (event && typeof event === "object") this._receive(event);
    }, this);
  };

  // -- typed answers: a form for a question's answer_schema -----------------------------

  var formCount = 0;

  /** A property's schema with `$ref`, a one-item `allOf` and `anyOf: [X, null]` resolved. */
  function fieldSchema(schema, root) {
    var s = schema || {};
    for (var hops = 0; hops < 8; hops++) {
      if (typeof s.$ref === "string") {
        var name = s.$ref.replace(/^#\/(\$defs|definitions)\//, "");
        var target = ((root.$defs || root.definitions || {})[name]) || {};
        s = Object.assign({}, target, s, { $ref: undefined });
      } else if (s.allOf && s.allOf.length === 1) {
        s = Object.assign({}, s.allOf[0], s, { allOf: undefined });
      } else if (s.anyOf) {
        var kinds = s.anyOf.filter(function (k) { return k.type !== "null"; });
        if (kinds.length !== 1) return s;
        s = Object.assign({}, kinds[0], s, { anyOf: undefined });
      } else {
        return s;
      }
    }
    return s;
  }

  /** What a field accepts, in words: shown next to a field the server refused. */
  function describe(s) {
    var parts = [];
    var choices = s.enum || (s.const !== undefined ? [s.const] : null);
    if (choices) parts.push("one of " + choices.map(String).join(", "));
    if (s.type === "integer") parts.push("a whole number");
    else if (s.type === "number") parts.push("a number");
    if (s.minimum != null) parts.push("at least " + s.minimum);
    if (s.exclusiveMinimum != null) parts.push("more than " + s.exclusiveMinimum);
    if (s.maximum != null) parts.push("at most " + s.maximum);
    if (s.exclusiveMaximum != null) parts.push("less than " + s.exclusiveMaximum);
    if (s.minLength != null) parts.push("at least " + s.minLength + " characters");
    if (s.maxLength != null) parts.push("at most " + s.maxLength + " characters");
    if (s.pattern != null) parts.push("matching " + s.pattern);
    var text = parts.join(", ");
    return text ? text.charAt(0).toUpperCase() + text.slice(1) : "Not accepted";
  }

  /**
   * Render a form for a typed question's `answer_schema` (the JSON schema of a
   * pydantic model) into `container`: strings, numbers and integers with their
   * bounds, booleans, enums (a select), required fields, defaults,
   * descriptions, and one level of nested objects (a fieldset); anything else
   * is a JSON text field. Returns a handle:
   *
   *   element                the form's root element
   *   value()                the answer's data, typed as the schema says, or
   *                          null when a field cannot be read (then the field
   *                          shows why: required and empty, not a number, bad JSON)
   *   showErrors(fields)     mark the fields an "invalid_answer" error names
   *                          (dotted paths, "address.city"), each with what it
   *                          accepts; returns those it has no input for (a
   *                          nested object's own name, "data"), for the caller
   *                          to show with the error's message
   *   clearErrors()
   *
   * Bounds, enums and patterns are the server's to check (it knows the schema
   * and names every field that does not fit); the form only refuses what it
   * cannot send. Empty optional fields are left out, so the model's defaults apply.
   */
  function renderAnswerForm(schema, container) {
    var doc = container.ownerDocument;
    var root = schema || {};
    var prefix = "cws-form-" + (++formCount);
    var fields = [];   // {path, schema, required, read(), node, error}

    function el(tag, className, text) {
      var node = doc.createElement(tag);
      if (className) node.className = className;
      if (text != null) node.textContent = String(text);
      return node;
    }

    function labelText(name, s, required) {
      return (s.title || name) + (required ? " *" : "");
    }

    function addField(parent, path, name, s, required) {
      var field = { path: path, schema: s, required: required };
      var box = el("div", "cws-field");
      box.dataset.field = path;
      var id = prefix + "-" + fields.length;
      var label = el("label", "cws-label", labelText(name, s, required));
      label.htmlFor = id;
      var control;
      var choices = s.enum || (s.const !== undefined ? [s.const] : null);
      if (choices) {
        control = el("select", "cws-input");
        if (!required || s.default === undefined) control.append(el("option", null, ""));
        choices.forEach(function (choice, i) {
          var option = el("option", null, String(choice));
          option.value = String(i);
          if (s.default !== undefined && choice === s.default) option.selected = true;
          control.append(option);
        });
        field.read = function () {
          if (control.value === "") return { missing: true };
          return { value: choices[Number(control.value)] };
        };
      } else if (s.type === "boolean") {
        control = el("input", "cws-input");
        control.type = "checkbox";
        control.checked = s.default === true;
        field.read = function () { return { value: control.checked }; };
      } else if (s.type === "integer" || s.type === "number") {
        control = el("input", "cws-input");
        control.type = "number";
        control.step = s.type === "integer" ? "1" : "any";
        if (s.minimum != null) control.min = String(s.minimum);
        if (s.maximum != null) control.max = String(s.maximum);
        if (typeof s.default === "number") control.value = String(s.default);
        field.read = function () {
          var text = control.value.trim();
          if (text === "") return control.validity && control.validity.badInput ? { problem: "Not a number" } : { missing: true };
          var number = Number(text);
          if (!isFinite(number)) return { problem: "Not a number" };
          if (s.type === "integer" && Math.floor(number) !== number) return { problem: "Not a whole number" };
          return { value: number };
        };
      } else if (s.type === "string" || (s.type === undefined && !s.properties)) {
        var free = s.type !== "string";   // no type: any JSON
        control = el(free ? "textarea" : "input", "cws-input");
        if (!free) {
          control.type = "text";
          if (s.maxLength != null) control.maxLength = s.maxLength;
        }
        if (s.default !== undefined && s.default !== null) {
          control.value = free ? JSON.stringify(s.default) : String(s.default);
        }
        field.read = function () {
          if (control.value === "") return { missing: true };
          if (!free) return { value: control.value };
          try { return { value: JSON.parse(control.value) }; } catch (err) { return { problem: "Not valid JSON" }; }
        };
      } else {   // arrays, objects nested deeper: JSON
        control = el("textarea", "cws-input cws-json");
        control.placeholder = "JSON";
        if (s.default !== undefined) control.value = JSON.stringify(s.default);
        field.read = function () {
          if (control.value.trim() === "") return { missing: true };
          try { return { value: JSON.parse(control.value) }; } catch (err) { return { problem: "Not valid JSON" }; }
        };
      }
      control.id = id;
      control.name = path;
      if (required) control.required = true;
      box.append(label, control);
      if (s.description) box.append(el("div", "cws-description", s.description));
      field.error = el("div", "cws-field-error");
      field.node = box;
      box.append(field.error);
      parent.append(box);
      fields.push(field);
      return field;
    }

    function addObject(parent, s, path, depth) {
      var required = s.required || [];
      var props = s.properties || {};
      var group = { fields: {}, objects: {} };
      Object.keys(props).forEach(function (name) {
        var child = fieldSchema(props[name], root);
        var childPath = path ? path + "." + name : name;
        var isRequired = required.indexOf(name) >= 0;
        if (child.properties && depth < 1) {
          var set = el("fieldset", "cws-object");
          set.dataset.field = childPath;
          set.append(el("legend", null, labelText(name, child, isRequired)));
          if (child.description) set.append(el("div", "cws-description", child.description));
          parent.append(set);
          group.objects[name] = { required: isRequired, group: addObject(set, child, childPath, depth + 1) };
        } else {
          group.fields[name] = addField(parent, childPath, name, child, isRequired);
        }
      });
      return group;
    }

    // {data, problems, empty}: empty when nothing in the group was filled in
    function collect(group) {
      var data = {}, problems = 0, empty = true;
      Object.keys(group.fields).forEach(function (name) {
        var field = group.fields[name];
        var got = field.read();
        field.error.textContent = "";
        field.node.classList.remove("cws-invalid");
        if (got.problem || (got.missing && field.required)) {
          field.error.textContent = got.problem || "Required";
          field.node.classList.add("cws-invalid");
          problems++;
        }
        if (!got.missing && !got.problem) {
          data[name] = got.value;
          if (field.schema.type !== "boolean") empty = false;
        }
      });
      Object.keys(group.objects).forEach(function (name) {
        var nested = collect(group.objects[name].group);
        if (!nested.empty || group.objects[name].required) {
          data[name] = nested.data;
          problems += nested.problems;
          empty = false;
        }
      });
      return { data: data, problems: problems, empty: empty };
    }

    var form = el("div", "cws-form");
    form.id = prefix;
    if (root.description) form.append(el("div", "cws-description", root.description));
    var top = addObject(form, fieldSchema(root, root), "", 0);
    container.append(form);

    function clearErrors() {
      fields.forEach(function (field) {
        field.error.textContent = "";
        field.node.classList.remove("cws-invalid");
      });
    }

    return {
      element: form,
      value: function () {
        var got = collect(top);
        return got.problems ? null : got.data;
      },
      showErrors: function (names) {
        clearErrors();
        return [].concat(names || []).filter(function (path) {
          var field = fields.filter(function (f) { return f.path === String(path); })[0];
          if (!field) return true;
          field.error.textContent = describe(field.schema);
          field.node.classList.add("cws-invalid");
          return false;
        });
      },
      clearErrors: clearErrors,
    };
  }

  return {
    Client: Client,
    compareEventIds: compareEventIds,
    parseEventId: parseEventId,
    workflowOf: workflowOf,
    tokenExpiry: tokenExpiry,
    renderAnswerForm: renderAnswerForm,
    SUBPROTOCOL: SUBPROTOCOL,
  };
});
