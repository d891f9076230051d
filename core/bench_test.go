package core_test

import (
	"context"
	"fmt"
	"slices"
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
// with the tombstone and its PUBLISH), a soft purge of a stored entry (a
// GET and a WATCHed replace), and a PurgeURL. It reports the p50 and p99
// latency of the purges.
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
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
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
