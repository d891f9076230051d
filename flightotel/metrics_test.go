package flightotel_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/flightotel"
	"github.com/flightcache/flightcache/nethttpmw"
)

// TestTenThousandURLsOneSeriesSet sends 10,000 distinct URLs through one
// route: every metric has the series of that one route, not one per URL,
// and no attribute holds a path or key.
func TestTenThousandURLsOneSeriesSet(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	tel := flightotel.New(flightotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	c := core.New(core.NewMemoryStore(0), core.WithEvents(tel.Events()))
	mux := http.NewServeMux()
	mux.Handle("GET /item/{id}", nethttpmw.Middleware(c)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "item "+r.PathValue("id"))
	})))
	const urls = 10000
	for i := range urls {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, fmt.Sprintf("/item/%d?q=%d", i, i), nil))
		if w.Code != http.StatusOK {
			t.Fatalf("GET /item/%d: status %d", i, w.Code)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := sums(rm)
	want := map[string]int64{
		"flightcache.responses{flightcache.cache_status=miss,http.request.method=GET,http.response.status_class=2xx,http.route=GET /item/{id}}": urls,
		"flightcache.lookup.duration{http.route=GET /item/{id}}":                                                                                urls,
		"flightcache.origin.calls{}":                           urls,
		"flightcache.origin.duration{}":                        urls,
		"flightcache.commits{flightcache.commit_result=won}":   urls,
		"flightcache.locks{flightcache.lock_outcome=acquired}": urls,
		"flightcache.breaker.state{}":                          0,
	}
	if !equalMaps(got, want) {
		t.Errorf("series after %d URLs through one route:\n%s\nwant:\n%s", urls, dump(got), dump(want))
	}
	digits := regexp.MustCompile(`/item/[0-9]`)
	for k := range got {
		if digits.MatchString(k) {
			t.Errorf("series %s holds a path", k)
		}
	}
}

