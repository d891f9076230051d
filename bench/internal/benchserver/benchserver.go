// Package benchserver is the contract between the stampede benchmark
// (bench/stampede) and the servers it runs, and the code every
// such server shares so that their origins are identical.
//
// The harness starts each server process as
//
//	<binary> -listen 127.0.0.1:PORT -redis ADDR -run RUNID -origin-delay 200ms
//
// and the server must answer
//
//   - GET /healthz with 200 once it is ready to serve;
//   - GET /item/{id} with what its cache in front of [Origin] answers. The
//     origin counts each of its calls with Redis INCR on [CallsKey](RUNID),
//     sleeps for the origin delay and returns [Body]: "call <n> ...",
//     padded to [BodySize] bytes, unique per origin call;
//
// and shut down on SIGTERM. Optionally, a server whose cache counts the
// store errors it absorbed serves its counters at [StatsPath]. Every request the harness sends carries the
// same Host header, as a load balancer in front of a fleet forwards it, so
// caches that key on the host share entries across the processes.
// RUNID is unique per fleet; the harness uses a fresh id per measurement,
// so servers need not clear anything between runs.
package benchserver

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
)

// BodySize is the length of every origin response body.
const BodySize = 2048

// ItemPrefix is the path prefix of the cached endpoint: GET ItemPrefix+id.
const ItemPrefix = "/item/"

// StatsPath is where a server may answer a JSON object of its cache's
// counters; the harness reads "errors": the store errors the cache absorbed
// by serving uncached (failing open), since the server started.
const StatsPath = "/debug/cache-stats"

// Config is what the harness tells a server process on its command line.
type Config struct {
	Listen      string        // -listen: loopback address to serve on
	Redis       string        // -redis: the shared Redis, host:port
	Run         string        // -run: the fleet's run id, see [CallsKey]
	OriginDelay time.Duration // -origin-delay: how long each origin call takes
}

// RegisterFlags defines the contract's flags on fs, storing into c.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "loopback address to serve on")
	fs.StringVar(&c.Redis, "redis", "", "shared Redis host:port (required)")
	fs.StringVar(&c.Run, "run", "", "run id: the origin counts its calls at flightcache-bench:{RUNID}:calls (required)")
	fs.DurationVar(&c.OriginDelay, "origin-delay", 200*time.Millisecond, "how long each origin call takes")
}

