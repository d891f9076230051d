package core_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core"
)

// BenchmarkStampede measures one herd per iteration: 4 caches (separate
// Redis clients, as separate processes) x 100 callers on a cold key, origin
// 50 ms. It reports origin calls per herd and how long callers waited after
// the origin returned (wake-up: commit, notification, read), comparing
// pub/sub wake-ups with polling alone.
func BenchmarkStampede(b *testing.B) {
	addr := realRedisAddr(b)
	for _, mode := range []struct {
		name string
		wrap func(core.Store) core.Store
	}{
		{"pubsub", func(s core.Store) core.Store { return s }},
		{"polling", func(s core.Store) core.Store { return noWakeStore{s} }},
	} {
		b.Run(mode.name, func(b *testing.B) {
			const procs, callers, originDelay = 4, 100, 50 * time.Millisecond
			ns := namespace(b)
			cs := make([]*core.Cache, procs)
			for i := range cs {
				s := core.NewRedisStore(newClient(b, addr))
				b.Cleanup(func() { s.Close() })
				cs[i] = core.New(mode.wrap(s), ns)
				warm(b, cs[i], fmt.Sprintf("warm-%d", i)) // dial pool connections and the subscription
			}
			var lags []time.Duration
			var calls int
			for i := 0; b.Loop(); i++ {
				key := fmt.Sprintf("herd-%d", i)
				var originEnd time.Time
				var mu sync.Mutex
				fetch := func(context.Context) ([]byte, time.Duration, error) {
					time.Sleep(originDelay)
					mu.Lock()
					calls++
					originEnd = time.Now()
					mu.Unlock()
					return []byte(key), 0, nil
				}
				done := make([]time.Time, procs*callers)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for j := range done {
					wg.Go(func() {
						<-start
						if _, err := cs[j%procs].Do(context.Background(), key, fetch); err != nil {
							b.Error(err)
						}
						done[j] = time.Now()
					})
				}
				close(start)
				wg.Wait()
				for _, d := range done {
					lags = append(lags, d.Sub(originEnd))
				}
			}
			slices.Sort(lags)
			b.ReportMetric(float64(calls)/float64(b.N), "origin-calls/op")
			b.ReportMetric(ms(lags[len(lags)/2]), "wake-p50-ms")
			b.ReportMetric(ms(lags[len(lags)*99/100]), "wake-p99-ms")
		})
	}
}

func warm(b *testing.B, c *core.Cache, key string) {
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			c.Do(context.Background(), key, func(context.Context) ([]byte, time.Duration, error) {
				time.Sleep(10 * time.Millisecond)
				return []byte("warm"), 0, nil
			})
		})
	}
	wg.Wait()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkLocalTierHit compares a hit served by the local tier
