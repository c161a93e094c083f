package gateway

import (
	"bytes"
	"net/http"
	"time"

	"github.com/smqgw/smqgw/web"
)

// consoleFiles are the console's files by the value of the console query
// parameter: the page has none, its scripts are ?console=NAME, so that
// everything is at the route's own path, same origin as its WebSocket.
var consoleFiles = map[string]struct{ name, ctype string }{
	"":           {"console.html", "text/html; charset=utf-8"},
	"console.js": {"console.js", "text/javascript; charset=utf-8"},
	"smq.js":     {"smq.js", "text/javascript; charset=utf-8"},
}

// started is when the embedded files became current, for Last-Modified.
var started = time.Now()

// serveConsole serves the web console on a route that enables it.
func serveConsole(w http.ResponseWriter, r *http.Request) {
	f, ok := consoleFiles[r.URL.Query().Get("console")]
	if !ok {
		http.Error(w, "smqgw: no such console file", http.StatusNotFound)
		return
	}
	data, err := web.Files.ReadFile(f.name)
	if err != nil {
		http.Error(w, "smqgw: console file missing from the build", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	// Scripts from this route only; WebSockets to this origin only.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "+
		"connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	http.ServeContent(w, r, f.name, started, bytes.NewReader(data))
}
