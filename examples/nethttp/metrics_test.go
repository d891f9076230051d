package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsEndpoint runs the example server as an OS process, sends it
// a miss, hits and a request that bypasses the cache, then scrapes its
// /metrics over HTTP and parses it with the Prometheus text parser: the
// cache's metric families are there with their types and labels, and the
// route pattern, never a URL, labels the responses.
func TestMetricsEndpoint(t *testing.T) {
	addr := redisAddr(t)
	ns := fmt.Sprintf("metrics-%d-%d", os.Getpid(), time.Now().UnixNano())
	u := startFleet(t, 1, "-redis", addr, "-namespace", ns, "-delay", "1ms")[0]
	client := &http.Client{Timeout: 30 * time.Second}
	waitReady(t, client, u)
	get := func(path string) {
		resp, err := client.Get(u + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for range 3 {
		get("/products/42")
	}
	get("/admin/stats")

	resp, err := client.Get(u + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics Content-Type %q, want the text format", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	for name, typ := range map[string]dto.MetricType{
		"flightcache_responses_total":         dto.MetricType_COUNTER,
		"flightcache_origin_calls_total":      dto.MetricType_COUNTER,
		"flightcache_origin_duration_seconds": dto.MetricType_HISTOGRAM,
		"flightcache_lookup_duration_seconds": dto.MetricType_HISTOGRAM,
		"flightcache_commits_total":           dto.MetricType_COUNTER,
		"flightcache_locks_total":             dto.MetricType_COUNTER,
		"flightcache_breaker_state":           dto.MetricType_GAUGE,
	} {
		f := families[name]
		if f == nil {
			t.Errorf("/metrics has no %s", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("%s is a %v, want %v", name, f.GetType(), typ)
		}
	}
	got := map[string]float64{}
	for _, m := range families["flightcache_responses_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if strings.Contains(labels["http_route"], "42") {
			t.Errorf("http_route %q holds the URL", labels["http_route"])
		}
		got[labels["http_route"]+" "+labels["flightcache_cache_status"]+" "+labels["flightcache_bypass_reason"]] += m.GetCounter().GetValue()
	}
	want := map[string]float64{
		"GET /products/{id} miss ": 1,
		"GET /products/{id} hit ":  2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("flightcache_responses_total{route, status, reason = %s} = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	// NoCache; waitReady polled it too.
	if n := got["GET /admin/stats bypass bypass"]; n < 1 {
		t.Errorf("no response for GET /admin/stats bypassed the cache (all: %v)", got)
	}
	if n := families["flightcache_origin_calls_total"].GetMetric()[0].GetCounter().GetValue(); n != 1 {
		t.Errorf("flightcache_origin_calls_total = %v, want 1", n)
	}
}
