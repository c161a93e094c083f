// smq.js — a small SMQ client for browsers (and Node with a WebSocket):
// one SMQ message per binary WebSocket message, as SMQ brokers and smqgw
// speak it. Plain ES module, no dependencies, no build step.
//
//   import { connect } from "./smq.js";
//   const c = await connect("wss://gw.example.com/smq");
//   await c.subscribe("sensors/temp", (m) => console.log(m.topic, m.ptid, m.text()));
//   await c.publish("sensors/temp", { celsius: 21.5 });   // objects go as JSON
//   await c.publishTo(etid, "on");                          // one-to-one, to a client's ETID
//
// A refused connection rejects with a RefusedError that carries the
// Connack code, its name and the reason the broker or gateway gave.
//
// Pages of another origin and client certificates (Chromium, Edge): when
// a gateway asks for a client certificate (a route with client_auth),
// Chromium cancels a WebSocket handshake unless it has already chosen a
// certificate (or none) for that host:port: it neither prompts nor applies
// AutoSelectCertificateForUrls for a WebSocket (the close is 1006, "opening
// handshake was canceled", and the gateway sees no session). A page served
// by the gateway made that choice when it loaded; a page of another origin
// has not. So connect first makes one credentialed request to the
// gateway's https origin (HEAD of the wss URL, mode "no-cors"), which goes
// through Chromium's normal choice (prompt, policy, or none), and the
// WebSocket then reuses it. That is the warmUp option:
//   warmUp: "auto" (the default) — for a wss:// URL whose origin is not the
//           page's (location.origin), in a page with fetch;
//   warmUp: true  — before every wss:// URL;
//   warmUp: false — never (Node, or a page that made the request itself).
// A failed warm-up is not an error by itself: the WebSocket is tried and
// fails or succeeds on its own. Firefox needs none of this; it costs one
// short request, once per connect.

export const Type = Object.freeze({
  Init: 1, Connect: 2, Connack: 3, Subscribe: 4, Suback: 5, Create: 6, Createack: 7,
  Publish: 8, Unsubscribe: 9, Disconnect: 11, Ping: 12, Pong: 13, Observe: 14,
  Unobserve: 15, Change: 16, Createsub: 17, Createsuback: 18,
});

// The names of the Connack codes.
export const CONNACK = Object.freeze({
  0: "accepted", 1: "bad protocol version", 2: "server unavailable",
  3: "incorrect credentials", 4: "client certificate required",
  5: "client certificate not accepted", 6: "access denied",
});

// The topic name under which one-to-one messages (sent to this client's
// ETID) are delivered.
export const SELF = "self";

const utf8 = new TextEncoder();
const fromUTF8 = new TextDecoder();

// RefusedError is a Connack other than 0x00.
export class RefusedError extends Error {
  constructor(code, reason) {
    const name = CONNACK[code] ?? "unknown code";
    super(`connection refused: 0x${hex2(code)} ${name}${reason ? ": " + reason : ""}`);
    this.name = "RefusedError";
    this.code = code;
    this.codeName = name;
    this.reason = reason;
  }
}

// ClosedError ends a session: the broker's Disconnect reason, or the
// WebSocket close.
export class ClosedError extends Error {
  constructor(message, { reason = "", code = 0, opened = true, blocked = false } = {}) {
    super(message);
    this.name = "ClosedError";
    this.reason = reason;
    this.wsCode = code;
    this.opened = opened; // false: the WebSocket never opened (browsers do not say why)
    this.blocked = blocked; // true: the page's Content-Security-Policy (connect-src) forbids the URL
  }
}

function hex2(n) { return n.toString(16).padStart(2, "0"); }

// payloadBytes turns what publish is given into bytes: a string as UTF-8,
// bytes as they are, anything else as JSON.
export function payloadBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (typeof data === "string") return utf8.encode(data);
  return utf8.encode(JSON.stringify(data));
}