// runPattern keeps run ids short and safe in Redis key names and cache
// namespaces.
var runPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,48}$`)

// Check reports a missing or malformed setting.
func (c Config) Check() error {
	switch {
	case c.Redis == "":
		return errors.New("benchserver: -redis host:port is required")
	case !runPattern.MatchString(c.Run):
		return fmt.Errorf("benchserver: -run %q: want 1 to 48 characters from [A-Za-z0-9_.-]", c.Run)
	case c.OriginDelay < 0:
		return fmt.Errorf("benchserver: -origin-delay %v: must not be negative", c.OriginDelay)
	}
	return nil
}

// Args returns the command line that starts a server with c.
func (c Config) Args() []string {
	return []string{"-listen", c.Listen, "-redis", c.Redis, "-run", c.Run, "-origin-delay", c.OriginDelay.String()}
}

// CallsKey is the Redis key at which the origins of run count their
// calls: flightcache-bench:{RUNID}:calls, braces included (a Redis Cluster
// hash tag, so that a run's keys can live on one node).
func CallsKey(run string) string { return "flightcache-bench:{" + run + "}:calls" }

// NewRedisClient returns a client for the Redis at addr that honours the
// per-call context timeouts caches set.
func NewRedisClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
}

// Origin is the slow handler every strategy puts its cache in front of.
// It is safe for concurrent use.
type Origin struct {
	rdb   redis.UniversalClient
	run   string
	delay time.Duration

	// CacheControl, when not "", is sent with every body ServeHTTP
	// answers, for caches that honour the origin's freshness (a proxy).
	CacheControl string
}

// MaxBodySize bounds the size query parameter of [Origin.ServeHTTP].
const MaxBodySize = 1 << 20

// NewOrigin returns the origin of run, counting its calls in rdb.
func NewOrigin(rdb redis.UniversalClient, run string, delay time.Duration) *Origin {
	return &Origin{rdb: rdb, run: run, delay: delay}
}

// Render counts one origin call, takes the origin delay and returns the
// body for item. It stops early, with ctx's error, when ctx ends.
func (o *Origin) Render(ctx context.Context, item string) ([]byte, error) {
	return o.RenderSize(ctx, item, BodySize)
}

// RenderSize is Render with a body of size bytes.
func (o *Origin) RenderSize(ctx context.Context, item string, size int) ([]byte, error) {
	n, err := o.rdb.Incr(ctx, CallsKey(o.run)).Result()
	if err != nil {
		return nil, fmt.Errorf("benchserver: count origin call: %w", err)
	}
	t := time.NewTimer(o.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return BodyOfSize(n, o.run, item, size), nil
}

// ServeHTTP renders the item named by the path after [ItemPrefix] on the
// request's context, [BodySize] bytes long or as many as the query
// parameter size asks (up to [MaxBodySize]). A failed call to Redis is a
// 502.
func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	size := BodySize
	if v := r.URL.Query().Get("size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > MaxBodySize {
			http.Error(w, "size: want 1 to 1048576", http.StatusBadRequest)
			return
		}
		size = n
	}
	b, err := o.RenderSize(r.Context(), strings.TrimPrefix(r.URL.Path, ItemPrefix), size)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if o.CacheControl != "" {
		w.Header().Set("Cache-Control", o.CacheControl)
	}
	WriteBody(w, b)
}

// WriteBody answers 200 with body, an origin's rendering.
func WriteBody(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// Body returns origin call n's rendering of item in run: a first line
// "call <n> run <run> item <item>", then padding up to [BodySize] bytes.
func Body(n int64, run, item string) []byte { return BodyOfSize(n, run, item, BodySize) }

// BodyOfSize is [Body] padded to size bytes (or to its first line, if
// that is longer).
func BodyOfSize(n int64, run, item string, size int) []byte {
	b := make([]byte, 0, size)
	b = fmt.Appendf(b, "call %d run %s item %s\n", n, run, item)
	for len(b) < size-1 {
		b = append(b, '.')
	}
	return append(b, '\n')
}

// CallOf returns the origin call number a [Body] was rendered by.
func CallOf(body []byte) (int64, bool) {
	line, _, _ := bytes.Cut(body, []byte("\n"))
	var n int64
	if _, err := fmt.Sscanf(string(line), "call %d ", &n); err != nil {
		return 0, false
	}
	return n, true
}

// Healthz answers 200: the server is up.
func Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// CacheStats returns c's counters as a server answers them at [StatsPath].
func CacheStats(c *core.Cache) map[string]int64 {
	s := c.Stats()
	return map[string]int64{
		"hits": s.Hits.Load(), "misses": s.Misses.Load(), "fetches": s.Fetches.Load(),
		"collapsed": s.Collapsed.Load(), "waited": s.Waited.Load(), "commits": s.Commits.Load(),
		"lost_commits": s.LostCommits.Load(), "errors": s.Errors.Load(),
		"early_refreshes": s.EarlyRefreshes.Load(), "held_refreshes": s.HeldRefreshes.Load(),
	}
}

// Serve serves h on listen until SIGINT or SIGTERM, then waits (up to 10
// seconds) for the requests in flight, slow fills included, before
// returning, so that the caller closes its store only after them. who
// names the server in what it prints.
func Serve(who, listen string, h http.Handler) {
	srv := &http.Server{Addr: listen, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	fmt.Fprintf(os.Stderr, "%s: listening on http://%s%s1\n", who, listen, ItemPrefix)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
	<-drained
}
