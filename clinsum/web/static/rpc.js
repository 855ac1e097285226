// A JSON-RPC 2.0 peer over one WebSocket: the page's twin of clinsum/client.py.
// Every frame in and out goes to `onFrame`, which feeds the protocol view.

export class RpcError extends Error {
  constructor(error) {
    super(error && typeof error.message === "string" ? error.message : "Unknown error");
    this.code = error ? error.code : undefined;
    this.data = error ? error.data : undefined;
  }
}

// The token travels as an offered subprotocol (browsers cannot set headers on a WebSocket),
// base64url without padding: clinsum/faces/base.py encode_bearer_subprotocol.
export function bearerSubprotocol(token) {
  const bytes = new TextEncoder().encode(token);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return "clinsum.bearer." + btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export class Connection {
  constructor(url, token, { onFrame, onClose }) {
    this.url = url;
    this.protocols = token ? ["clinsum", bearerSubprotocol(token)] : ["clinsum"];
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, onNotify}
    this.ws = null;
  }

  // Resolves once open; rejects if the server refuses or cannot be reached.
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, this.protocols);
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        resolve();
      };
      ws.onmessage = (event) => this.receive(event.data);
      ws.onclose = (event) => {
        for (const call of this.pending.values()) {
          call.reject(new Error("The connection to the server closed"));
        }
        this.pending.clear();
        if (opened) this.onClose(event);
        else reject(new Error("refused"));
      };
    });
  }

  receive(text) {
    this.onFrame("in", text);
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg === null || typeof msg !== "object" || Array.isArray(msg)) return;
    if (typeof msg.method === "string" && !("id" in msg)) {
      const params = msg.params || {};
      const call = this.pending.get(params.request_id);
      if (call && call.onNotify) call.onNotify(msg.method, params);
      return;
    }
    const call = this.pending.get(msg.id);
    if (!call) return; // cancelled here, or not ours
    this.pending.delete(msg.id);
    if ("error" in msg) call.reject(new RpcError(msg.error));
    else call.resolve(msg.result);
  }

  send(message) {
    const text = JSON.stringify(message);
    this.onFrame("out", text);
    this.ws.send(text);
  }

  // Returns {id, result}: `result` settles with the reply; `onNotify(method, params)` gets
  // the request's notifications (stream_token, stream_queued) as they arrive.
  call(method, params, onNotify) {
    const id = this.nextId++;
    const result = new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onNotify });
    });
    this.send({ jsonrpc: "2.0", id, method, params });
    return { id, result };
  }

  // Stops a running request on the server; MCP says it then gets no reply, so it is settled
  // here as cancelled.
  cancel(id) {
    const call = this.pending.get(id);
    this.send({
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId: id, reason: "cancelled by the user" },
    });
    if (call) {
      this.pending.delete(id);
      const err = new Error("Cancelled");
      err.cancelled = true;
      call.reject(err);
    }
  }

  close() {
    if (this.ws) this.ws.close();
  }
}
