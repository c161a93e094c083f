package app_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
)

// The alert rules, recording rules and Grafana dashboard that people load
// (configs/prometheus, configs/grafana; README "Alerting").
const (
	promDir       = "../../configs/prometheus"
	dashboardFile = "../../configs/grafana/smqgw.json"
)

// Names in PromQL expressions, found by regular expressions rather than
// by Prometheus's promql parser (a heavy module to import for a test):
// recordedName is a recording rule's level:metric:operations name, and
// metricName is a metric of smqgw (smqgw_*), of its Go runtime (go_*) or
// of its process (process_*), not inside a recorded name. A metric of
// another exporter is not checked; the rules use one other, Prometheus's
// own up.
var (
	recordedName = regexp.MustCompile(`[a-z_]+:[a-z0-9_]+:[a-z0-9_]+`)
	metricName   = regexp.MustCompile(`\b(?:smqgw|go|process)_[a-z0-9_]*[a-z0-9]\b`)
	recordRule   = regexp.MustCompile(`(?m)^\s*- record:\s*(\S+)\s*$`)
	yamlComment  = regexp.MustCompile(`(?m)(^|\s)#.*$`)
)

// TestAlertingUsesExportedMetrics starts a gateway, makes it export every
// series family it can (sessions, messages, a gateway's refusal, an
// unreachable upstream, a proxy that fails, a handshake that fails, a
// refused Origin, a reload, certificates, the embedded broker), scrapes
// /metrics, and checks that every metric name the rule files, their
// promtool tests and the dashboard use is among the exported names, and
// every recorded name is defined by a rule.
func TestAlertingUsesExportedMetrics(t *testing.T) {
	t.Parallel()
	used, recorded := usedNames(t)
	if len(used) < 20 {
		t.Fatalf("found only %d metric names in the rules and the dashboard: %v", len(used), used)
	}

	ca := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	r := apptest.Start(t, t.TempDir(), fmt.Sprintf(`
[admin]
address = "127.0.0.1:0"

[[listener]]
name = "edge"
address = "127.0.0.1:0"
tls = "files"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
  [[listener.route]]
  path = "/mtls"
  upstream = "embedded"
  client_auth = "require"
  client_ca = [%[1]q]
  [[listener.route]]
  path = "/perm"
  upstream = "embedded"
  permissions = "public"
  [[listener.route]]
  path = "/dead"
  upstream = "dead"
  [[listener.route]]
  path = "/proxied"
  upstream = "proxied"

[[permissions.public]]
anonymous = true
subscribe = ["public/#"]

[upstream.dead]
urls = ["http://%[2]s/"]

[upstream.proxied]
urls = ["http://127.0.0.1:1/"]
proxy = "http://%[3]s"

[cluster]
name = "alerts"
listen = "127.0.0.1:0"
`, ca.CertFile, smqtest.DeadAddr(t), smqtest.DeadAddr(t))+apptest.CertFiles(server))
	edge := r.GW.Addr("edge").String()
	tlsConfig := &tls.Config{RootCAs: ca.Pool}
	ctx := smqtest.Context(t)
	dial := func(path string) (*client.Client, error) {
		c, err := client.Dial(ctx, "wss://"+edge+path, client.Options{TLSConfig: tlsConfig})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}

	// Two sessions and a message between them.
	a, err := dial("/")
	if err != nil {
		t.Fatal(err)
	}
	b, err := dial("/")
	if err != nil {
		t.Fatal(err)
	}
	apptest.PubSub(t, a, b)
	// The gateway's refusals: no client certificate (Connack 0x04), an
	// upstream that is down, a proxy that is down.
	for _, path := range []string{"/mtls", "/dead", "/proxied"} {
		if _, err := dial(path); err == nil {
			t.Fatalf("a session on %s", path)
		}
	}
	// A plain HTTP request on the TLS port: a failed handshake.
	if resp, err := http.Get("http://" + edge + "/"); err == nil {
		resp.Body.Close()
	}
	// A WebSocket upgrade from a foreign Origin: 403.
	d := websocket.Dialer{TLSClientConfig: tlsConfig}
	if ws, _, err := d.Dial("wss://"+edge+"/", http.Header{"Origin": {"https://evil.example"}}); err == nil {
		ws.Close()
		t.Fatal("a foreign Origin's upgrade was accepted")
	}
	r.Server.Reload()

	// Sessions are counted when they have ended: wait for the scrape to
	// hold every name.
	var exported map[string]bool
	var missing []string
	defer func() {
		if t.Failed() && len(missing) > 0 {
			t.Logf("exported: %v", slices.Sorted(maps.Keys(exported)))
			t.Errorf("used by configs/prometheus or configs/grafana but not exported: %v", missing)
		}
	}()
	smqtest.WaitUntil(t, "every metric the rules and the dashboard use", func() bool {
		exported = scrape(t, "http://"+r.GW.AdminAddr().String()+"/metrics")
		missing = missing[:0]
		for _, name := range used {
			if !exported[name] {
				missing = append(missing, name)
			}
		}
		return len(missing) == 0
	})
	for _, name := range recorded.used {
		if !recorded.defined[name] {
			t.Errorf("recorded name %s is used but no rule records it", name)
		}
	}
}

