package core_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
)

// TestRedlockQuorumSurvivesANodeDown takes fill locks on 3 independent
// redis-servers: with one down the lock still holds the herd to one origin
// call; with two down the cache fails open and SET NX keeps one value.
func TestRedlockQuorumSurvivesANodeDown(t *testing.T) {
	addr := realRedisAddr(t)
	nodes := []*redisServer{startRedisServer(t), startRedisServer(t), startRedisServer(t)}
	newCaches := func(ns core.Option) []*core.Cache {
		cs := make([]*core.Cache, 4)
		for i := range cs {
			lockClients := make([]redis.UniversalClient, len(nodes))
			for j, n := range nodes {
				lockClients[j] = newClient(t, n.Addr())
			}
			s := core.NewRedisStore(newClient(t, addr), core.WithLockNodes(lockClients...))
			t.Cleanup(func() { s.Close() })
			cs[i] = core.New(s, ns, core.WithStoreTimeout(2*time.Second), core.WithoutBreaker())
		}
		return cs
	}

	nodes[2].Stop()
	o := newOrigin()
	o.release = make(chan struct{})
	go func() {
		<-o.started
		time.Sleep(100 * time.Millisecond) // let the herd pile up behind the fill
		close(o.release)
	}()
	got := stampede(t, newCaches(namespace(t)), 50, "k", o.fetch)
	if n := o.calls.Load(); n != 1 {
		t.Errorf("with 1 of 3 lock nodes down: origin called %d times, want 1 (quorum of 2 holds)", n)
	}
	if d := distinct(got); len(d) != 1 {
		t.Errorf("with 1 of 3 lock nodes down: %d distinct values, want 1", len(d))
	}

	nodes[1].Stop()
	o2 := newOrigin()
	got = stampede(t, newCaches(namespace(t)), 50, "k", o2.fetch)
	if n := o2.calls.Load(); n < 1 || n > 4 {
		t.Errorf("with 2 of 3 lock nodes down: origin called %d times, want 1 to 4 (no lock, once per process)", n)
	}
	if d := distinct(got); len(d) != 1 {
		t.Errorf("with 2 of 3 lock nodes down: %d distinct values, want the one committed value", len(d))
	}
}
