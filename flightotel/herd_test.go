package flightotel_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/repotest"
	"github.com/flightcache/flightcache/flightotel"
	"github.com/flightcache/flightcache/nethttpmw"
)

// The herd: herdProcs OS processes, each a cache on one real redis-server
// behind its own HTTP server, and herdCallers requests in each for one
// cold URL, released together.
const (
	herdProcs   = 3
	herdCallers = 20
	herdEnv     = "FLIGHTOTEL_HERD_NS" // switches the test binary into a herd process
	serverSpan  = "server"             // otelhttp's operation name for the server span
)

func TestMain(m *testing.M) {
	if ns := os.Getenv(herdEnv); ns != "" {
		os.Exit(runHerdChild(ns))
	}
	os.Exit(m.Run())
}

// childReport is what a herd process hands back: its metrics, summed by
// name and attributes, its spans and the bodies its callers got.
type childReport struct {
	Sums   map[string]int64 // "name{k=v,...}": counter value or histogram count
	Spans  []spanInfo
	Bodies []string
}

type spanInfo struct {
	Name, Kind, Trace, ID, Parent string
	Links                         []string // "trace/span"
	Attrs                         map[string]string
}

// TestHerdAcrossProcesses runs a herd across OS processes with the real
// OpenTelemetry SDK in each (a manual metric reader, an in-memory span
// recorder, otelhttp's server spans) and checks what they report: one
// origin call fleet-wide; every other request collapsed in its process,
// waited on the filler's process, or (if late) a hit; the flightcache
// spans nested under the server spans, none for those served without a
// fill; and each waiting process's wait span linked to the filler's fill
// span, whose context came with the commit notification.
func TestHerdAcrossProcesses(t *testing.T) {
	addr := repotest.RedisAddr(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ns := fmt.Sprintf("otelherd%d-%d", os.Getpid(), time.Now().UnixNano())
	defer rdb.Del(context.Background(), ns+":release")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	type child struct {
		cmd    *exec.Cmd
		stdin  io.WriteCloser
		lines  chan string
		report chan childReport
	}
	children := make([]*child, herdProcs)
	for i := range children {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), herdEnv+"="+ns, "FLIGHTCACHE_REDIS_ADDR="+addr)
		cmd.Stderr = os.Stderr
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 100), report: make(chan childReport, 1)}
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(nil, 16<<20)
			for sc.Scan() {
				line := sc.Text()
				if rest, ok := strings.CutPrefix(line, "report "); ok {
					var r childReport
					json.Unmarshal([]byte(rest), &r)
					c.report <- r
					continue
				}
				c.lines <- line
			}
			close(c.lines)
		}()
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		children[i] = c
	}
	expect := func(c *child, want string) {
		t.Helper()
		select {
		case line, ok := <-c.lines:
			if !ok || line != want {
				t.Fatalf("herd process said %q (open: %v), want %q", line, ok, want)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("herd process did not say %q within a minute", want)
		}
	}
	for _, c := range children {
		expect(c, "ready")
	}
	for _, c := range children {
		io.WriteString(c.stdin, "go\n")
	}
	// Exactly one process fetches (it holds the key's lock); the others'
	// fills wait on it. The origin is held until they all wait, so that
	// each of them is woken by the commit's notification.
	waiting, fetching := 0, 0
	var events sync.WaitGroup
	var mu sync.Mutex
	for _, c := range children {
		events.Go(func() {
			select {
			case line := <-c.lines:
				mu.Lock()
				defer mu.Unlock()
				switch line {
				case "waiting":
					waiting++
				case "fetching":
					fetching++
				default:
					t.Errorf("herd process said %q, want waiting or fetching", line)
				}
			case <-time.After(60 * time.Second):
				t.Error("a herd process neither fetched nor waited within a minute")
			}
		})
	}
	events.Wait()
	if t.Failed() || fetching != 1 || waiting != herdProcs-1 {
		t.Fatalf("%d processes fetching and %d waiting, want 1 and %d", fetching, waiting, herdProcs-1)
	}
	rdb.RPush(context.Background(), ns+":release", "1")

	reports := make([]childReport, herdProcs)
	for i, c := range children {
		select {
		case reports[i] = <-c.report:
		case <-time.After(60 * time.Second):
			t.Fatal("a herd process did not report within a minute")
		}
		if err := c.cmd.Wait(); err != nil {
			t.Fatalf("herd process: %v", err)
		}
	}

	sum := func(key string) (n int64) {
		for _, r := range reports {
			n += r.Sums[key]
		}
		return n
	}
	if got := sum("flightcache.origin.calls{}"); got != 1 {
		t.Errorf("origin calls summed over %d processes = %d, want 1", herdProcs, got)
	}
	served := map[string]int64{}
	for _, s := range []string{"miss", "collapsed", "waited", "hit", "local_hit", "stale", "bypass"} {
		served[s] = sum(fmt.Sprintf("flightcache.responses{flightcache.cache_status=%s,http.request.method=GET,http.response.status_class=2xx,http.route=GET /item/{id}}", s))
	}
	total := int64(herdProcs * herdCallers)
	if served["miss"] != 1 || served["waited"] != herdProcs-1 ||
		served["miss"]+served["waited"]+served["collapsed"]+served["hit"] != total {
		t.Errorf("responses by cache status %v, want 1 miss, %d waited, and collapsed+hit = %d", served, herdProcs-1, total-herdProcs)
	}
	if got, want := sum("flightcache.collapsed{flightcache.collapse_scope=fleet,http.route=GET /item/{id}}"), int64(herdProcs-1); got != want {
		t.Errorf("collapsed fleet-wide = %d, want %d", got, want)
	}
	if got, want := sum("flightcache.collapsed{flightcache.collapse_scope=process,http.route=GET /item/{id}}"), served["collapsed"]; got != want {
		t.Errorf("collapsed in process = %d, want %d (the collapsed responses)", got, want)
	}
	if got, want := sum("flightcache.wait.duration{flightcache.wait_served=true,flightcache.woken=notify}"), int64(herdProcs-1); got != want {
		t.Errorf("waits served after a notification = %d, want %d", got, want)
	}
	if got := sum("flightcache.commits{flightcache.commit_result=won}"); got != 1 {
		t.Errorf("commits won = %d, want 1", got)
	}
	if got := sum("flightcache.locks{flightcache.lock_outcome=acquired}"); got != 1 {
		t.Errorf("locks acquired = %d, want 1", got)
	}
	if got := sum("flightcache.locks{flightcache.lock_outcome=held}"); got < herdProcs-1 {
		t.Errorf("lock attempts finding it held = %d, want at least %d", got, herdProcs-1)
	}
	body := reports[0].Bodies[0]
	for _, r := range reports {
		if len(r.Bodies) != herdCallers {
			t.Fatalf("a process got %d bodies, want %d", len(r.Bodies), herdCallers)
		}
		for _, b := range r.Bodies {
			if b != body {
				t.Fatalf("bodies differ: %q and %q", b, body)
			}
		}
	}

	// Spans. The filler's process: one fill under a server span, one
	// fetch under it. The others: one fill under a server span, one wait
	// under it, linked to the filler's fill.
	var fillerFill *spanInfo
	for _, r := range reports {
		byID := map[string]spanInfo{}
		for _, s := range r.Spans {
			byID[s.ID] = s
		}
		var fills, fetches, waits []spanInfo
		servers := 0
		for _, s := range r.Spans {
			switch s.Name {
			case flightotel.SpanFill:
				fills = append(fills, s)
			case flightotel.SpanFetch:
				fetches = append(fetches, s)
			case flightotel.SpanWait:
				waits = append(waits, s)
			case "GET /item/{id}": // otelhttp names it by the route
				if s.Kind != "server" {
					t.Errorf("span %q is a %s span, want server", s.Name, s.Kind)
				}
				servers++
				if s.Attrs["flightcache.cache_status"] == "" {
					t.Errorf("server span %s has no flightcache.cache_status: %v", s.ID, s.Attrs)
				}
			default:
				t.Errorf("unexpected span %q", s.Name)
			}
		}
		if servers != herdCallers {
			t.Errorf("%d server spans in a process, want %d", servers, herdCallers)
		}
		if len(fills) != 1 {
			t.Fatalf("%d fill spans in a process, want 1 (its one fill; none for collapsed requests and hits)", len(fills))
		}
		fill := fills[0]
		if p, ok := byID[fill.Parent]; !ok || p.Kind != "server" || p.Trace != fill.Trace {
			t.Errorf("fill span's parent is %+v, want a server span of its trace", p)
		}
		if p := byID[fill.Parent]; p.Attrs["flightcache.cache_status"] != "miss" && p.Attrs["flightcache.cache_status"] != "waited" {
			t.Errorf("the fill's server span says %q, want miss or waited", p.Attrs["flightcache.cache_status"])
		}
		switch {
		case len(fetches) == 1 && len(waits) == 0:
			if fillerFill != nil {
				t.Fatal("two processes fetched")
			}
			fillerFill = &fill
			if fetches[0].Parent != fill.ID {
				t.Errorf("fetch span's parent = %s, want the fill span %s", fetches[0].Parent, fill.ID)
			}
		case len(fetches) == 0 && len(waits) == 1:
			if waits[0].Parent != fill.ID {
				t.Errorf("wait span's parent = %s, want the fill span %s", waits[0].Parent, fill.ID)
			}
		default:
			t.Errorf("a process has %d fetch and %d wait spans, want 1 and 0 or 0 and 1", len(fetches), len(waits))
		}
	}
	if fillerFill == nil {
		t.Fatal("no process fetched")
	}
	want := fillerFill.Trace + "/" + fillerFill.ID
	for _, r := range reports {
		for _, s := range r.Spans {
			if s.Name != flightotel.SpanWait {
				continue
			}
			if len(s.Links) != 1 || s.Links[0] != want {
				t.Errorf("wait span links to %v, want [%s] (the filler's fill span)", s.Links, want)
			}
			if s.Attrs["flightcache.woken"] != "notify" {
				t.Errorf("wait span woken by %q, want notify", s.Attrs["flightcache.woken"])
			}
		}
	}
}

