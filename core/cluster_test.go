package core_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
)

// TestClusterKeyNamesShareOneSlot fills a key on a Redis Cluster and checks
// the names Redis actually saw: the value key, the lock taken during the
// fetch and the channel the commit published on all hash to one slot, as
// WATCH, pipelining and the lock need. Many keys must also spread over more
// than one master, or a constant hash tag would pass the first check.
func TestClusterKeyNamesShareOneSlot(t *testing.T) {
	addrs := clusterAddrs(t)
	rdb := newClusterClient(t, addrs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	store := core.NewRedisStore(rdb)
	defer store.Close()
	spy := &keySpy{Store: store}
	ns := fmt.Sprintf("slot%d-%d", os.Getpid(), time.Now().UnixNano())
	c := core.New(spy, core.WithNamespace(ns))

	// Plain PUBLISH reaches every node of a cluster, so one pattern
	// subscription sees the commit's channel wherever it was published.
	ps := rdb.PSubscribe(ctx, ns+":*")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("PSUBSCRIBE: %v", err)
	}
	published := ps.Channel()

	var locks []string
	var lockErr error
	_, err := c.Do(ctx, "k", func(ctx context.Context) ([]byte, time.Duration, error) {
		locks, lockErr = keys(ctx, rdb, ns+":*:lock") // held while we fetch
		return []byte("v"), 0, nil
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if len(spy.keys) != 1 {
		t.Fatalf("store keys committed = %q, want one", spy.keys)
	}
	key := spy.keys[0]
	if !strings.HasPrefix(key, ns+":{") || !strings.HasSuffix(key, "}") {
		t.Errorf("store key = %q, want %q", key, ns+":{<hash>}")
	}
	if err := rdb.Get(ctx, key).Err(); err != nil {
		t.Errorf("GET %q after the fill: %v", key, err)
	}
	if lockErr != nil || len(locks) != 1 {
		t.Fatalf("lock keys during the fetch = %q, %v; want one", locks, lockErr)
	}
	var channel string
	select {
	case msg := <-published:
		channel = msg.Channel
	case <-ctx.Done():
		t.Fatal("no PUBLISH seen for the commit")
	}

	want := keySlot(ctx, t, rdb, key)
	for _, name := range []string{locks[0], channel} {
		if !strings.HasPrefix(name, key) {
			t.Errorf("name %q does not extend the value key %q", name, key)
		}
		if got := keySlot(ctx, t, rdb, name); got != want {
			t.Errorf("CLUSTER KEYSLOT %q = %d, want %d, the slot of value key %q", name, got, want, key)
		}
	}

	const n = 64
	for i := range n {
		if _, err := c.Do(ctx, fmt.Sprintf("spread-%d", i), func(context.Context) ([]byte, time.Duration, error) {
			return []byte("v"), 0, nil
		}); err != nil {
			t.Fatalf("Do: %v", err)
		}
	}
	slots := map[int64]bool{}
	masters := map[string]bool{}
	for _, key := range spy.keys[1:] {
		slots[keySlot(ctx, t, rdb, key)] = true
		node, err := rdb.MasterForKey(ctx, key)
		if err != nil {
			t.Fatalf("MasterForKey(%q): %v", key, err)
		}
		masters[node.Options().Addr] = true
	}
	if len(slots) < 2 || len(masters) < 2 {
		t.Errorf("%d keys landed in %d slots on %d masters, want them spread over more than one master", n, len(slots), len(masters))
	}
}

// keySlot asks the cluster which slot name hashes to.
func keySlot(ctx context.Context, t *testing.T, rdb *redis.ClusterClient, name string) int64 {
	t.Helper()
	slot, err := rdb.ClusterKeySlot(ctx, name).Result()
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT %q: %v", name, err)
	}
	return slot
}
