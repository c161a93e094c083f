// The smqgw console: connect over the page's own origin, subscribe,
// publish, watch messages and subscriber counts.
// smq.js is at this route's path too (a module specifier cannot be a bare
// "?query", and the route's name is not known here).
const { connect, ClosedError, RefusedError, SELF } = await import(location.pathname + "?console=smq.js");

const $ = (id) => document.getElementById(id);
let client = null;
const messages = []; // {time, topic, ptid, payload}

// The URL field starts at the route the page was served from: the
// console is served on the route's own path, by the same listener.
const wsURL = () => (location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname;
$("url").value = wsURL();

// A browser tells a page nothing of why a WebSocket did not open (error,
// then close 1006). The console finds out what it can: the URL against the
// page (ws:// from https:// is mixed content); the page's own policy (the
// gateway serves the console with CSP connect-src 'self': another host or
// port is blocked, and smq.js says so); then a GET of the
// same URL over http(s): answered, the WebSocket itself was refused
// (route, origin); not answered, nothing answers there or (another origin,
// wss://) its certificate is not trusted, which a page cannot tell apart.

const useURL = () => `Use a ws:// or wss:// URL, e.g. ${wsURL()}`;

// precheck returns the case of a URL the browser would not even try, or null.
function precheck(url) {
  let u;
  try { u = new URL(url); } catch {
    return { kase: "bad-url", text: `"${url}" is not a URL`, hint: useURL() };
  }
  if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    return { kase: "bad-url", text: `${u.protocol}// is not a WebSocket URL`, hint: useURL() };
  }
  if (location.protocol === "https:" && u.protocol === "ws:") {
    const secure = new URL(u); secure.protocol = "wss:";
    return {
      kase: "mixed-content", text: "a page loaded over https:// may not open a ws:// WebSocket (mixed content)",
      hint: `Use wss:// (a TLS listener of smqgw), e.g. ${secure.href}, or open the console of a plain listener over http://.`,
    };
  }
  return null;
}

// answers reports whether a request to url gets an answer: its status and
// text when the page may read them (same origin), status 0 when opaque,
// -1 for none.
async function answers(url) {
  const sameOrigin = new URL(url).origin === location.origin;
  try {
    const r = await fetch(url, { mode: sameOrigin ? "same-origin" : "no-cors",
      credentials: "include", cache: "no-store", signal: AbortSignal.timeout(5000) });
    return { status: r.status, text: sameOrigin ? await r.text() : "" };
  } catch { return { status: -1, text: "" }; }
}

// diagnose tells why url's WebSocket did not open; blocked: by the
// page's CSP.
async function diagnose(url, blocked) {
  const u = new URL(url);
  const tls = u.protocol === "wss:";
  const http = new URL(u); http.protocol = tls ? "https:" : "http:"; http.hash = "";
  const trustHint = "a certificate warning there means this browser does not trust the gateway's certificate: import its CA (ca.pem) as an authority for websites";
  if (blocked) {
    return { kase: "other-listener", text: `this console connects only to the listener that served it (${location.host}), not to ${u.host}`,
      hint: `Wrong port? This page came from ${location.host}. To use ${u.host}, open its own console, ${http.origin}${u.pathname} (a route with console = true); ${trustHint}.` };
  }
  // smqgw answers a plain GET of a path that is no route "no SMQ route
  // here", and of a route (without the console) "not an SMQ request".
  const { status, text } = await answers(http.href);
  if (status === 404 && text.includes("no SMQ route")) {
    return { kase: "no-route", text: `${u.host} answers, but ${u.pathname} is not an SMQ route`,
      hint: `Use the path of a route (smqgw's banner and configuration list them), e.g. ${wsURL()}` };
  }
  if (status >= 0) {
    return { kase: "websocket-refused", text: `${http.origin} answers, but refused the WebSocket`,
      hint: `Is ${u.pathname} a route of that listener, and is this page's origin (${location.origin}) allowed on it (allowed_origins)? smqgw's log says which.` };
  }
  if (http.origin === location.origin) {
    return { kase: "unreachable", text: `smqgw at ${u.host} does not answer any more`,
      hint: "It served this page: was it stopped or restarted? Reload the page when it is back." };
  }
  return { kase: "unreachable", text: `nothing answers at ${http.origin}`,
    hint: tls ? `Open ${http.origin}/ in a tab: "can't be reached" means a wrong port or host, or smqgw not running; ${trustHint}.`
      : "Wrong port or host, or smqgw is not running: its banner lists its listeners." };
}

const hexOf = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
const etidText = (n) => "0x" + n.toString(16).padStart(8, "0");

function setStatus(text, kind, hint = "", kase = "") {
  const s = $("status");
  s.textContent = text;
  s.className = kind;
  s.dataset.state = kind;
  s.dataset.case = kase;
  $("status-hint").textContent = hint;
}

