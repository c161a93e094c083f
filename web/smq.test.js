// Tests of smq.js with node's test runner: node --test web/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect, decode, encode, needsWarmUp, payloadBytes, RefusedError, SELF, Type } from "./smq.js";

const vectors = JSON.parse(readFileSync(new URL("./testdata/vectors.json", import.meta.url)));
const hex = (b) => Buffer.from(b).toString("hex");
const text = (b) => new TextDecoder().decode(b);

// Every message type smq.js uses, against the bytes the Go codec makes.
for (const v of vectors) {
  test(`encode and decode ${v.name}`, () => {
    const f = v.fields;
    const m = decode(Buffer.from(v.hex, "hex"));
    for (const [k, want] of Object.entries(f)) {
      const got = m[k];
      if (k === "payload" || k === "credentials") assert.equal(text(got), want, k);
      else assert.equal(got, want, k);
    }
    assert.equal(hex(encode(f.type, f)), v.hex);
  });
}

test("payloads: text, bytes, JSON", () => {
  assert.equal(text(payloadBytes("héllo")), "héllo");
  assert.deepEqual(payloadBytes(Uint8Array.of(1, 2)), Uint8Array.of(1, 2));
  assert.deepEqual(payloadBytes(Uint8Array.of(9, 8).buffer), Uint8Array.of(9, 8));
  assert.equal(text(payloadBytes({ on: true })), '{"on":true}');
});

test("malformed input is refused", () => {
  assert.throws(() => decode(new Uint8Array()), /empty/);
  assert.throws(() => decode(Uint8Array.of(Type.Publish, 0, 0)), /too short/);
  assert.throws(() => decode(Uint8Array.of(200)), /unknown message type 200/);
  assert.throws(() => encode(Type.Connect, { uid: "x".repeat(256) }), /at most 255/);
});

// FakeBroker is a WebSocket class whose peer is scripted: each message the
// client sends is decoded and given to onSend, which may answer.
function fakeWebSocket(onSend) {
  return class {
    constructor(url) {
      this.url = url;
      this.sent = [];
      FakeWS.last = this;
      queueMicrotask(() => this.deliver(encode(Type.Init, { seed: 7, ip: "203.0.113.9" })));
    }
    send(bytes) { this.sent.push(decode(bytes)); onSend(this, decode(bytes)); }
    deliver(bytes) { this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) }); }
    close(code = 1000) { // like a browser's: the close event comes once
      if (this.closing) return;
      this.closing = true;
      queueMicrotask(() => this.onclose?.({ code, reason: "" }));
    }
  };
}
const FakeWS = {};

test("a refused Connect rejects with the code and the reason", async () => {
  const WS = fakeWebSocket((ws, m) => {
    if (m.type === Type.Connect) ws.deliver(encode(Type.Connack, { code: 4, reason: "client certificate required: none presented" }));
  });
  await assert.rejects(connect("wss://gw/smq", { WebSocket: WS }), (err) => {
    assert.ok(err instanceof RefusedError);
    assert.equal(err.code, 4);
    assert.equal(err.codeName, "client certificate required");
    assert.equal(err.reason, "client certificate required: none presented");
    assert.match(err.message, /0x04 client certificate required/);
    return true;
  });
});

