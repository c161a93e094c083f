// The smqgw console: connect over the page's own origin, subscribe,
// publish, watch messages and subscriber counts.
// smq.js is at this route's path too (a module specifier cannot be a bare
// "?query", and the route's name is not known here).
const { connect, RefusedError, SELF } = await import(location.pathname + "?console=smq.js");

const $ = (id) => document.getElementById(id);
let client = null;
const messages = []; // {time, topic, ptid, payload}

const wsURL = () => (location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname;
$("url").value = wsURL();

const hexOf = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
const etidText = (n) => "0x" + n.toString(16).padStart(8, "0");

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.className = kind;
  s.dataset.state = kind;
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
  setStatus("Connecting…", "pending");
  $("connect").disabled = true;
  try {
    client = await connect($("url").value, { uid: $("uid").value || undefined });
  } catch (err) {
    $("connect").disabled = false;
    if (err instanceof RefusedError) {
      setStatus(`Refused: Connack 0x${err.code.toString(16).padStart(2, "0")} ${err.codeName}` +
        (err.reason ? ` — ${err.reason}` : ""), "refused");
      $("status").dataset.code = String(err.code);
    } else {
      setStatus(`Cannot connect: ${err.message}`, "error");
    }
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