function str8(s) {
  const b = typeof s === "string" ? utf8.encode(s) : (s ?? new Uint8Array());
  if (b.length > 255) throw new RangeError(`smq: ${b.length} bytes, at most 255 fit`);
  return b;
}

// encode returns one message (type byte + body) as bytes. m holds the
// fields of its type, named as in decode's results.
export function encode(type, m = {}) {
  const parts = [];
  const u8 = (v) => parts.push(Uint8Array.of(v));
  const u32 = (v) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v >>> 0); parts.push(b); };
  const bytes = (b) => parts.push(b);
  u8(type);
  switch (type) {
    case Type.Connect: {
      const uid = str8(m.uid), cred = str8(m.credentials);
      u8(1); u8(uid.length); bytes(uid); u8(cred.length); bytes(cred);
      if (m.info) bytes(utf8.encode(m.info));
      break;
    }
    case Type.Subscribe: case Type.Create: case Type.Createsub:
      bytes(utf8.encode(m.topic ?? ""));
      break;
    case Type.Publish:
      u32(m.tid); u32(m.ptid); u32(m.subtid ?? 0); bytes(payloadBytes(m.payload ?? new Uint8Array()));
      break;
    case Type.Unsubscribe: u32(m.tid); break;
    case Type.Observe: case Type.Unobserve: u32(m.id); break;
    case Type.Disconnect: if (m.reason) bytes(utf8.encode(m.reason)); break;
    case Type.Ping: case Type.Pong: break;
    case Type.Init: u8(m.version ?? 1); u32(m.seed); bytes(utf8.encode(m.ip ?? "")); break;
    case Type.Connack: u8(m.code); u32(m.etid ?? 0); if (m.reason) bytes(utf8.encode(m.reason)); break;
    case Type.Suback: case Type.Createack: case Type.Createsuback:
      u8(m.status ?? 0); u32(m.id); bytes(utf8.encode(m.topic ?? ""));
      break;
    case Type.Change: u32(m.id); u32(m.count); break;
    default: throw new RangeError(`smq: cannot encode message type ${type}`);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

// decode parses one message (type byte + body). It throws on a message
// too short for its type.
export function decode(buf) {
  const b = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  if (b.length < 1) throw new RangeError("smq: empty message");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const type = b[0];
  const need = (n) => { if (b.length < 1 + n) throw new RangeError(`smq: message type ${type} of ${b.length} bytes is too short`); };
  const text = (from) => fromUTF8.decode(b.subarray(from));
  switch (type) {
    case Type.Init: need(5); return { type, version: b[1], seed: dv.getUint32(2), ip: text(6) };
    case Type.Connack: need(5); return { type, code: b[1], etid: dv.getUint32(2), reason: text(6) };
    case Type.Suback: case Type.Createack: case Type.Createsuback:
      need(5); return { type, status: b[1], id: dv.getUint32(2), topic: text(6) };
    case Type.Publish:
      need(12);
      return { type, tid: dv.getUint32(1), ptid: dv.getUint32(5), subtid: dv.getUint32(9), payload: b.slice(13) };
    case Type.Change: need(8); return { type, id: dv.getUint32(1), count: dv.getUint32(5) };
    case Type.Disconnect: return { type, reason: text(1) };
    case Type.Ping: case Type.Pong: return { type };
    case Type.Subscribe: case Type.Create: case Type.Createsub: return { type, topic: text(1) };
    case Type.Unsubscribe: need(4); return { type, tid: dv.getUint32(1) };
    case Type.Observe: case Type.Unobserve: need(4); return { type, id: dv.getUint32(1) };
    case Type.Connect: {
      need(3);
      let at = 2;
      const uid = b.subarray(at + 1, at + 1 + b[at]); at += 1 + b[at];
      need(at);
      const cred = b.subarray(at + 1, at + 1 + b[at]); at += 1 + b[at];
      return { type, version: b[1], uid: fromUTF8.decode(uid), credentials: cred.slice(), info: text(at) };
    }
  }
  throw new RangeError(`smq: unknown message type ${type}`);
}

// Message is what subscription handlers get.
export class Message {
  constructor(topic, m, subtopic) {
    this.topic = topic;       // the topic's name, or SELF for a one-to-one message
    this.tid = m.tid;
    this.ptid = m.ptid;       // the sender's ETID: reply with publishTo(m.ptid, ...)
    this.subtid = m.subtid;
    this.subtopic = subtopic; // the sub-topic's name, when this client created it
    this.payload = m.payload; // Uint8Array
  }
  text() { return fromUTF8.decode(this.payload); }
  json() { return JSON.parse(this.text()); }
}

function randomUID() {
  const b = new Uint8Array(8);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(b);
  else for (let i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256);
  return "web-" + Array.from(b, hex2).join("");
}

// needsWarmUp reports whether connect makes the warm-up request for url
// (see warmUp above): the https:// URL to request, or "" for none.
export function needsWarmUp(url, warmUp = "auto", page = globalThis.location) {
  if (warmUp === false) return "";
  let u;
  try { u = new URL(url, page?.href); } catch { return ""; }
  if (u.protocol !== "wss:") return "";
  u.protocol = "https:";
  u.hash = "";
  if (warmUp === "auto" && (!page?.origin || u.origin === page.origin)) return "";
  return u.href;
}

// warmUpRequest makes the credentialed request to the gateway's https
// origin, and resolves once it is answered or failed (or after timeout).
async function warmUpRequest(url, fetchFn, timeout) {
  const ctl = typeof AbortController === "function" ? new AbortController() : null;
  const timer = setTimeout(() => ctl?.abort(), timeout);
  try {
    await fetchFn(url, { method: "HEAD", mode: "no-cors", credentials: "include", cache: "no-store", signal: ctl?.signal });
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

// connect opens a session: the WebSocket, the broker's Init, Connect, and
// its Connack. It resolves to a Client, or rejects with a RefusedError
// (Connack other than 0x00) or an Error naming what failed. opts: uid,
// credentials, info (the Connect's fields), timeout (ms, 10000), warmUp
// (above), WebSocket and fetch (for Node or tests).
export async function connect(url, opts = {}) {
  const timeout = opts.timeout ?? 10000;
  const fetchFn = opts.fetch ?? globalThis.fetch;
  const warm = fetchFn ? needsWarmUp(url, opts.warmUp ?? "auto") : "";
  if (warm) await warmUpRequest(warm, fetchFn, timeout);
  return open(url, opts, timeout);
}

function open(url, opts, timeout) {
  const WS = opts.WebSocket ?? globalThis.WebSocket;
  return new Promise((resolve, reject) => {
    let ws;
    try { ws = new WS(url); } catch (e) { reject(e); return; }
    ws.binaryType = "arraybuffer";
    let init = null, done = false;
    // A URL the page's CSP forbids: Chromium reports the violation but
    // leaves the WebSocket connecting (no close for seconds); fail now.
    const doc = globalThis.document;
    const violation = (ev) => {
      let host = "";
      try { host = new URL(ev.blockedURI).host; } catch { return; }
      if (host === new URL(ws.url).host && (ev.effectiveDirective ?? ev.violatedDirective ?? "").startsWith("connect-src")) {
        fail(new ClosedError(`smq: ${url} is blocked by the page's Content-Security-Policy (connect-src)`, { code: 1006, opened: false, blocked: true }));
      }
    };
    doc?.addEventListener?.("securitypolicyviolation", violation);
    const fail = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      doc?.removeEventListener?.("securitypolicyviolation", violation);
      reject(err);
      try { ws.close(); } catch { /* closed */ }
    };
    const timer = setTimeout(() => fail(new Error(`smq: no Connack within ${timeout} ms`)), timeout);
    // A WebSocket that cannot open fires error, then close (1006): the
    // close carries the code. Browsers tell a page no more than that (not
    // a refused port from an untrusted certificate or a 403).
    let opened = false;
    ws.onopen = () => { opened = true; };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      const code = `WebSocket ${ev.code}${ev.reason ? " " + ev.reason : ""}`;
      fail(new ClosedError(opened || init ? `smq: connection closed during the handshake (${code})` : `smq: cannot open ${url} (${code})`,
        { code: ev.code, reason: ev.reason, opened: opened || !!init }));
    };
    ws.onmessage = (ev) => {
      opened = true;
      let m;
      try { m = decode(new Uint8Array(ev.data)); } catch (e) { fail(e); return; }
      if (!init) {
        if (m.type !== Type.Init) { fail(new Error(`smq: expected Init, got message type ${m.type}`)); return; }
        init = m;
        ws.send(encode(Type.Connect, { uid: opts.uid ?? randomUID(), credentials: opts.credentials, info: opts.info }));
        return;
      }
      if (m.type !== Type.Connack) { fail(new Error(`smq: expected Connack, got message type ${m.type}`)); return; }
      if (m.code !== 0) { fail(new RefusedError(m.code, m.reason)); return; }
      done = true;
      clearTimeout(timer);
      doc?.removeEventListener?.("securitypolicyviolation", violation);
      resolve(new Client(ws, init, m.etid, opts));
    };
  });
}

// Client is an open SMQ session. Create it with connect.
export class Client {
  constructor(ws, init, etid, opts = {}) {
    this.ws = ws;
    this.etid = etid;         // this client's ID: others send to it with publishTo
    this.seed = init.seed;
    this.ip = init.ip;        // this client's address as the broker sees it
    this.timeout = opts.timeout ?? 10000;
    this.ids = new Map();     // "kind:name" → ID, learned from acks
    this.pending = new Map(); // "kind:name" → [resolve, reject][]
    this.handlers = new Map(); // tid → {topic, fn}
    this.subNames = new Map(); // sub-topic ID → name
    this.observers = new Map(); // id → fn
    this.onclose = null;      // called once with a ClosedError when the session ends
    this.closed = new Promise((resolve) => { this._closed = resolve; });
    ws.onmessage = (ev) => this._receive(new Uint8Array(ev.data));
    ws.onclose = (ev) => this._end(new ClosedError(`smq: connection closed (WebSocket ${ev.code}${ev.reason ? " " + ev.reason : ""})`, { code: ev.code, reason: this._bye ?? ev.reason }));
    ws.onerror = () => {};
  }

  _send(type, m) {
    if (this._ended) throw this._ended;
    this.ws.send(encode(type, m));
  }

  _receive(bytes) {
    let m;
    try { m = decode(bytes); } catch { return; } // a broker does not send those
    switch (m.type) {
      case Type.Publish: {
        const h = this.handlers.get(m.tid) ?? (m.tid === this.etid ? this.handlers.get(this.etid) : undefined);
        if (h) h.fn(new Message(h.topic, m, this.subNames.get(m.subtid)));
        break;
      }
      case Type.Suback: this._ack("s", m); break;
      case Type.Createack: this._ack("c", m); break;
      case Type.Createsuback: this._ack("u", m); break;
      case Type.Change: { const fn = this.observers.get(m.id); if (fn) fn(m.count, m.id); break; }
      case Type.Ping: this._send(Type.Pong, {}); break;
      case Type.Disconnect: this._bye = m.reason; break;
    }
  }

  _ack(kind, m) {
    const key = kind + ":" + m.topic;
    const waiting = this.pending.get(key) ?? [];
    this.pending.delete(key);
    if (m.status !== 0) {
      for (const [, reject] of waiting) reject(new Error(`smq: ${{ s: "Subscribe", c: "Create", u: "Createsub" }[kind]} ${JSON.stringify(m.topic)} denied`));
      return;
    }
    this.ids.set(key, m.id);
    if (kind === "u") this.subNames.set(m.id, m.topic);
    for (const [resolve] of waiting) resolve(m.id);
  }

  // _request sends Subscribe (s), Create (c) or Createsub (u) for name
  // unless its ID is known, and resolves to the ID.
  _request(kind, name) {
    const key = kind + ":" + name;
    if (this.ids.has(key)) return Promise.resolve(this.ids.get(key));
    if (kind === "c" && this.ids.has("s:" + name)) return Promise.resolve(this.ids.get("s:" + name));
    return new Promise((resolve, reject) => {
      let timer = null;
      const entry = [
        (id) => { clearTimeout(timer); resolve(id); },
        (err) => { clearTimeout(timer); reject(err); },
      ];
      timer = setTimeout(() => {
        const list = this.pending.get(key);
        if (list?.includes(entry)) {
          list.splice(list.indexOf(entry), 1);
          if (list.length === 0) this.pending.delete(key);
          reject(new Error(`smq: no answer to ${JSON.stringify(name)} within ${this.timeout} ms`));
        }
      }, this.timeout);
      const list = this.pending.get(key);
      if (list) { list.push(entry); return; }
      this.pending.set(key, [entry]);
      try {
        this._send({ s: Type.Subscribe, c: Type.Create, u: Type.Createsub }[kind], { topic: name });
      } catch (e) { this.pending.delete(key); entry[1](e); }
    });
  }

  // create resolves to a topic's ID (TID), asking the broker once.
  create(topic) { return this._request("c", topic); }

  // createsub resolves to a sub-topic's ID.
  createsub(name) { return this._request("u", name); }

  // subscribe calls fn(message) for each message of topic, and resolves to
  // its TID. SELF subscribes to the messages sent to this client's ETID.
  async subscribe(topic, fn) {
    if (topic === SELF) { this.handlers.set(this.etid, { topic: SELF, fn }); return this.etid; }
    const tid = await this._request("s", topic);
    this.handlers.set(tid, { topic, fn });
    return tid;
  }

  // unsubscribe stops the messages of topic.
  unsubscribe(topic) {
    if (topic === SELF) { this.handlers.delete(this.etid); return; }
    const tid = this.ids.get("s:" + topic);
    if (tid === undefined) return;
    this.handlers.delete(tid);
    this.ids.delete("s:" + topic);
    this._send(Type.Unsubscribe, { tid });
  }

  // publish sends data (string, bytes, or anything as JSON) to topic.
  async publish(topic, data, { subtopic } = {}) {
    const tid = await this.create(topic);
    const subtid = subtopic ? await this.createsub(subtopic) : 0;
    this._send(Type.Publish, { tid, ptid: this.etid, subtid, payload: data });
  }

  // publishTo sends data to the one client with ETID etid.
  async publishTo(etid, data, { subtopic } = {}) {
    const subtid = subtopic ? await this.createsub(subtopic) : 0;
    this._send(Type.Publish, { tid: etid, ptid: this.etid, subtid, payload: data });
  }

  // observe calls fn(count) with the number of subscribers of topic now
  // and at each change; given a number, it observes that client's ETID
  // (fn(0) when it goes).
  async observe(topicOrEtid, fn) {
    const id = typeof topicOrEtid === "number" ? topicOrEtid : await this.create(topicOrEtid);
    this.observers.set(id, fn);
    this._send(Type.Observe, { id });
    return id;
  }

  async unobserve(topicOrEtid) {
    const id = typeof topicOrEtid === "number" ? topicOrEtid : await this.create(topicOrEtid);
    this.observers.delete(id);
    this._send(Type.Unobserve, { id });
  }

  // close ends the session with Disconnect.
  close() {
    if (this._ended) return;
    try { this._send(Type.Disconnect, {}); } catch { /* already gone */ }
    this.ws.close(1000);
  }

  _end(err) {
    if (this._ended) return;
    this._ended = err;
    for (const list of this.pending.values()) for (const [, reject] of list) reject(err);
    this.pending.clear();
    this._closed(err);
    if (this.onclose) this.onclose(err);
  }
}
