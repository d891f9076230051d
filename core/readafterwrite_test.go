package core_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/internal/testhook"
)

// The read-after-write fleet test: rawProcs processes share one Redis (or
// Cluster). Each runs rawReaders readers and one writer over rawTargets
// Do keys and rawTargets URLs. The "database" is a version counter per
// target in Redis; the origin reads it and takes rawOriginDelay, longer
// than the time between writes, so that writes land mid-fill. A writer
// bumps a version, invalidates (Purge, soft Purge, PurgeURL, a POST
// through the middleware, or PurgeTags, at random) and, once that returned, records
// the version as acknowledged. A reader notes the acknowledged version
// before it reads: a value older than that is a read that started after
// an acknowledged write and returned older data. Every HTTP response is
// tagged "t-<target>" by its handler, and the even Do targets are read
// with DoTagged under the same kind of tag, so that tag purges (and the
// other invalidations) meet tagged entries.
const (
	rawProcs       = 3
	rawReaders     = 16
	rawTargets     = 4
	rawReadsPerPro = 3400 // 3 x 3400 > 10,000 reads in all
	rawOriginDelay = 8 * time.Millisecond
	rawWriteEvery  = 2 * time.Millisecond

	modeReadAfterWrite = "read-after-write"
	rawClusterEnv      = "FLIGHTCACHE_TEST_CHILD_CLUSTER"
	rawUnfencedEnv     = "FLIGHTCACHE_TEST_CHILD_UNFENCED"
	rawTierEnv         = "FLIGHTCACHE_TEST_CHILD_TIER"
	rawUndeliveredEnv  = "FLIGHTCACHE_TEST_CHILD_UNDELIVERED"

	// rawDeliveryDelay holds back each invalidation message a child with
	// a local tier receives, as a slow network or a paused process would:
	// without the wait for every tier, reads in other processes would
	// find their copies still there.
	rawDeliveryDelay = 3 * time.Millisecond
	rawReadsEnv      = "FLIGHTCACHE_TEST_CHILD_READS"
)