func equalMaps(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func dump(m map[string]int64) string {
	var lines []string
	for k, v := range m {
		lines = append(lines, fmt.Sprintf("  %s = %d", k, v))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// flakyStore fails Get while fail is set, to open the breaker.
type flakyStore struct {
	*core.MemoryStore // and its InvalidationWatcher methods
	fail              atomic.Bool
}

func (s *flakyStore) Get(ctx context.Context, key string) ([]byte, error) {
	if s.fail.Load() {
		return nil, errors.New("store down")
	}
	return s.MemoryStore.Get(ctx, key)
}

// scrape exercises every metric through a cache on the Prometheus
// exporter, and returns what its /metrics serves, parsed.
func scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	tel := flightotel.New(flightotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))))
	mem := core.NewMemoryStore(0)
	store := &flakyStore{MemoryStore: mem}
	// Two caches on one store: two processes. The first has a local tier
	// small enough to evict.
	a := core.New(store, core.WithEvents(tel.Events()), core.WithLocalTier(4096), core.WithBreaker(1, time.Hour))
	// b says when its fill waits: it found the lock held in its fill, and
	// again in its wait, subscribed, so that a commit now wakes it.
	events, bWaits, held := tel.Events(), make(chan struct{}), 0
	lock := events.Lock
	events.Lock = func(ctx context.Context, o core.LockOutcome) {
		lock(ctx, o)
		if o == core.LockHeld {
			if held++; held == 2 {
				close(bWaits)
			}
		}
	}
	b := core.New(mem, core.WithEvents(events))
	tel.Observe(a)
	route := func(c *core.Cache, started chan<- struct{}, release <-chan struct{}) http.Handler {
		mux := http.NewServeMux()
		mux.Handle("GET /item/{id}", nethttpmw.Middleware(c)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if started != nil && r.PathValue("id") == "slow" {
				started <- struct{}{}
				<-release
			}
			io.WriteString(w, strings.Repeat("x", 512))
		})))
		mux.Handle("POST /item/{id}", nethttpmw.Middleware(c)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
		return mux
	}
	started, release := make(chan struct{}), make(chan struct{})
	ha, hb := route(a, started, release), route(b, nil, nil)
	get := func(h http.Handler, method, target string) {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, target, nil))
	}
	// A fill in a, waited on by b (a wait, a held lock, a collapse).
	done := make(chan struct{})
	go func() { get(ha, "GET", "/item/slow"); close(done) }()
	<-started
	waited := make(chan struct{})
	go func() { get(hb, "GET", "/item/slow"); close(waited) }()
	<-bWaits
	close(release)
	<-done
	<-waited
	// Hits, local hits, bypasses, an unsafe request's invalidation, a purge.
	get(hb, "GET", "/item/slow")
	get(ha, "GET", "/item/slow")
	get(ha, "POST", "/item/slow")
	if err := a.PurgeURL(context.Background(), "http://example.com/item/slow"); err != nil {
		t.Fatal(err)
	}
	// Local-tier evictions: more than its 4 KiB.
	for i := 0; a.Stats().Snapshot().LocalEvictions == 0; i++ {
		if i == 100000 {
			t.Fatal("the local tier evicted nothing")
		}
		get(ha, "GET", fmt.Sprintf("/item/%d", i))
	}
	// Store errors, the breaker opening.
	store.fail.Store(true)
	for range 3 {
		get(ha, "GET", "/item/broken")
	}

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// TestPrometheusExposition scrapes /metrics of a Prometheus exporter fed
// by the module, and checks each metric's name, type and labels.
func TestPrometheusExposition(t *testing.T) {
	families := scrape(t)
	want := []struct {
		name   string
		typ    dto.MetricType
		labels []string
	}{
		{"flightcache_responses_total", dto.MetricType_COUNTER, []string{"http_route", "http_request_method", "flightcache_cache_status", "http_response_status_class"}},
		{"flightcache_collapsed_total", dto.MetricType_COUNTER, []string{"http_route", "flightcache_collapse_scope"}},
		{"flightcache_lookup_duration_seconds", dto.MetricType_HISTOGRAM, []string{"http_route"}},
		{"flightcache_origin_calls_total", dto.MetricType_COUNTER, nil},
		{"flightcache_origin_duration_seconds", dto.MetricType_HISTOGRAM, nil},
		{"flightcache_wait_duration_seconds", dto.MetricType_HISTOGRAM, []string{"flightcache_woken", "flightcache_wait_served"}},
		{"flightcache_commits_total", dto.MetricType_COUNTER, []string{"flightcache_commit_result"}},
		{"flightcache_locks_total", dto.MetricType_COUNTER, []string{"flightcache_lock_outcome"}},
		{"flightcache_errors_total", dto.MetricType_COUNTER, []string{"flightcache_op"}},
		{"flightcache_breaker_state", dto.MetricType_GAUGE, nil},
		{"flightcache_breaker_transitions_total", dto.MetricType_COUNTER, []string{"flightcache_breaker_state"}},
		{"flightcache_local_tier_size_bytes", dto.MetricType_GAUGE, nil},
		{"flightcache_local_tier_evictions_total", dto.MetricType_COUNTER, nil},
		{"flightcache_invalidations_total", dto.MetricType_COUNTER, []string{"flightcache_invalidation_source"}},
	}
	for _, w := range want {
		f, ok := families[w.name]
		if !ok {
			t.Errorf("/metrics has no %s", w.name)
			continue
		}
		if f.GetType() != w.typ {
			t.Errorf("%s is a %v, want %v", w.name, f.GetType(), w.typ)
		}
		for _, m := range f.GetMetric() {
			have := map[string]bool{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = true
				if strings.Contains(l.GetValue(), "/item/") && l.GetName() != "http_route" {
					t.Errorf("%s label %s=%q holds a path", w.name, l.GetName(), l.GetValue())
				}
			}
			for _, l := range w.labels {
				if !have[l] {
					t.Errorf("%s series %v lacks label %s", w.name, m.GetLabel(), l)
				}
			}
		}
	}
	if f := families["flightcache_breaker_state"]; f != nil && f.GetMetric()[0].GetGauge().GetValue() != 2 {
		t.Errorf("flightcache_breaker_state = %v, want 2 (open)", f.GetMetric()[0].GetGauge().GetValue())
	}
	if f := families["flightcache_responses_total"]; f != nil {
		statuses := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "flightcache_cache_status" {
					statuses[l.GetValue()] = true
				}
			}
		}
		for _, s := range []string{"miss", "hit", "local_hit", "bypass"} {
			if !statuses[s] {
				t.Errorf("no response served %s in %v", s, statuses)
			}
		}
	}
}

// TestDashboardQueriesNameEmittedMetrics parses the Grafana dashboard in
// docs/ and checks that every metric its queries name is one the module
// emits through the Prometheus exporter.
func TestDashboardQueriesNameEmittedMetrics(t *testing.T) {
	families := scrape(t)
	b, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	// Label matchers and grouping clauses name labels, not metrics.
	labels := regexp.MustCompile(`\{[^}]*\}|\b(by|without)\s*\([^)]*\)`)
	metricName := regexp.MustCompile(`\bflightcache_[a-z_]+`)
	queries := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			queries++
			names := metricName.FindAllString(labels.ReplaceAllString(target.Expr, " "), -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no flightcache metric", p.Title, target.Expr)
			}
			for _, n := range names {
				base := n
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if b, ok := strings.CutSuffix(n, suffix); ok && families[b] != nil && families[b].GetType() == dto.MetricType_HISTOGRAM {
						base = b
					}
				}
				if families[base] == nil {
					t.Errorf("panel %q: query %q names %s, which the module does not emit", p.Title, target.Expr, n)
				}
			}
		}
	}
	if queries < 6 {
		t.Errorf("the dashboard has %d queries, want one per panel at least (6 panels)", queries)
	}
}