test("a session: IDs cached, publish, one-to-one, observe, Disconnect", async () => {
  const ids = { demo: 100, "demo/cmd": 200 };
  const WS = fakeWebSocket((ws, m) => {
    switch (m.type) {
      case Type.Connect:
        assert.equal(m.uid, "browser-uid");
        ws.deliver(encode(Type.Connack, { code: 0, etid: 55 }));
        break;
      case Type.Subscribe: ws.deliver(encode(Type.Suback, { id: ids[m.topic], topic: m.topic })); break;
      case Type.Create: ws.deliver(encode(Type.Createack, { id: ids[m.topic], topic: m.topic })); break;
      case Type.Observe: ws.deliver(encode(Type.Change, { id: m.id, count: 1 })); break;
    }
  });
  const c = await connect("wss://gw/smq", { WebSocket: WS, uid: "browser-uid" });
  assert.equal(c.etid, 55);
  assert.equal(c.ip, "203.0.113.9");
  const ws = FakeWS.last;
  const got = [];
  assert.equal(await c.subscribe("demo", (m) => got.push(m)), 100);
  await c.subscribe(SELF, (m) => got.push(m));
  ws.deliver(encode(Type.Publish, { tid: 100, ptid: 9, payload: '{"celsius":21.5}' }));
  ws.deliver(encode(Type.Publish, { tid: 55, ptid: 9, payload: "on" }));
  assert.equal(got[0].topic, "demo");
  assert.equal(got[0].ptid, 9);
  assert.deepEqual(got[0].json(), { celsius: 21.5 });
  assert.equal(got[1].topic, SELF);
  assert.equal(got[1].text(), "on");

  await c.publish("demo", { x: 1 });       // TID known from the Suback: no Create
  await c.publish("demo/cmd", "off");       // Create once
  await c.publish("demo/cmd", Uint8Array.of(1, 2, 3));
  await c.publishTo(9, "state?");
  const kinds = ws.sent.map((m) => m.type);
  assert.equal(kinds.filter((t) => t === Type.Create).length, 1);
  const pubs = ws.sent.filter((m) => m.type === Type.Publish);
  assert.deepEqual(pubs.map((m) => [m.tid, m.ptid, text(m.payload)]),
    [[100, 55, '{"x":1}'], [200, 55, "off"], [200, 55, "\u0001\u0002\u0003"], [9, 55, "state?"]]);

  const counts = [];
  await c.observe("demo", (n) => counts.push(n));
  assert.deepEqual(counts, [1]);

  // A Disconnect from the broker, then the close: the reason is kept.
  const ended = c.closed;
  ws.deliver(encode(Type.Disconnect, { reason: "shutdown" }));
  ws.close(1001);
  const err = await ended;
  assert.equal(err.reason, "shutdown");
  assert.equal(err.wsCode, 1001);
  await assert.rejects(c.publish("demo", "late"), /closed/);
});

test("the warm-up request: wss:// of another origin, or when asked", () => {
  const page = { origin: "http://127.0.0.1:8000", href: "http://127.0.0.1:8000/app/" };
  const console = { origin: "https://gw:8443", href: "https://gw:8443/smq" };
  assert.equal(needsWarmUp("wss://gw:8443/smq?x=1#y", "auto", page), "https://gw:8443/smq?x=1");
  assert.equal(needsWarmUp("wss://gw:8443/smq", undefined, page), "https://gw:8443/smq");
  assert.equal(needsWarmUp("wss://gw:8443/smq", "auto", console), "", "same origin: the page made the choice");
  assert.equal(needsWarmUp("wss://gw:8443/smq", true, console), "https://gw:8443/smq");
  assert.equal(needsWarmUp("wss://gw:8443/smq", false, page), "");
  assert.equal(needsWarmUp("ws://gw:9000/smq", true, page), "", "no TLS, no certificate");
  assert.equal(needsWarmUp("wss://gw/smq", "auto", undefined), "", "not in a page (Node)");
  assert.equal(needsWarmUp("not a url", true, undefined), "");
});

test("connect makes the warm-up request before the WebSocket, and goes on when it fails", async () => {
  for (const fails of [false, true]) {
    const events = [];
    const WS = fakeWebSocket((ws, m) => {
      if (m.type === Type.Connect) ws.deliver(encode(Type.Connack, { code: 0, etid: 1 }));
    });
    const Logged = class extends WS {
      constructor(url) { events.push("websocket " + url); super(url); }
    };
    const fetch = async (url, init) => {
      events.push(`fetch ${url} ${init.method} ${init.mode} ${init.credentials}`);
      if (fails) throw new TypeError("Failed to fetch");
      return { type: "opaque" };
    };
    const c = await connect("wss://gw:8443/smq", { WebSocket: Logged, fetch, warmUp: true });
    assert.equal(c.etid, 1);
    assert.deepEqual(events, ["fetch https://gw:8443/smq HEAD no-cors include", "websocket wss://gw:8443/smq"]);
  }
});

test("a URL the page's CSP blocks fails at once, not at the timeout", async () => {
  const doc = new EventTarget();
  globalThis.document = doc;
  try {
    const Silent = class { // Chromium's: connecting, no events
      constructor(url) { this.url = url; queueMicrotask(() => doc.dispatchEvent(Object.assign(new Event("securitypolicyviolation"), { blockedURI: "wss://gw:9000/smq", effectiveDirective: "connect-src" }))); }
      close() {}
    };
    await assert.rejects(connect("wss://gw:9000/smq", { WebSocket: Silent, timeout: 60000 }), (err) => {
      assert.equal(err.name, "ClosedError");
      assert.equal(err.blocked, true);
      assert.equal(err.opened, false);
      assert.match(err.message, /blocked by the page's Content-Security-Policy/);
      return true;
    });
  } finally {
    delete globalThis.document;
  }
});
