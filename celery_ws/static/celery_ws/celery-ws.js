/*
 * celery-ws browser client. Plain JavaScript, no dependencies, no build step:
 *
 *   <script src="/celery-ws.js"></script>
 *   <script>
 *     const ws = new CeleryWS.Client("ws://127.0.0.1:8765/", {
 *       userId: "user_123",                    // open mode; or token: "..." (token mode)
 *       onProgress(e) {}, onStepResult(e) {}, onConfirmationRequest(e) {},
 *       onWaiting(e) {}, onContinued(e) {}, onDone(e) {},
 *       onError(e) {}, onEvent(frame) {}, onStateChange(state) {},
 *     });
 *     ws.connect();
 *     ws.confirm(callbackId, true, "looks fine");
 *     ws.cancel(taskId);
 *   </script>
 *
 * It reconnects by itself (exponential backoff with jitter), resumes from the
 * last event it saw (`last_event_id`), drops events it has already delivered,
 * and answers `requires_ack` events. States: "connecting", "open",
 * "reconnecting", "closed".
 *
 * Workflows: a task that asks with `ask()` emits `task_waiting` (onWaiting:
 * waiting for the person's answer, not an end) and a continuation task carries
 * on under its own id once the answer is in (`task_continued`: onContinued,
 * once per continuation_id). Every event of a continuation carries
 * `workflow_id`, the first task's id: show events under
 * `CeleryWS.workflowOf(e)` (`e.workflow_id || e.task_id`). onDone fires once
 * per workflow, for the event that ends it, never for `task_waiting`.
 */
(function (global) {
  "use strict";

  var SUBPROTOCOL = "celery-ws.v1";
  var CLOSE_UNAUTHORIZED = 4401;
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
      self._call("onError", { type: "error", code: "token_unavailable", message: String(err) });
      if (self._wanted) self._scheduleReconnect();
    });
  };

  Client.prototype._openWith = function (token) {
    var self = this;
    var socket;
    try {
      socket = new WebSocket(this._socketUrl(token), [SUBPROTOCOL]);
    } catch (err) {
      this._call("onError", { type: "error", code: "invalid_url", message: String(err) });
      this._wanted = false;
      this._setState("closed");
      return;
    }
    this._socket = socket;
    socket.onopen = function () {
      if (self._socket !== socket) return;
      self._lastFrameAt = Date.now();
      self._setState("open");
      if (!self.token) self._subscribeAll();
      self._startPinging();
    };
    socket.onmessage = function (message) {
      if (self._socket !== socket) return;
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
        self._call("onError", { type: "error", code: "unauthorized", message: event.reason || "Unauthorized" });
      }
      if (!self._wanted) {
        self._setState("closed");
        return;
      }
      self._scheduleReconnect();
    };
    socket.onerror = function () { /* onclose follows and decides */ };
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

  Client.prototype._subscribeFrame = function (key, value) {
    var frame = { action: "subscribe" };
    frame[key] = value;
    if (this.lastEventId) frame.last_event_id = this.lastEventId;
    return frame;
  };

  Client.prototype._subscribeAll = function () {
    if (!this.token) {
      this.userIds.forEach(function (u) { this._send(this._subscribeFrame("user_id", u)); }, this);
    }
    this.taskIds.forEach(function (t) { this._send(this._subscribeFrame("task_id", t)); }, this);
    this._ready = true;
    this._flushQueue();
  };

  /** Follow another user (open mode) or task; kept across reconnects. */
  Client.prototype.subscribe = function (what) {
    var w = what || {};
    if (w.userId && this.userIds.indexOf(String(w.userId)) < 0) {
      this.userIds.push(String(w.userId));
      if (this._ready) this._send(this._subscribeFrame("user_id", String(w.userId)));
    }
    if (w.taskId && this.taskIds.indexOf(String(w.taskId)) < 0) {
      this.taskIds.push(String(w.taskId));
      if (this._ready) this._send(this._subscribeFrame("task_id", String(w.taskId)));
    }
  };

  /** Answer a confirmation request. Returns whether it was sent now (else queued). */
  Client.prototype.confirm = function (callbackId, proceed, feedback) {
    var frame = { action: "confirm", callback_id: String(callbackId), proceed: !!proceed };
    if (feedback != null && feedback !== "") frame.feedback = String(feedback);
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
  };

  global.CeleryWS = {
    Client: Client,
    compareEventIds: compareEventIds,
    parseEventId: parseEventId,
    workflowOf: workflowOf,
    SUBPROTOCOL: SUBPROTOCOL,
  };
})(typeof window !== "undefined" ? window : this);
