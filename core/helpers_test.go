package core_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/repotest"
)

// backend is one kind of shared store the engine suite runs against.
type backend struct {
	name string
	// open returns a function making stores that share data, as separate
	// processes on one Redis do, each with its own client; a function that
	// moves the store's clock; and a raw client to inspect Redis (nil for
	// the memory store).
	open func(t *testing.T) (newStore func() core.Store, advance func(time.Duration), raw redis.UniversalClient)
}

var backends = []backend{
	{"memory", openMemory},
	{"miniredis", openMiniredis},
	{"redis", openRealRedis},
	{"cluster", openCluster},
}

func openMemory(t *testing.T) (func() core.Store, func(time.Duration), redis.UniversalClient) {
	s := core.NewMemoryStore(0)
	t.Cleanup(func() { s.Close() })
	return func() core.Store { return s }, time.Sleep, nil
}

func openMiniredis(t *testing.T) (func() core.Store, func(time.Duration), redis.UniversalClient) {
	mr := miniredis.RunT(t)
	return redisStores(t, mr.Addr()), mr.FastForward, newClient(t, mr.Addr())
}

func openRealRedis(t *testing.T) (func() core.Store, func(time.Duration), redis.UniversalClient) {
	addr := realRedisAddr(t)
	return redisStores(t, addr), time.Sleep, newClient(t, addr)
}

// realRedisAddr returns the redis-server the test command started
// (repotest.RedisAddr): without one the test fails, unless -short.
func realRedisAddr(t testing.TB) string {
	t.Helper()
	return repotest.RedisAddr(t)
}

func openCluster(t *testing.T) (func() core.Store, func(time.Duration), redis.UniversalClient) {
	addrs := clusterAddrs(t)
	newStore := func() core.Store {
		s := core.NewRedisStore(newClusterClient(t, addrs))
		t.Cleanup(func() { s.Close() })
		return s
	}
	return newStore, time.Sleep, newClusterClient(t, addrs)
}

// clusterAddrs returns the seed addresses of the Redis Cluster the test
// command started. Like [realRedisAddr], it fails without them unless the
// tests run with -short.
func clusterAddrs(t testing.TB) []string {
	t.Helper()
	addrs := os.Getenv("FLIGHTCACHE_REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		if testing.Short() {
			t.Skip("FLIGHTCACHE_REDIS_CLUSTER_ADDRS not set; skipped in -short mode")
		}
		t.Fatal("FLIGHTCACHE_REDIS_CLUSTER_ADDRS is not set: run the tests with ./scripts/test.sh, which starts a Redis Cluster, or use go test -short")
	}
	return strings.Split(addrs, ",")
}

// newClusterClient returns a client of the cluster at addrs: one
// "process"'s connection to it.
func newClusterClient(t testing.TB, addrs []string) *redis.ClusterClient {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 addrs,
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { rdb.Close() })
	// Load the slot map and open a connection to every master now, as a
	// running process has long done: otherwise the first command of each
	// test "process" pays for discovery and dialing under its store timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rdb.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
		return node.Ping(ctx).Err()
	}); err != nil {
		t.Fatalf("cluster at %v: %v", addrs, err)
	}
	return rdb
}

// keys returns the keys matching pattern. On a cluster it asks every
// master: KEYS through a cluster client reaches one node only.
func keys(ctx context.Context, rdb redis.UniversalClient, pattern string) ([]string, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return rdb.Keys(ctx, pattern).Result()
	}
	var mu sync.Mutex // guards out; ForEachMaster calls its function concurrently
	var out []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		found, err := node.Keys(ctx, pattern).Result()
		mu.Lock()
		out = append(out, found...)
		mu.Unlock()
		return err
	})
	return out, err
}

// redisStores returns a constructor of stores on addr, each with its own
// client: separate "processes".
func redisStores(t *testing.T, addr string) func() core.Store {
	return func() core.Store {
		s := core.NewRedisStore(newClient(t, addr))
		t.Cleanup(func() { s.Close() })
		return s
	}
}

func newClient(t testing.TB, addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialTimeout:           time.Second,
	})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

var namespaceSeq atomic.Int64

// namespace returns a namespace unique to this test run, so that tests
// sharing one redis-server (other packages run at the same time) never see
// each other's keys.
func namespace(t testing.TB) core.Option {
	return core.WithNamespace(fmt.Sprintf("t%d-%d-%d", os.Getpid(), time.Now().UnixNano(), namespaceSeq.Add(1)))
}

// redisServer is a redis-server process this test started and may stop.
type redisServer struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

// startRedisServer starts a private redis-server on a free loopback port.
// The test command installs redis-server; without it the test fails.
func startRedisServer(t testing.TB) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if testing.Short() {
			t.Skip("redis-server not installed; skipped in -short mode")
		}
		t.Fatal("redis-server not found in PATH: run the tests with ./scripts/test.sh, which installs it")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &redisServer{t: t, port: port}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

func (s *redisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Start runs the server and waits until it answers PING.
func (s *redisServer) Start() {
	s.t.Helper()
	s.cmd = exec.Command("redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no")
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer rdb.Close()
	for range 200 {
		if rdb.Ping(context.Background()).Err() == nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	s.t.Fatalf("redis-server on %s did not answer PING within 5s", s.Addr())
}

// Stop kills the server this test started (by its PID) and waits for it.
func (s *redisServer) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

func sanitize(name string) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(name)
}

// parkedContext is a caller's context that reports on parked, once, when
// the caller first waits on it. A caller that finds its key's fill in
// flight in this process selects on its context's Done while it waits for
// that fill, and nothing on its way there asks for Done earlier; so once
// a fill's origin call has begun, the report means the caller is queued
// behind it.
type parkedContext struct {
	context.Context
	once   sync.Once
	parked chan<- struct{} // room for every caller's report
}

func (c *parkedContext) Done() <-chan struct{} {
	c.once.Do(func() { c.parked <- struct{}{} })
	return c.Context.Done()
}

// waitParked returns once n callers have reported on parked, failing t
// if they have not within 10s.
func waitParked(t testing.TB, parked <-chan struct{}, n int) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for i := range n {
		select {
		case <-parked:
		case <-timeout.C:
			t.Errorf("%d of %d callers queued behind the fill within 10s", i, n)
			return
		}
	}
}
