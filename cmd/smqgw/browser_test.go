package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/browser"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/web"
)

// TestBrowserConsole drives the console in headless Chromium against a
// real smqgw: without a client certificate the page shows Connack 0x04
// and its reason; with one (from an NSS database, picked by policy) it
// connects, receives the demo device's readings over plaintext raw SMQ,
// and a command typed in the page reaches the device, whose answer shows
// in the page; a page of another origin allowed on a route connects
// with smq.js's warm-up (with the certificate, or refused with 0x04
// without), and without it Chromium cancels the handshake (1006); a page
// from an origin not allowed cannot open the WebSocket.
// SMQGW_SCREENSHOT=FILE.png saves the page (docs/console.png in the README),
// and at 420 px wide as FILE-420.png.
// Parallel with the package's other tests, none of which runs a browser
// (it writes Chromium's managed policies in /etc).
func TestBrowserConsole(t *testing.T) {
	t.Parallel()
	browser.Require(t)
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	for _, args := range [][]string{
		{"certs", "init", "-dir", pki, "-hosts", "127.0.0.1"},
		{"certs", "client", "-dir", pki, "-password", "browser-test", "browser-1"},
	} {
		if err := run(ctx, args, &out, &out, nil); err != nil {
			t.Fatalf("smqgw %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
	}
	// An application of another origin, allowed on the route: its page
	// loads smq.js from its own server and connects to the gateway.
	app := httptest.NewServer(appPage())
	t.Cleanup(app.Close)
	gw := apptest.Start(t, dir, fmt.Sprintf(`state_dir = %q
[[listener]]
name = "edge"
address = "127.0.0.1:0"
tls = "pki"
  [[listener.route]]
  path = "/smq"
  upstream = "embedded"
  client_auth = "require"
  client_ca = [%q]
  console = true
  [[listener.route]]
  path = "/app"
  upstream = "embedded"
  client_auth = "require"
  client_ca = [%[2]q]
  allowed_origins = [%[3]q]
[certs.pki]
cert_file = %[4]q
key_file = %[5]q
`, filepath.Join(dir, "state"), filepath.Join(pki, "ca.pem"), app.URL, filepath.Join(pki, "server.pem"), filepath.Join(pki, "server-key.pem"))+
		apptest.Listener("lan", ""))
	edge := "https://" + gw.GW.Addr("edge").String()
	console := edge + "/smq"

	// The demo device, a plaintext LAN client.
	smq := buildCmd(t, "smq")
	device := exec.Command(smq, "demo-device", "-url", "http://"+gw.GW.Addr("lan").String()+"/", "-interval", "200ms")
	deviceOut := &smqtest.SyncBuffer{}
	device.Stdout, device.Stderr = deviceOut, deviceOut
	if err := device.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { device.Process.Kill(); device.Wait() })

	t.Run("without a client certificate", func(t *testing.T) {
		home := browser.NewHome(t)
		home.TrustCA("smqgw test CA", filepath.Join(pki, "ca.pem"))
		b := browser.Start(t, home)
		b.Navigate(console)
		b.WaitTrue(`document.body.dataset.ready === "1"`, "the console's script")
		if url := b.String(`document.getElementById("url").value`); url != "wss://"+gw.GW.Addr("edge").String()+"/smq" {
			t.Errorf("the URL field starts at %q, not at the route the page came from", url)
		}
		// At a phone's width, every control is within the page, nothing
		// scrolls sideways.
		b.Resize(420, 800)
		if out := b.String(`[...document.querySelectorAll("input, select, button")]
			.filter((e) => e.getBoundingClientRect().right > innerWidth).map((e) => e.id).join(" ") +
			(document.documentElement.scrollWidth > innerWidth ? " (the page scrolls sideways)" : "")`); out != "" {
			t.Errorf("at 420 px, beyond the right edge: %s", out)
		}
		// A failed connection says which case it is, with a hint.
		for _, c := range []struct{ url, kase, text string }{
			{"ws://" + gw.GW.Addr("edge").String() + "/smq", "mixed-content", "may not open a ws:// WebSocket (mixed content)"},
			{"wss://" + gw.GW.Addr("lan").String() + "/smq", "other-listener", "connects only to the listener that served it"},
			{"wss://" + gw.GW.Addr("edge").String() + "/nothing-here", "no-route", "/nothing-here is not an SMQ route"},
			{"wss://" + gw.GW.Addr("edge").String() + "/app", "websocket-refused", "answers, but refused the WebSocket"}, // not in its allowed_origins
			{"https://" + gw.GW.Addr("edge").String() + "/smq", "bad-url", "https:// is not a WebSocket URL"},
		} {
			b.Do(fmt.Sprintf(`document.getElementById("url").value = %q; document.getElementById("connect").click()`, c.url))
			b.WaitTrue(`document.getElementById("status").dataset.state === "error"`, "the error for "+c.url)
			status := b.String(`document.getElementById("status").textContent`)
			hint := b.String(`document.getElementById("status-hint").textContent`)
			if kase := b.String(`document.getElementById("status").dataset.case`); kase != c.kase || !strings.Contains(status, c.text) || hint == "" {
				t.Errorf("%s: case %q, status %q, hint %q; want case %q, %q and a hint", c.url, kase, status, hint, c.kase, c.text)
			}
		}
		b.Do(fmt.Sprintf(`document.getElementById("url").value = %q`, "wss://"+gw.GW.Addr("edge").String()+"/smq"))
		b.Do(`document.getElementById("connect").click()`)
		b.WaitTrue(`document.getElementById("status").dataset.state === "refused"`, "the refusal")
		status := b.String(`document.getElementById("status").textContent`)
		if code := b.String(`document.getElementById("status").dataset.code`); code != "4" ||
			!strings.Contains(status, "Connack 0x04 client certificate required") || !strings.Contains(status, "— ") {
			t.Errorf("status %q (code %s)", status, code)
		}
	})

	home := browser.NewHome(t)
	home.TrustCA("smqgw test CA", filepath.Join(pki, "ca.pem"))
	home.ImportClient(filepath.Join(pki, "browser-1.p12"), "browser-test")
	browser.AutoSelectCertificate(t, edge)
	browserWithCert := browser.Start(t, home)

	t.Run("with a client certificate", func(t *testing.T) {
		b := browserWithCert.With(t)
		b.Navigate(console)
		b.WaitTrue(`document.body.dataset.ready === "1"`, "the console's script")
		b.Do(`document.getElementById("connect").click()`)
		b.WaitTrue(`document.getElementById("status").dataset.state === "ok"`, "Connack 0x00")
		if s := b.String(`document.getElementById("status").textContent`); !strings.Contains(s, "Connack 0x00 accepted") {
			t.Errorf("status %q", s)
		}
		// A reading of the device, and the topic's subscriber count.
		b.WaitTrue(`document.querySelector('#messages tr[data-topic="demo/temperature"]')`, "a reading from the device")
		b.WaitTrue(`Number(document.querySelector('#subs li[data-topic="demo/temperature"]')?.dataset.count) >= 1`, "the subscriber count")
		reading := b.String(`document.querySelector('#messages tr[data-topic="demo/temperature"] td.payload').textContent`)
		if !strings.Contains(reading, `"device":"demo-device"`) || !strings.Contains(reading, `"celsius"`) {
			t.Errorf("reading %q", reading)
		}
		// A command to the device's ETID (click its sender), and its answer.
		b.Do(`document.querySelector('#messages tr[data-topic="demo/temperature"] td.ptid').click();
			document.getElementById("pub-payload").value = "off";
			document.getElementById("publish").click()`)
		b.WaitTrue(`[...document.querySelectorAll('#messages tr[data-topic="self"] td.payload')]
			.some((td) => td.textContent.includes('"state":"off"'))`, "the device's answer")
		// The device logged it before answering, but its output comes
		// through a pipe: the line may reach deviceOut after the answer
		// reached the page.
		smqtest.WaitUntil(t, "the device's log of the command", func() bool {
			return strings.Contains(deviceOut.String(), `command "off" from etid`)
		})
		b.WaitTrue(`[...document.querySelectorAll('#messages tr[data-topic="demo/temperature"] td.payload')]
			.slice(0, 1).some((td) => td.textContent.includes('"state":"off"'))`, "readings in the off state")
		if file := os.Getenv("SMQGW_SCREENSHOT"); file != "" {
			if err := os.WriteFile(file, b.Screenshot(1100, 760), 0o644); err != nil {
				t.Fatal(err)
			}
			narrow := strings.TrimSuffix(file, ".png") + "-420.png"
			if err := os.WriteFile(narrow, b.Screenshot(420, 800), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})

	// A page of another origin, in a browser that has not been to the
	// gateway: without the warm-up Chromium cancels the WebSocket's
	// handshake when the gateway asks for a client certificate, and the
	// gateway sees no session; with it (smq.js's default for another
	// origin) the certificate chosen by the policy goes with the WebSocket,
	// or none, and the gateway answers 0x04.
	appRoute := "wss://" + gw.GW.Addr("edge").String() + "/app"
	for _, tc := range []struct {
		name, p12, uid, want string // want: connectFrom's answer with the warm-up
	}{
		{"another origin with a client certificate", filepath.Join(pki, "browser-1.p12"), "app-with-cert", "connected"},
		{"another origin without a client certificate", "", "app-without-cert", "RefusedError 4: connection refused: 0x04 client certificate required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := browser.NewHome(t)
			home.TrustCA("smqgw test CA", filepath.Join(pki, "ca.pem"))
			if tc.p12 != "" {
				home.ImportClient(tc.p12, "browser-test")
			}
			b := browser.Start(t, home)
			b.Navigate(app.URL)
			before := strings.Count(gw.Logs.String(), "route=/app")
			if got := connectFrom(b, appRoute, tc.uid, "false"); got != "ClosedError 1006: smq: cannot open "+appRoute+" (WebSocket 1006)" {
				t.Errorf("without the warm-up: %s; want the handshake canceled (1006)", got)
			}
			if n := strings.Count(gw.Logs.String(), "route=/app"); n != before {
				t.Errorf("the gateway logged the canceled handshake as a session:\n%s", gw.Logs.String())
			}
			if got := connectFrom(b, appRoute, tc.uid, `"auto"`); !strings.HasPrefix(got, tc.want) {
				t.Errorf("with the warm-up: %s; want %s", got, tc.want)
			}
			// The session's end: its identity, or the refusal (which has
			// no UID: the gateway answered the Connect unread).
			want := `identity="CN=browser-1,O=smqgw development" uid=` + tc.uid
			if tc.p12 == "" {
				want = `reason=refused msgs_in=0`
			}
			smqtest.WaitUntil(t, "the session's log line", func() bool {
				for _, line := range strings.Split(gw.Logs.String(), "\n") {
					if strings.Contains(line, "msg=session ") && strings.Contains(line, "route=/app") && strings.Contains(line, want) {
						return true
					}
				}
				return false
			})
		})
	}

	t.Run("another origin", func(t *testing.T) {
		b := browserWithCert.With(t)
		// A page served elsewhere tries the gateway's WebSocket.
		page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, `<!doctype html><title>waiting</title><script>
				const ws = new WebSocket(%q);
				ws.onopen = () => { document.title = "open"; };
				ws.onclose = () => { if (document.title !== "open") document.title = "refused"; };
				</script>`, "wss://"+gw.GW.Addr("edge").String()+"/smq")
		}))
		defer page.Close()
		b.Navigate(page.URL)
		b.WaitTrue(`document.title === "refused"`, "the WebSocket to fail")
		if logs := gw.Logs.String(); !strings.Contains(logs, `msg="websocket refused: origin not allowed" listener=edge route=/smq origin=`+page.URL) {
			t.Errorf("no 403 for the foreign origin in the log:\n%s", logs)
		}
	})
}

// appPage serves an application of another origin: an empty page, and
// smq.js at /smq.js.
func appPage() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /smq.js", http.FileServerFS(web.Files))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>an application</title><p>Another origin.`)
	})
	return mux
}

// connectFrom connects to url from the page with smq.js, warmUp as given
// (JavaScript), closes the session, and returns "connected" or the error:
// its name, Connack or WebSocket close code, and message.
func connectFrom(b *browser.Browser, url, uid, warmUp string) string {
	return b.String(fmt.Sprintf(`(async () => {
		const { connect } = await import("/smq.js");
		try {
			const c = await connect(%q, { uid: %q, warmUp: %s });
			c.close();
			await c.closed;
			return "connected";
		} catch (e) {
			return e.name + " " + (e.code ?? e.wsCode ?? "") + ": " + e.message;
		}
	})()`, url, uid, warmUp))
}
