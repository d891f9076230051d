package core_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/internal/testhook"
)

// deliveryBackends are the Redis deployments the delivery tests run on.
// On a cluster the keys of a test live on several masters, so that
// invalidations reach a subscription through other nodes.
var deliveryBackends = []struct {
	name   string
	client func(t *testing.T) redis.UniversalClient
}{
	{"redis", func(t *testing.T) redis.UniversalClient { return newClient(t, realRedisAddr(t)) }},
	{"cluster", func(t *testing.T) redis.UniversalClient { return newClusterClient(t, clusterAddrs(t)) }},
}

const deliveryKeys = 8

// TestInvalidationReachesEveryTierBeforeItReturns: once a purge (key,
// soft, URL, tag) or an unsafe request in one process returned, another
// process's local tier serves nothing it replaced, at once, with no wait.
func TestInvalidationReachesEveryTierBeforeItReturns(t *testing.T) {
	for _, b := range deliveryBackends {
		t.Run(b.name, func(t *testing.T) {
			ns := tierNamespace()
			holder := core.NewRedisStore(b.client(t))
			t.Cleanup(func() { holder.Close() })
			writer := core.NewRedisStore(b.client(t))
			t.Cleanup(func() { writer.Close() })
			reader := core.New(holder, ns, core.WithLocalTier(1<<20))
			purger := core.New(writer, ns)
			ctx := context.Background()

			for _, kind := range []string{"purge", "soft", "url", "post", "tag"} {
				for i := range deliveryKeys {
					key := fmt.Sprintf("%s-%d", kind, i)
					url := "http://example.com/" + key
					var version string
					fill := func() string {
						switch kind {
						case "url", "post":
							return serveURL(t, reader, "GET", url, &version)
						case "tag":
							v, err := reader.DoTagged(ctx, key, func(context.Context) ([]byte, []string, time.Duration, error) {
								return []byte(version), []string{"t-" + key}, time.Hour, nil
							})
							if err != nil {
								t.Fatal(err)
							}
							return string(v)
						}
						return do(t, reader, key, func(context.Context) ([]byte, time.Duration, error) {
							return []byte(version), time.Hour, nil
						})
					}
					version = "v1"
					fill()
					if kind == "tag" {
						fill() // a tagged entry enters the tier when read back
					}
					hits := reader.Stats().LocalHits.Load()
					if got := fill(); got != "v1" || reader.Stats().LocalHits.Load() != hits+1 {
						t.Fatalf("%s: second read = %q (local hits %d -> %d), want v1 from the local tier", key, got, hits, reader.Stats().LocalHits.Load())
					}
					version = "v2"
					var err error
					switch kind {
					case "purge":
						err = purger.Purge(ctx, key)
					case "soft":
						err = purger.Purge(ctx, key, core.Soft())
					case "url":
						err = purger.PurgeURL(ctx, url)
					case "post":
						if got := serveURL(t, purger, "POST", url, &version); got != "" {
							t.Fatalf("POST answered %q", got)
						}
					case "tag":
						err = purger.PurgeTags(ctx, "t-"+key)
					}
					if err != nil {
						t.Fatalf("%s: %v", key, err)
					}
					if got := fill(); got != "v2" {
						t.Errorf("%s: read right after the %s returned = %q, want v2", key, kind, got)
					}
				}
			}
		})
	}
}

// TestPurgeWaitsOutATierThatCannotBeTold: a process whose deliveries
// are held back (a paused process, a slow link) cannot answer; the purge
// returns only once that process's lease ran out, and the process then
// reads through to Redis instead of serving its copy.
func TestPurgeWaitsOutATierThatCannotBeTold(t *testing.T) {
	for _, b := range deliveryBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ns := tierNamespace()
			// A lease shorter than the purger's own: the purger waits out
			// the reader's, not its own.
			holder := core.NewRedisStore(b.client(t), core.WithInvalidationLease(300*time.Millisecond))
			t.Cleanup(func() { holder.Close() })
			writer := core.NewRedisStore(b.client(t), core.WithInvalidationLease(100*time.Millisecond))
			t.Cleanup(func() { writer.Close() })
			reader := core.New(holder, ns, core.WithLocalTier(1<<20))
			purger := core.New(writer, ns)
			ctx := context.Background()

			// Even keys are purged by key, odd ones carry a tag and are
			// purged by tag.
			read := func(i int, v string) string {
				key := fmt.Sprintf("k%d", i)
				got, err := reader.DoTagged(ctx, key, func(context.Context) ([]byte, []string, time.Duration, error) {
					if v == "" {
						t.Errorf("%s: unexpected fetch", key)
					}
					var tags []string
					if i%2 == 1 {
						tags = []string{"t-" + key}
					}
					return []byte(v), tags, time.Hour, nil
				})
				if err != nil {
					t.Fatal(err)
				}
				return string(got)
			}
			for i := range deliveryKeys {
				read(i, "v1")
				read(i, "") // a tagged entry enters the tier when read back
				if got := read(i, ""); got != "v1" {
					t.Fatalf("k%d = %q, want v1", i, got)
				}
			}
			if h := reader.Stats().LocalHits.Load(); h != deliveryKeys+deliveryKeys/2 {
				t.Fatalf("local hits = %d, want %d", h, deliveryKeys+deliveryKeys/2)
			}

			var hold sync.WaitGroup
			hold.Add(1)
			release := sync.OnceFunc(hold.Done)
			defer release()
			testhook.OnDeliver(holder, func(channel string) {
				if strings.HasSuffix(channel, ":invalidated") {
					hold.Wait()
				}
			})
			for i := range deliveryKeys {
				key := fmt.Sprintf("k%d", i)
				var err error
				if i%2 == 0 {
					err = purger.Purge(ctx, key)
				} else {
					err = purger.PurgeTags(ctx, "t-"+key)
				}
				if err != nil {
					t.Fatal(err)
				}
				// The reader was not told; it must no longer trust its copies.
				if holder.InvalidationsCurrent() {
					t.Fatalf("purge of %s returned while the reader, not told of it, still held a lease", key)
				}
				if got := read(i, "v2"); got != "v2" {
					t.Errorf("%s after its purge returned = %q, want v2 (the reader's copy is from before it)", key, got)
				}
			}
			release()
			waitUntil(t, "the reader's lease to come back", holder.InvalidationsCurrent)
			hits := reader.Stats().LocalHits.Load()
			for i := range deliveryKeys {
				read(i, "") // a tagged entry enters the tier when read back
				if got := read(i, ""); got != "v2" {
					t.Errorf("k%d once deliveries resumed = %q, want v2", i, got)
				}
			}
			if got := reader.Stats().LocalHits.Load() - hits; got < deliveryKeys {
				t.Errorf("local hits once deliveries resumed = %d, want %d (tagged entries too)", got, deliveryKeys)
			}
		})
	}
}

// serveURL serves method url through c's middleware with a handler that
// answers a GET with *version (cacheable for an hour) and anything else
// with 204, and returns the body.
func serveURL(t *testing.T, c *core.Cache, method, url string, version *string) string {
	t.Helper()
	w := httptest.NewRecorder()
	err := c.Middleware().Serve(w, httptest.NewRequest(method, url, nil), "", func(w http.ResponseWriter, r *http.Request) error {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		w.Header().Set("Cache-Control", "max-age=3600")
		_, err := w.Write([]byte(*version))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return w.Body.String()
}