// ackScript raises a key to ARGV[1] if it is lower.
var ackScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1], 'EX', 600) end
return 1`)

type rawTotals struct{ reads, stale, errors int }

// rawFleet says how the children of a read-after-write fleet run.
type rawFleet struct {
	cluster     []string // a Redis Cluster instead of the single server
	tier        bool     // every process keeps a local tier
	unfenced    bool     // the fence is off (testhook.Unfence)
	undelivered bool     // invalidations do not wait for other tiers (testhook.NoDeliveryWait)
	reads       int      // per process
}

// runReadAfterWrite runs the fleet and sums what the children report.
func runReadAfterWrite(t *testing.T, addr string, f rawFleet) rawTotals {
	cluster, readsPerProc := f.cluster, f.reads
	t.Helper()
	var rdb redis.UniversalClient
	if cluster != nil {
		rdb = newClusterClient(t, cluster)
	} else {
		rdb = newClient(t, addr)
	}
	ns := fmt.Sprintf("raw%d-%d", os.Getpid(), time.Now().UnixNano())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	outs := make([]bytes.Buffer, rawProcs)
	cmds := make([]*exec.Cmd, rawProcs)
	for i := range cmds {
		cmds[i] = exec.Command(exe, "-test.run=^$")
		cmds[i].Env = append(os.Environ(), childEnv+"="+ns, childModeEnv+"="+modeReadAfterWrite,
			"FLIGHTCACHE_REDIS_ADDR="+addr, rawClusterEnv+"="+strings.Join(cluster, ","),
			rawUnfencedEnv+"="+strconv.FormatBool(f.unfenced), rawReadsEnv+"="+strconv.Itoa(readsPerProc),
			rawTierEnv+"="+strconv.FormatBool(f.tier), rawUndeliveredEnv+"="+strconv.FormatBool(f.undelivered))
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
		cmd := cmds[i]
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
	}
	ctx := context.Background()
	waitUntil(t, "the children to get ready", func() bool {
		n, _ := rdb.Get(ctx, ns+":ready").Int()
		return n == rawProcs
	})
	for range rawProcs {
		rdb.RPush(ctx, ns+":go", "1")
	}
	var sum rawTotals
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, outs[i].String())
		}
		found := false
		sc := bufio.NewScanner(&outs[i])
		for sc.Scan() {
			var r rawTotals
			if _, err := fmt.Sscanf(sc.Text(), "TOTALS reads=%d stale=%d errors=%d", &r.reads, &r.stale, &r.errors); err == nil {
				sum.reads, sum.stale, sum.errors = sum.reads+r.reads, sum.stale+r.stale, sum.errors+r.errors
				found = true
			} else if strings.HasPrefix(sc.Text(), "STALE ") || strings.HasPrefix(sc.Text(), "ERROR ") || strings.HasPrefix(sc.Text(), "INFO ") {
				t.Log(sc.Text())
			}
		}
		if !found {
			t.Fatalf("child %d reported no totals:\n%s", i, outs[i].String())
		}
	}
	return sum
}

// TestReadAfterWriteAcrossProcesses is the guarantee of Purge, PurgeURL
// and unsafe requests across OS processes: of more than 10,000 reads, none
// that started after an acknowledged write returns older data.
func TestReadAfterWriteAcrossProcesses(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cluster func(t *testing.T) []string
		tier    bool
	}{
		{"redis", func(*testing.T) []string { return nil }, false},
		{"cluster", func(t *testing.T) []string { return clusterAddrs(t) }, false},
		{"redis/tier", func(*testing.T) []string { return nil }, true},
		{"cluster/tier", func(t *testing.T) []string { return clusterAddrs(t) }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // the fleets mostly wait on their origins
			got := runReadAfterWrite(t, realRedisAddr(t), rawFleet{cluster: tt.cluster(t), tier: tt.tier, reads: rawReadsPerPro})
			t.Logf("%d reads, %d stale after an acknowledged write, %d errors", got.reads, got.stale, got.errors)
			if got.reads < rawProcs*rawReadsPerPro {
				t.Errorf("%d reads, want %d", got.reads, rawProcs*rawReadsPerPro)
			}
			if got.stale != 0 {
				t.Errorf("%d reads started after an acknowledged write returned older data, want 0", got.stale)
			}
			if got.errors != 0 {
				t.Errorf("%d reads or writes failed, want 0", got.errors)
			}
		})
	}
}

// TestReadAfterWriteCatchesAnUnfencedCache runs the same fleet with the
// fence turned off, and with local tiers whose invalidations do not wait
// for the other processes' tiers: each must count stale reads, or the
// test above could not fail. A stale read needs a write to land in a
// narrow window, and how many do depends on scheduling (a loaded machine,
// or invalidations waiting out the lease of a process another test
// killed, make writes rarer): a fleet that saw none runs again, up to 3
// times, and only a fleet that never sees one fails.
func TestReadAfterWriteCatchesAnUnfencedCache(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fleet rawFleet
	}{
		{"unfenced", rawFleet{unfenced: true, reads: rawReadsPerPro / 3}},
		{"tier-undelivered", rawFleet{tier: true, undelivered: true, reads: rawReadsPerPro / 3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reads := 0
			for attempt := 1; attempt <= 3; attempt++ {
				got := runReadAfterWrite(t, realRedisAddr(t), tt.fleet)
				t.Logf("%s, fleet %d: %d reads, %d stale after an acknowledged write", tt.name, attempt, got.reads, got.stale)
				if got.stale > 0 {
					return
				}
				reads += got.reads
			}
			t.Errorf("%s: 0 of %d reads in 3 fleets were stale: the test cannot see what the guarantee prevents", tt.name, reads)
		})
	}
}

// runReadAfterWriteChild is one process of the read-after-write fleet.
func runReadAfterWriteChild(ns string) int {
	var rdb redis.UniversalClient
	if addrs := os.Getenv(rawClusterEnv); addrs != "" {
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), ContextTimeoutEnabled: true})
	} else {
		rdb = redis.NewClient(&redis.Options{Addr: os.Getenv("FLIGHTCACHE_REDIS_ADDR"), ContextTimeoutEnabled: true})
	}
	defer rdb.Close()
	store := core.NewRedisStore(rdb)
	defer store.Close()
	var absorbed atomic.Int64
	opts := []core.Option{core.WithNamespace(ns), core.WithStoreTimeout(2 * time.Second),
		core.WithObserver(func(err error) {
			// An absorbed error can void the guarantee (a failed
			// invalidation of a POST): each one counts as a failure.
			if absorbed.Add(1) <= 5 {
				fmt.Printf("ERROR absorbed: %v\n", err)
			}
		})}
	if os.Getenv(rawTierEnv) == "true" {
		opts = append(opts, core.WithLocalTier(1<<20))
		testhook.OnDeliver(store, func(channel string) {
			// Only this fleet's: fleets running side by side share the
			// subscription pattern.
			if strings.HasPrefix(channel, ns+":") && strings.HasSuffix(channel, ":invalidated") {
				time.Sleep(rawDeliveryDelay)
			}
		})
	}
	if os.Getenv(rawUndeliveredEnv) == "true" || os.Getenv(rawUnfencedEnv) == "true" {
		// The unfenced fleet keeps no tier: it shows what the fence
		// prevents, and its writes must not wait out the leases of
		// processes other tests left in the registry of tiers.
		testhook.NoDeliveryWait(store)
	}
	c := core.New(store, opts...)
	if os.Getenv(rawUnfencedEnv) == "true" {
		testhook.Unfence(c)
	}
	mw := c.Middleware()
	reads, _ := strconv.Atoi(os.Getenv(rawReadsEnv))
	ctx := context.Background()
	db := func(target string) string { return ns + ":db:" + target }
	acked := func(target string) string { return ns + ":acked:" + target }
	version := func(target string) ([]byte, error) {
		v, err := rdb.Get(ctx, db(target)).Int()
		if err != nil && err != redis.Nil {
			return nil, err
		}
		time.Sleep(rawOriginDelay)
		return []byte(strconv.Itoa(v)), nil
	}
	var written atomic.Int64 // the version the last POST wrote
	handler := func(w http.ResponseWriter, r *http.Request) error {
		target := strings.TrimPrefix(r.URL.Path, "/")
		if r.Method == http.MethodPost {
			n, err := rdb.Incr(ctx, db(target)).Result()
			if err != nil {
				return err
			}
			written.Store(n)
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		v, err := version(target)
		if err != nil {
			return err
		}
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Surrogate-Key", "t-"+target+" all")
		w.Write(v)
		return nil
	}

	if err := rdb.Incr(ctx, ns+":ready").Err(); err != nil {
		fmt.Println("ready:", err)
		return 1
	}
	if err := rdb.BLPop(ctx, 30*time.Second, ns+":go").Err(); err != nil {
		fmt.Println("go:", err)
		return 1
	}

	var stale, errs atomic.Int64
	fail := func(what string, err error) {
		if errs.Add(1) <= 5 {
			fmt.Printf("ERROR %s: %v\n", what, err)
		}
	}
	done := make(chan struct{})
	var writer sync.WaitGroup
	writer.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(rawWriteEvery):
			}
			i := rand.IntN(rawTargets)
			var target string
			var n int64
			var err error
			switch kind := rand.IntN(5); kind {
			case 0, 1: // Purge, hard or soft
				target = "do-" + strconv.Itoa(i)
				if n, err = rdb.Incr(ctx, db(target)).Result(); err == nil {
					var opts []core.PurgeOption
					if kind == 1 {
						opts = append(opts, core.Soft())
					}
					err = c.Purge(ctx, target, opts...)
				}
			case 2: // PurgeURL
				target = "http-" + strconv.Itoa(i)
				if n, err = rdb.Incr(ctx, db(target)).Result(); err == nil {
					err = c.PurgeURL(ctx, "http://example.com/"+target)
				}
			case 3: // POST through the middleware
				target = "http-" + strconv.Itoa(i)
				w := httptest.NewRecorder()
				err = mw.Serve(w, httptest.NewRequest(http.MethodPost, "http://example.com/"+target, nil), "", handler)
				if err == nil && w.Code != http.StatusNoContent {
					err = fmt.Errorf("POST answered %d", w.Code)
				}
				n = written.Load()
			case 4: // PurgeTags, of an HTTP target or a tagged Do target
				target = "http-" + strconv.Itoa(i)
				if rand.IntN(2) == 0 {
					target = "do-" + strconv.Itoa(i&^1)
				}
				if n, err = rdb.Incr(ctx, db(target)).Result(); err == nil {
					err = c.PurgeTags(ctx, "t-"+target)
				}
			}
			if err != nil {
				fail("write", err)
				continue
			}
			if err := ackScript.Run(ctx, rdb, []string{acked(target)}, n).Err(); err != nil {
				fail("ack", err)
			}
		}
	})
	var readers sync.WaitGroup
	var left atomic.Int64
	left.Store(int64(reads))
	for range rawReaders {
		readers.Go(func() {
			for left.Add(-1) >= 0 {
				i := rand.IntN(rawTargets)
				httpRead := rand.IntN(2) == 0
				target := "do-" + strconv.Itoa(i)
				if httpRead {
					target = "http-" + strconv.Itoa(i)
				}
				before, err := rdb.Get(ctx, acked(target)).Int()
				if err != nil && err != redis.Nil {
					fail("read ack", err)
					continue
				}
				var body string
				if httpRead {
					w := httptest.NewRecorder()
					err = mw.Serve(w, httptest.NewRequest(http.MethodGet, "http://example.com/"+target, nil), "", handler)
					body = w.Body.String()
				} else {
					var v []byte
					if i%2 == 0 {
						v, err = c.DoTagged(ctx, target, func(context.Context) ([]byte, []string, time.Duration, error) {
							v, err := version(target)
							return v, []string{"t-" + target, "all"}, time.Minute, err
						})
					} else {
						v, err = c.Do(ctx, target, func(context.Context) ([]byte, time.Duration, error) {
							v, err := version(target)
							return v, time.Minute, err
						})
					}
					body = string(v)
				}
				if err != nil {
					fail("read", err)
					continue
				}
				got, err := strconv.Atoi(body)
				if err != nil {
					fail("read", fmt.Errorf("body %q", body))
					continue
				}
				if got < before {
					if stale.Add(1) <= 5 {
						fmt.Printf("STALE %s: read %d after %d was acknowledged\n", target, got, before)
					}
				}
			}
		})
	}
	readers.Wait()
	close(done)
	writer.Wait()
	fmt.Printf("INFO local-tier hits=%d shared hits=%d\n", c.Stats().LocalHits.Load(), c.Stats().Hits.Load())
	fmt.Printf("TOTALS reads=%d stale=%d errors=%d\n", reads, stale.Load(), errs.Load()+absorbed.Load())
	return 0
}