// (WithLocalTier) with a hit from Redis and with its floor, one raw GET of
// the same stored bytes, in the same run.
func BenchmarkLocalTierHit(b *testing.B) {
	addr := realRedisAddr(b)
	rdb := newClient(b, addr)
	store := core.NewRedisStore(rdb)
	b.Cleanup(func() { store.Close() })
	spy := &tierSpy{Store: store}
	ns := tierNamespace()
	c := core.New(spy, ns)
	local := core.New(store, ns, core.WithLocalTier(64<<20))
	body := make([]byte, 2048)
	ctx := context.Background()
	c.Do(ctx, "hot", func(context.Context) ([]byte, time.Duration, error) { return body, time.Hour, nil })
	key := spy.committed()[0]
	b.Run("path=raw-get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := rdb.Get(ctx, key).Bytes(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("path=do-hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Do(ctx, "hot", nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("path=do-l1-hit", func(b *testing.B) {
		// The first call reads Redis and fills the local tier; every call
		// timed below, even a -benchtime=1x smoke run's one, is a local hit.
		if _, err := local.Do(ctx, "hot", nil); err != nil {
			b.Fatal(err)
		}
		before := local.Stats().LocalHits.Load()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := local.Do(ctx, "hot", nil); err != nil {
				b.Fatal(err)
			}
		}
		if got := local.Stats().LocalHits.Load() - before; got != int64(b.N) {
			b.Fatalf("local tier served %d of %d hits", got, b.N)
		}
	})
}

// BenchmarkPurge measures one invalidation per iteration on real Redis,
// beside a hit on the same Redis as the baseline: a hard purge (one MULTI
// with the tombstone and its PUBLISH, then the registry of local tiers
// read), a soft purge of a stored entry (a GET and a WATCHed replace, then
// the registry), and a PurgeURL; first with no local tier anywhere
// (tiers=0), then with two other stores keeping local tiers (tiers=2, as
// two other processes would), whose answers each purge waits for. It
// reports the p50 and p99 latency of the purges.
func BenchmarkPurge(b *testing.B) {
	addr := realRedisAddr(b)
	s := core.NewRedisStore(newClient(b, addr))
	b.Cleanup(func() { s.Close() })
	c := core.New(s, namespace(b))
	ctx := context.Background()
	fill := func(key string) {
		if _, err := c.Do(ctx, key, func(context.Context) ([]byte, time.Duration, error) {
			return []byte("value"), time.Hour, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	cases := []struct {
		name    string
		prepare func(i int) // untimed
		op      func(i int) error
	}{
		{"op=hit", nil, func(int) error { fill("hit"); return nil }},
		{"op=purge", nil, func(i int) error { return c.Purge(ctx, fmt.Sprint("k", i%64)) }},
		{"op=soft", func(i int) { fill(fmt.Sprint("s", i)) }, func(i int) error {
			return c.Purge(ctx, fmt.Sprint("s", i), core.Soft()) // a stored entry, kept as purged
		}},
		{"op=url", nil, func(i int) error { return c.PurgeURL(ctx, fmt.Sprintf("https://shop.example/p/%d", i%64)) }},
	}
	fill("hit")
	for _, tiers := range []int{0, 2} {
		for range tiers {
			other := core.NewRedisStore(newClient(b, addr))
			b.Cleanup(func() { other.Close() })
			oc := core.New(other, namespace(b), core.WithLocalTier(1<<20))
			// The first read starts the tier's watch, and its heartbeat.
			if _, err := oc.Do(ctx, "warm", func(context.Context) ([]byte, time.Duration, error) {
				return []byte("value"), time.Hour, nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		for _, tc := range cases {
			if tiers > 0 && tc.name == "op=hit" {
				continue // the baseline does not change
			}
			b.Run(fmt.Sprintf("%s/tiers=%d", tc.name, tiers), func(b *testing.B) {
				b.ReportAllocs()
				var lat []time.Duration
				for i := 0; b.Loop(); i++ {
					if tc.prepare != nil {
						b.StopTimer()
						tc.prepare(i)
						b.StartTimer()
					}
					start := time.Now()
					if err := tc.op(i); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(start))
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}

// BenchmarkTags compares, on real Redis in one run, a hit on an untagged
// value (the baseline: one GET), hits on values carrying 1 and 8 tags
// (one GET, then one pipelined read of the tags' purge versions), hits
// through the HTTP middleware untagged and tagged, and a purge of one tag
// (ZINCRBY, then a pipeline of one ZADD).
func BenchmarkTags(b *testing.B) {
	addr := realRedisAddr(b)
	store := core.NewRedisStore(newClient(b, addr))
	b.Cleanup(func() { store.Close() })
	c := core.New(store, namespace(b))
	ctx := context.Background()
	body := make([]byte, 2048)
	tags := make([]string, 8)
	for i := range tags {
		tags[i] = fmt.Sprintf("product-%d", i)
	}
	for _, tt := range []struct {
		name string
		tags []string
	}{
		{"path=do-hit/tags=0", nil},
		{"path=do-hit/tags=1", tags[:1]},
		{"path=do-hit/tags=8", tags},
	} {
		b.Run(tt.name, func(b *testing.B) {
			fetch := func(context.Context) ([]byte, []string, time.Duration, error) { return body, tt.tags, time.Hour, nil }
			if _, err := c.DoTagged(ctx, tt.name, fetch); err != nil {
				b.Fatal(err)
			}
			hits := c.Stats().Hits.Load()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.DoTagged(ctx, tt.name, fetch); err != nil {
					b.Fatal(err)
				}
			}
			if got := c.Stats().Hits.Load() - hits; got != int64(b.N) {
				b.Fatalf("%d of %d calls were hits", got, b.N)
			}
		})
	}
	for _, tt := range []struct {
		name string
		tag  string
	}{
		{"path=http-hit/tags=0", ""},
		{"path=http-hit/tags=1", "product-1"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			mw := c.Middleware()
			next := func(w http.ResponseWriter, r *http.Request) error {
				if tt.tag != "" {
					w.Header().Set("Surrogate-Key", tt.tag)
				}
				w.Header().Set("Cache-Control", "max-age=3600")
				w.Write(body)
				return nil
			}
			r := httptest.NewRequest(http.MethodGet, "http://example.com/"+strings.ReplaceAll(tt.name, "/", "-"), nil)
			mw.Serve(httptest.NewRecorder(), r, "", next)
			hits := c.Stats().Hits.Load()
			b.ReportAllocs()
			for b.Loop() {
				mw.Serve(discard{header: http.Header{}}, r, "", next)
			}
			if got := c.Stats().Hits.Load() - hits; got != int64(b.N) {
				b.Fatalf("%d of %d requests were hits", got, b.N)
			}
		})
	}
	b.Run("path=interleaved", func(b *testing.B) {
		// One untagged hit, one hit with 1 tag and one purge of a tag
		// per iteration, each timed: on a shared machine the ratios
		// hold better than those of separate runs.
		untagged := func(context.Context) ([]byte, []string, time.Duration, error) { return body, nil, time.Hour, nil }
		tagged := func(context.Context) ([]byte, []string, time.Duration, error) { return body, tags[:1], time.Hour, nil }
		c.DoTagged(ctx, "i-untagged", untagged)
		c.DoTagged(ctx, "i-tagged", tagged)
		var spent [3]time.Duration
		for b.Loop() {
			for i, f := range []func() error{
				func() error { _, err := c.DoTagged(ctx, "i-untagged", untagged); return err },
				func() error { _, err := c.DoTagged(ctx, "i-tagged", tagged); return err },
				func() error { return c.PurgeTags(ctx, "purged") },
			} {
				start := time.Now()
				if err := f(); err != nil {
					b.Fatal(err)
				}
				spent[i] += time.Since(start)
			}
		}
		b.ReportMetric(float64(spent[0].Nanoseconds())/float64(b.N), "untagged-hit-ns")
		b.ReportMetric(float64(spent[1])/float64(spent[0]), "tagged-hit/untagged-hit")
		b.ReportMetric(float64(spent[2])/float64(spent[0]), "purge/untagged-hit")
	})
	b.Run("path=purge/tags=1", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := c.PurgeTags(ctx, "purged"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// discard is a ResponseWriter that keeps nothing but a header map, which
// it empties for the next request.
type discard struct{ header http.Header }

func (d discard) Header() http.Header { return d.header }
func (d discard) WriteHeader(int)     { clear(d.header) }
func (d discard) Write(b []byte) (int, error) {
	return len(b), nil
}
