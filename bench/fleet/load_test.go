package fleet

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

const (
	loadProcesses = 8
	loadRequests  = 4000
	loadKeys      = 200
	loadInFlight  = 400
	loadTTL       = 30 * time.Second // one expiry window covers the test
)

// TestFleetLoad sends a bounded herd of 4000 requests over 200 products,
// 400 in flight at a time, to 8 server processes on one redis-server, as a
// load balancer spreads them (one Host header). Each product must be
// rendered once fleet-wide and every request for it must get that one body.
func TestFleetLoad(t *testing.T) {
	addr := redisAddr(t)
	bin := buildExample(t)
	ns := fmt.Sprintf("load-%d-%d", os.Getpid(), time.Now().UnixNano())
	urls := startFleet(t, bin, loadProcesses, "-redis", addr, "-namespace", ns, "-delay", "100ms", "-ttl", loadTTL.String(),
		"-store-timeout", "2s") // generous: 8 servers under the race detector on 2 cores are slow
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: loadInFlight}}
	defer client.CloseIdleConnections()
	for _, u := range urls {
		waitReady(t, client, u)
	}
	warmUp(t, client, urls)

	// Request j asks for product j%loadKeys on server (j/loadKeys)%8, so
	// each product's requests go to every server; a fixed shuffle sends
	// them in an order that puts several servers on one product at once.
	type reply struct {
		status  int
		body    string
		err     error
		latency time.Duration
	}
	replies := make([]reply, loadRequests)
	jobs := make(chan int, loadRequests)
	for _, j := range rand.New(rand.NewPCG(1, 2)).Perm(loadRequests) {
		jobs <- j
	}
	close(jobs)
	start := time.Now()
	var wg sync.WaitGroup
	for range loadInFlight {
		wg.Go(func() {
			for j := range jobs {
				u := fmt.Sprintf("%s/products/%d", urls[(j/loadKeys)%loadProcesses], j%loadKeys)
				req, _ := http.NewRequest("GET", u, nil)
				req.Host = "shop.example"
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					replies[j] = reply{err: err}
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				replies[j] = reply{status: resp.StatusCode, body: string(b), err: err, latency: time.Since(t0)}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	failures := 0
	bodies := make([]map[string]bool, loadKeys) // by product
	renders := map[string]bool{}                // origin calls seen: rendered_by/origin_call
	latencies := make([]time.Duration, 0, loadRequests)
	for j, r := range replies {
		if r.err != nil || r.status != http.StatusOK {
			if failures++; failures <= 5 {
				t.Errorf("request %d: status %d, error %v", j, r.status, r.err)
			}
			continue
		}
		latencies = append(latencies, r.latency)
		var p struct {
			ID         string `json:"id"`
			RenderedBy string `json:"rendered_by"`
			OriginCall int64  `json:"origin_call"`
		}
		if err := json.Unmarshal([]byte(r.body), &p); err != nil || p.ID != fmt.Sprint(j%loadKeys) {
			t.Errorf("request %d for product %d got body %q (%v)", j, j%loadKeys, r.body, err)
		}
		renders[fmt.Sprintf("%s/%d", p.RenderedBy, p.OriginCall)] = true
		k := j % loadKeys
		if bodies[k] == nil {
			bodies[k] = map[string]bool{}
		}
		bodies[k][r.body] = true
	}
	maxBodies := 0
	for k, set := range bodies {
		maxBodies = max(maxBodies, len(set))
		if len(set) > 1 {
			t.Errorf("product %d: %d distinct bodies, want 1", k, len(set))
		}
	}
	calls := originCalls(t, client, urls)
	slices.Sort(latencies)
	var p50, p99 time.Duration
	if n := len(latencies); n > 0 {
		p50, p99 = latencies[n/2], latencies[n*99/100]
	}
	t.Logf("%d processes, %d requests, %d keys: origin calls %d (%.2f per key), distinct bodies per key max %d, errors %d, p50 %dms p99 %dms",
		loadProcesses, loadRequests, loadKeys, calls, float64(calls)/loadKeys, maxBodies, failures, p50.Milliseconds(), p99.Milliseconds())
	t.Logf("herd took %v; renders seen in bodies: %d", elapsed.Round(time.Millisecond), len(renders))
	if failures > 0 {
		t.Errorf("%d of %d requests failed, want 0", failures, loadRequests)
	}
	if calls != loadKeys {
		t.Errorf("origin calls across %d processes = %d, want %d (one per product)", loadProcesses, calls, loadKeys)
	}
	if len(renders) != loadKeys {
		t.Errorf("bodies come from %d origin calls, want %d (one per product)", len(renders), loadKeys)
	}
}

// warmUp opens the herd's connections to the servers ahead of it (as a load
// balancer's pool would be open), with uncached requests.
func warmUp(t *testing.T, client *http.Client, urls []string) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range loadInFlight {
		wg.Go(func() {
			resp, err := client.Get(urls[i%len(urls)] + "/admin/stats")
			if err != nil {
				t.Errorf("warm-up: %v", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
}