// recordedNames are the level:metric:operations names of the rule files:
// those a rule records, and those used anywhere.
type recordedNames struct {
	defined map[string]bool
	used    []string
}

// usedNames returns the metric names that the rule files, their tests and
// the dashboard's queries use, and the recorded names.
func usedNames(t *testing.T) ([]string, recordedNames) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(promDir, "*.yml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("configs/prometheus: %v %v", files, err)
	}
	var texts []string
	rec := recordedNames{defined: map[string]bool{}}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, yamlComment.ReplaceAllString(string(src), ""))
		for _, m := range recordRule.FindAllStringSubmatch(string(src), -1) {
			rec.defined[m[1]] = true
		}
	}
	texts = append(texts, dashboardQueries(t)...)
	names := map[string]bool{}
	recUsed := map[string]bool{}
	for _, text := range texts {
		for _, r := range recordedName.FindAllString(text, -1) {
			recUsed[r] = true
		}
		text = recordedName.ReplaceAllString(text, " ")
		for _, n := range metricName.FindAllString(text, -1) {
			names[n] = true
		}
	}
	rec.used = slices.Sorted(maps.Keys(recUsed))
	return slices.Sorted(maps.Keys(names)), rec
}

// dashboardQueries returns the PromQL of the dashboard: its panels'
// targets and its template variables' queries.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(src, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var qs []string
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s: panel %q has an empty query", dashboardFile, p.Title)
			}
			qs = append(qs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		qs = append(qs, v.Definition)
	}
	if len(qs) < 10 {
		t.Fatalf("%s: only %d queries", dashboardFile, len(qs))
	}
	return qs
}

// scrape returns the metric names of url's Prometheus text: each family's
// name, and for histograms and summaries the _bucket, _sum and _count
// series that PromQL names.
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for name, f := range families {
		names[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	return names
}

// TestAlertRulesPromtool runs promtool over configs/prometheus: check
// rules on the rule files, test rules on their tests (each alert firing
// and not firing on synthetic series). Without promtool on PATH the test
// is skipped, but fails when CI=true (.ci/run installs Debian's
// prometheus package, which has it).
func TestAlertRulesPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool is needed when CI=true (Debian: apt-get install prometheus): %v", err)
		}
		t.Skip("promtool not on PATH (Debian: apt-get install prometheus)")
	}
	tests, _ := filepath.Glob(filepath.Join(promDir, "*_test.yml"))
	all, _ := filepath.Glob(filepath.Join(promDir, "*.yml"))
	var rules []string
	for _, f := range all {
		if !slices.Contains(tests, f) {
			rules = append(rules, filepath.Base(f))
		}
	}
	if len(rules) == 0 || len(tests) == 0 {
		t.Fatalf("configs/prometheus: rules %v, tests %v", rules, tests)
	}
	slices.Sort(rules)
	for i := range tests {
		tests[i] = filepath.Base(tests[i])
	}
	for _, args := range [][]string{append([]string{"check", "rules"}, rules...), append([]string{"test", "rules"}, tests...)} {
		cmd := exec.CommandContext(context.Background(), promtool, args...)
		cmd.Dir = promDir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestAlertsAreDocumented: each alert has a summary, a description and a
// runbook hint, and the README's Alerting section names it.
func TestAlertsAreDocumented(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(filepath.Join(promDir, "smqgw-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	alert := regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)\s*$`)
	rules := alert.FindAllStringSubmatchIndex(string(src), -1)
	if len(rules) == 0 {
		t.Fatal("no alerts")
	}
	for i, m := range rules {
		name := string(src[m[2]:m[3]])
		end := len(src)
		if i+1 < len(rules) {
			end = rules[i+1][0]
		}
		body := string(src[m[1]:end])
		for _, key := range []string{"summary:", "description:", "runbook:", "severity:"} {
			if !strings.Contains(body, key) {
				t.Errorf("alert %s has no %s", name, strings.TrimSuffix(key, ":"))
			}
		}
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("README does not describe alert %s", name)
		}
	}
}