// runHerdChild is one herd process: it serves GET /item/{id} through
// otelhttp and nethttpmw, fires herdCallers requests at it when told,
// and reports its telemetry on stdout.
func runHerdChild(ns string) int {
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("FLIGHTCACHE_REDIS_ADDR")})
	defer rdb.Close()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	tel := flightotel.New(flightotel.WithMeterProvider(mp), flightotel.WithTracerProvider(tp))

	var out sync.Mutex
	say := func(s string) {
		out.Lock()
		defer out.Unlock()
		fmt.Println(s)
	}
	events := tel.Events()
	// A waiting fill finds the lock held twice before it first pauses:
	// in the fill, then in the wait, once subscribed to the key's
	// notifications, so that a commit from here on wakes it.
	lock := events.Lock
	var held atomic.Int32
	events.Lock = func(ctx context.Context, o core.LockOutcome) {
		lock(ctx, o)
		if o == core.LockHeld {
			if held.Add(1) == 2 {
				say("waiting")
			}
		}
	}
	store := core.NewRedisStore(rdb)
	defer store.Close()
	// Long poll and wait bounds: only the notification wakes a waiter.
	c := core.New(store, core.WithNamespace(ns), core.WithEvents(events),
		core.WithPollInterval(time.Minute), core.WithWaitTimeout(time.Minute))

	mux := http.NewServeMux()
	mux.Handle("GET /item/{id}", nethttpmw.Middleware(c)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		say("fetching")
		rdb.BLPop(context.Background(), time.Minute, ns+":release")
		fmt.Fprintf(w, "item %s from process %d", r.PathValue("id"), os.Getpid())
	})))
	srv := httptest.NewServer(otelhttp.NewHandler(mux, serverSpan, otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(mp)))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: herdCallers}}

	say("ready")
	if line, _ := bufio.NewReader(os.Stdin).ReadString('\n'); line != "go\n" {
		return 2
	}
	bodies := make([]string, herdCallers)
	var wg sync.WaitGroup
	for i := range bodies {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/item/7", nil)
			req.Host = "herd.test" // one key for every process: the key has the host
			resp, err := client.Do(req)
			if err != nil {
				bodies[i] = err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			bodies[i] = string(b)
		})
	}
	wg.Wait()
	srv.Close() // the server spans end with their handlers

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r := childReport{Sums: sums(rm), Bodies: bodies}
	for _, s := range spans.Ended() {
		info := spanInfo{Name: s.Name(), Kind: s.SpanKind().String(), Trace: s.SpanContext().TraceID().String(), ID: s.SpanContext().SpanID().String(), Attrs: map[string]string{}}
		if s.Parent().IsValid() {
			info.Parent = s.Parent().SpanID().String()
		}
		for _, l := range s.Links() {
			info.Links = append(info.Links, l.SpanContext.TraceID().String()+"/"+l.SpanContext.SpanID().String())
		}
		for _, kv := range s.Attributes() {
			info.Attrs[string(kv.Key)] = kv.Value.Emit()
		}
		r.Spans = append(r.Spans, info)
	}
	b, _ := json.Marshal(r)
	say("report " + string(b))
	return 0
}

// sums flattens the flightcache metrics of rm to "name{k=v,...}" → the
// counter's value or the histogram's count.
func sums(rm metricdata.ResourceMetrics) map[string]int64 {
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != flightotel.ScopeName {
			continue
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[m.Name+attrString(p.Attributes)] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[m.Name+attrString(p.Attributes)] += int64(p.Count)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[m.Name+attrString(p.Attributes)] = p.Value
				}
			}
		}
	}
	return out
}

func attrString(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.Emit())
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}