function setConnected(on) {
  $("connect").disabled = on;
  $("disconnect").disabled = !on;
  $("subscribe").disabled = !on;
  $("publish").disabled = !on;
}

function show(payload) {
  const view = $("view").value;
  const text = new TextDecoder().decode(payload);
  if (view === "hex") return hexOf(payload);
  if (view === "json") {
    try { return JSON.stringify(JSON.parse(text), null, 1); } catch { return text + "  (not JSON)"; }
  }
  return text;
}

function render() {
  const body = $("messages");
  body.replaceChildren(...messages.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.topic = m.topic;
    tr.dataset.ptid = String(m.ptid);
    const cells = [m.time, m.topic, etidText(m.ptid), show(m.payload)];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      td.className = ["time", "topic", "ptid", "payload"][i];
      if (i === 2) td.title = "click: publish to this sender";
      tr.append(td);
    });
    return tr;
  }));
}

function received(m) {
  messages.unshift({ time: new Date().toLocaleTimeString(), topic: m.topic, ptid: m.ptid, payload: m.payload });
  if (messages.length > 500) messages.length = 500;
  render();
}

async function subscribe(topic) {
  if (!topic || document.querySelector(`#subs li[data-topic="${CSS.escape(topic)}"]`)) return;
  await client.subscribe(topic, received);
  const li = document.createElement("li");
  li.dataset.topic = topic;
  const count = document.createElement("span");
  count.className = "count";
  count.textContent = "?";
  const drop = document.createElement("button");
  drop.textContent = "Unsubscribe";
  drop.onclick = () => { client.unsubscribe(topic); client.unobserve(topic).catch(() => {}); li.remove(); };
  li.append(topic + " — subscribers: ", count, " ", drop);
  $("subs").append(li);
  await client.observe(topic, (n) => { count.textContent = String(n); li.dataset.count = String(n); });
}

$("connect").onclick = async () => {
  const url = $("url").value.trim();
  const bad = precheck(url);
  if (bad) { setStatus(`Cannot connect: ${bad.text}.`, "error", bad.hint, bad.kase); return; }
  setStatus("Connecting…", "pending");
  $("connect").disabled = true;
  $("status").dataset.code = "";
  try {
    client = await connect(url, { uid: $("uid").value || undefined });
  } catch (err) {
    if (err instanceof RefusedError) {
      setStatus(`Refused: Connack 0x${err.code.toString(16).padStart(2, "0")} ${err.codeName}` +
        (err.reason ? ` — ${err.reason}` : ""), "refused");
      $("status").dataset.code = String(err.code);
    } else if (err instanceof ClosedError && !err.opened) {
      setStatus("Cannot connect: finding out why…", "pending");
      const d = await diagnose(url, err.blocked);
      setStatus(`Cannot connect: ${d.text}.`, "error", d.hint, d.kase);
    } else {
      setStatus(`Cannot connect: ${err.message}`, "error");
    }
    $("connect").disabled = false;
    return;
  }
  setStatus(`Connected: Connack 0x00 accepted — ETID ${etidText(client.etid)}, seen as ${client.ip}`, "ok");
  $("status").dataset.code = "0";
  $("status").dataset.etid = String(client.etid);
  setConnected(true);
  client.onclose = (err) => {
    setConnected(false);
    setStatus(`Disconnected${err.reason ? ": " + err.reason : ""} (WebSocket ${err.wsCode})`, "error");
    $("subs").replaceChildren();
  };
  await client.subscribe(SELF, received);
  await subscribe($("sub-topic").value);
};

$("disconnect").onclick = () => client?.close();
$("subscribe").onclick = () => subscribe($("sub-topic").value).catch((e) => setStatus(e.message, "error"));

$("publish").onclick = async () => {
  const raw = $("pub-payload").value;
  let data;
  try {
    switch ($("pub-format").value) {
      case "json": data = JSON.parse(raw); break;
      case "hex": data = Uint8Array.from(raw.replace(/[^0-9a-f]/gi, "").match(/../g) ?? [], (h) => parseInt(h, 16)); break;
      default: data = raw;
    }
  } catch (e) {
    $("pub-status").textContent = `Not ${$("pub-format").value}: ${e.message}`;
    return;
  }
  const etid = $("pub-etid").value.trim();
  try {
    if (etid) await client.publishTo(Number(etid), data);
    else await client.publish($("pub-topic").value, data);
    $("pub-status").textContent = "sent";
  } catch (e) {
    $("pub-status").textContent = e.message;
  }
};

$("messages").onclick = (ev) => {
  const td = ev.target.closest("td.ptid");
  if (td) $("pub-etid").value = etidText(Number(td.parentElement.dataset.ptid));
};
$("view").onchange = render;
$("clear").onclick = () => { messages.length = 0; render(); };

// For scripts and tests: the page is wired up.
document.body.dataset.ready = "1";
