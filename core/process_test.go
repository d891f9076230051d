package core_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
)

// childEnv switches the test binary into a child process; its value is the
// namespace the children share. childModeEnv says which child it is:
// unset for a stampede process, or one of the modes below.
const (
	childEnv     = "FLIGHTCACHE_TEST_CHILD_NS"
	childModeEnv = "FLIGHTCACHE_TEST_CHILD_MODE"
)

// Child modes of TestFillerKilledMidFetch.
const (
	modeFiller = "filler" // starts a fill that never ends
	modeWaiter = "waiter" // a herd on the key the filler holds
	// modeSlowFiller fills the cold key with a fetch that lasts
	// slowFillLeases lock leases (TestSlowFillerKeepsItsLease).
	modeSlowFiller = "slow-filler"
)

// slowFillLeases is how many lock leases the slow filler's fetch lasts.
const slowFillLeases = 3

const (
	childProcs     = 4
	childCallers   = 50
	childOriginDur = 300 * time.Millisecond
)

// TestMultiProcessStampede runs the test binary as several OS processes,
// each a cache with its own Redis client, fires concurrent callers in all of
// them at one cold key at once, and checks in Redis that the origin ran
// once and that every caller in every process got the same bytes.
func TestMultiProcessStampede(t *testing.T) {
	addr := realRedisAddr(t)
	rdb := newClient(t, addr)
	ns := fmt.Sprintf("proc%d-%d", os.Getpid(), time.Now().UnixNano())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer rdb.Del(ctx, ns+":origin-calls", ns+":ready", ns+":go")

	outs := make([]bytes.Buffer, childProcs)
	cmds := make([]*exec.Cmd, childProcs)
	for i := range cmds {
		cmds[i] = startChild(t, exe, addr, ns, "", &outs[i])
	}

	// Barrier: release the children together once all are ready.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, _ := rdb.Get(ctx, ns+":ready").Int()
		if n == childProcs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d child processes got ready within 30s", n, childProcs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range childProcs {
		rdb.RPush(ctx, ns+":go", "1")
	}

	var values []string
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, outs[i].String())
		}
		sc := bufio.NewScanner(&outs[i])
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
				values = append(values, v)
			}
		}
	}
	if want := childProcs * childCallers; len(values) != want {
		t.Fatalf("children reported %d results, want %d", len(values), want)
	}
	if d := distinct(values); len(d) != 1 {
		t.Errorf("callers in %d processes got %d distinct values %q, want 1", childProcs, len(d), d)
	}
	if n, err := rdb.Get(ctx, ns+":origin-calls").Int(); err != nil || n != 1 {
		t.Errorf("origin calls counted in Redis = %d (%v), want 1", n, err)
	}
}

// childFleet prepares a test whose children run this test binary on the
// real Redis: its address, a client, a fresh namespace (its keys deleted
// at the end) and the binary's path.
func childFleet(t *testing.T, prefix string) (addr string, rdb *redis.Client, ns, exe string) {
	t.Helper()
	addr = realRedisAddr(t)
	rdb = newClient(t, addr)
	ns = fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), time.Now().UnixNano())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if keys, err := rdb.Keys(ctx, ns+":*").Result(); err == nil && len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	return addr, rdb, ns, exe
}

// TestFillerKilledMidFetch kills (SIGKILL) a process in the middle of a
// fill, while a herd in another process waits on its lock: the lock's
// lease (DefaultLockExpiry) lapses without the dead filler's heartbeat,
// one waiter takes it and fills, and every waiter gets that value. The
// waiters' wait timeout is longer than the test allows, so only the
// lease's lapse can free them. It logs the takeover time (from the kill
// to the waiter's fetch), which the lease bounds at about its length plus
// one poll interval; it asserts no timing.
func TestFillerKilledMidFetch(t *testing.T) {
	addr, rdb, ns, exe := childFleet(t, "kill")
	ctx := context.Background()

	var outA, outB bytes.Buffer
	filler := startChild(t, exe, addr, ns, modeFiller, &outA)
	waitUntil(t, "the filler to start its fetch", func() bool {
		return rdb.Exists(ctx, ns+":started").Val() == 1
	})
	waiter := startChild(t, exe, addr, ns, modeWaiter, &outB)
	waitUntil(t, "the waiters to miss", func() bool {
		return rdb.Exists(ctx, ns+":waiting").Val() == 1
	})
	if locks, err := rdb.Keys(ctx, ns+":*:lock").Result(); err != nil || len(locks) != 1 {
		t.Fatalf("lock keys before the kill = %q (%v), want the filler's one", locks, err)
	}

	if err := filler.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	filler.Wait() // reap it; the error is the SIGKILL

	done := make(chan error, 1)
	go func() { done <- waiter.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waiter process: %v\n%s", err, outB.String())
		}
	case <-time.After(30 * time.Second):
		waiter.Process.Kill()
		<-done
		t.Fatalf("waiters still stuck 30s after the filler was killed\n%s", outB.String())
	}

	var values []string
	var finished time.Time
	sc := bufio.NewScanner(&outB)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "RESULT "); ok {
			values = append(values, v)
		}
		if v, ok := strings.CutPrefix(line, "DONE "); ok {
			nanos, _ := strconv.ParseInt(v, 10, 64)
			finished = time.Unix(0, nanos)
		}
	}
	if len(values) != childCallers {
		t.Fatalf("waiter process reported %d results, want %d\n%s", len(values), childCallers, outB.String())
	}
	if d := distinct(values); len(d) != 1 || d[0] != "filled-by-waiter" {
		t.Errorf("waiters got %q, want only filled-by-waiter", d)
	}
	if n, err := rdb.Get(ctx, ns+":origin-calls").Int(); err != nil || n != 1 {
		t.Errorf("waiter origin calls counted in Redis = %d (%v), want 1", n, err)
	}
	// The lock held the waiters off while the filler lived.
	if at, err := rdb.Get(ctx, ns+":fetch-at").Int64(); err != nil || time.Unix(0, at).Before(killed) {
		t.Errorf("waiter's fetch started at %v (%v), before the filler was killed at %v", time.Unix(0, at), err, killed)
	}
	at, _ := rdb.Get(ctx, ns+":fetch-at").Int64()
	t.Logf("takeover %v after the filler was killed, waiters served after %v (lease %v, poll %v)",
		time.Unix(0, at).Sub(killed).Round(time.Millisecond), finished.Sub(killed).Round(time.Millisecond),
		core.DefaultLockExpiry, 250*time.Millisecond)
}

// startChild runs the test binary as a child process in mode, writing its
// output to out, and kills it (by its PID) at the end of the test if it is
// still running.
func startChild(t *testing.T, exe, addr, ns, mode string, out *bytes.Buffer) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+ns, childModeEnv+"="+mode, "FLIGHTCACHE_REDIS_ADDR="+addr)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

// waitUntil polls cond, the state of another process, for up to 30s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting 30s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runChild is one child process; it returns the exit code.
func runChild() int {
	ns := os.Getenv(childEnv)
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("FLIGHTCACHE_REDIS_ADDR"), ContextTimeoutEnabled: true})
	defer rdb.Close()
	store := core.NewRedisStore(rdb)
	defer store.Close()
	switch mode := os.Getenv(childModeEnv); mode {
	case "":
		return runStampedeChild(ns, rdb, store)
	case modeFiller:
		return runFillerChild(ns, rdb, store)
	case modeWaiter:
		return runWaiterChild(ns, rdb, store)
	case modeSlowFiller:
		return runSlowFillerChild(ns, rdb, store)
	case modeReadAfterWrite:
		return runReadAfterWriteChild(ns)
	default:
		fmt.Printf("unknown %s %q\n", childModeEnv, mode)
		return 2
	}
}

// runStampedeChild is one stampede process: it signals readiness, waits for
// the go-ahead, runs childCallers concurrent Do calls and prints each result.
func runStampedeChild(ns string, rdb *redis.Client, store core.Store) int {
	c := core.New(store, core.WithNamespace(ns), core.WithStoreTimeout(2*time.Second))
	ctx := context.Background()

	fetch := func(ctx context.Context) ([]byte, time.Duration, error) {
		if err := rdb.Incr(ctx, ns+":origin-calls").Err(); err != nil {
			return nil, 0, err
		}
		time.Sleep(childOriginDur)
		return []byte("filled-by-pid-" + strconv.Itoa(os.Getpid())), 0, nil
	}
	if err := rdb.Incr(ctx, ns+":ready").Err(); err != nil {
		fmt.Println("ready:", err)
		return 1
	}
	if err := rdb.BLPop(ctx, 30*time.Second, ns+":go").Err(); err != nil {
		fmt.Println("go:", err)
		return 1
	}
	if !doConcurrently(c, childCallers, fetch) {
		return 1
	}
	return 0
}

// runFillerChild starts filling the cold key, with the default lock lease
// kept alive by its heartbeat, and signals that its fetch started; the
// fetch then blocks until the test kills the process (for a minute at
// most, so that a crashed test leaves no process behind for long).
func runFillerChild(ns string, rdb *redis.Client, store core.Store) int {
	c := core.New(store, core.WithNamespace(ns), core.WithStoreTimeout(2*time.Second))
	_, err := c.Do(context.Background(), "cold", func(ctx context.Context) ([]byte, time.Duration, error) {
		if err := rdb.Set(ctx, ns+":started", 1, 0).Err(); err != nil {
			return nil, 0, err
		}
		time.Sleep(time.Minute)
		return []byte("filled-by-filler"), 0, nil
	})
	fmt.Println("Do:", err)
	return 1
}

// runWaiterChild runs childCallers concurrent Do calls on the key the
// filler holds, signals once they have all missed, prints each result and
// then the time they were all served.
func runWaiterChild(ns string, rdb *redis.Client, store core.Store) int {
	c := core.New(store, core.WithNamespace(ns), core.WithStoreTimeout(2*time.Second),
		// Longer than the test waits: neither may end the wait.
		core.WithWaitTimeout(time.Minute), core.WithFetchTimeout(time.Minute))
	ctx := context.Background()
	fetch := func(ctx context.Context) ([]byte, time.Duration, error) {
		if err := rdb.Set(ctx, ns+":fetch-at", time.Now().UnixNano(), 0).Err(); err != nil {
			return nil, 0, err
		}
		if err := rdb.Incr(ctx, ns+":origin-calls").Err(); err != nil {
			return nil, 0, err
		}
		return []byte("filled-by-waiter"), 0, nil
	}
	missed := make(chan struct{})
	go func() {
		defer close(missed)
		// A herd looks the cold key up once per process: the first caller
		// misses and the others join its fill without a lookup of their own.
		// The kill comes after this signal; a caller still on its way in
		// then finds the dead filler's lock just the same.
		for c.Stats().Misses.Load() < 1 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		if err := rdb.Set(ctx, ns+":waiting", 1, 0).Err(); err != nil {
			fmt.Println("waiting:", err)
		}
	}()
	ok := doConcurrently(c, childCallers, fetch)
	<-missed
	fmt.Printf("DONE %d\n", time.Now().UnixNano())
	if !ok {
		return 1
	}
	return 0
}

// doConcurrently runs n concurrent Do calls on the cold key and prints each
// result; it reports whether they all succeeded.
func doConcurrently(c *core.Cache, n int, fetch func(context.Context) ([]byte, time.Duration, error)) bool {
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := true
	for range n {
		wg.Go(func() {
			v, err := c.Do(context.Background(), "cold", fetch)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fmt.Println("Do:", err)
				ok = false
				return
			}
			fmt.Println("RESULT " + string(v))
		})
	}
	wg.Wait()
	return ok
}

// runSlowFillerChild fills the cold key with the default lock lease and a
// fetch that lasts slowFillLeases leases: alive, so its heartbeat keeps
// the lease. It signals that its fetch started, counts its origin call
// and prints its result.
func runSlowFillerChild(ns string, rdb *redis.Client, store core.Store) int {
	c := core.New(store, core.WithNamespace(ns), core.WithStoreTimeout(2*time.Second),
		core.WithFetchTimeout(time.Minute))
	v, err := c.Do(context.Background(), "cold", func(ctx context.Context) ([]byte, time.Duration, error) {
		if err := rdb.Incr(ctx, ns+":origin-calls").Err(); err != nil {
			return nil, 0, err
		}
		if err := rdb.Set(ctx, ns+":started", 1, 0).Err(); err != nil {
			return nil, 0, err
		}
		time.Sleep(slowFillLeases * core.DefaultLockExpiry)
		return []byte("filled-by-slow-filler"), 0, nil
	})
	if err != nil {
		fmt.Println("Do:", err)
		return 1
	}
	fmt.Println("RESULT " + string(v))
	return 0
}

// TestSlowFillerKeepsItsLease runs a filler process whose fetch lasts
// several lock leases while herds in two other processes wait on its
// lock: its heartbeat renews the short lease, so no waiter takes over,
// the origin is called once, and every caller gets the filler's value.
func TestSlowFillerKeepsItsLease(t *testing.T) {
	addr, rdb, ns, exe := childFleet(t, "slow")
	ctx := context.Background()

	var outF bytes.Buffer
	filler := startChild(t, exe, addr, ns, modeSlowFiller, &outF)
	waitUntil(t, "the filler to start its fetch", func() bool {
		return rdb.Exists(ctx, ns+":started").Val() == 1
	})
	outs := make([]bytes.Buffer, 2)
	waiters := make([]*exec.Cmd, len(outs))
	for i := range waiters {
		waiters[i] = startChild(t, exe, addr, ns, modeWaiter, &outs[i])
	}
	var values []string
	collect := func(cmd *exec.Cmd, out *bytes.Buffer, name string) {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s process: %v\n%s", name, err, out.String())
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
				values = append(values, v)
			}
		}
	}
	collect(filler, &outF, "filler")
	for i, w := range waiters {
		collect(w, &outs[i], "waiter")
	}
	if want := 1 + len(waiters)*childCallers; len(values) != want {
		t.Fatalf("processes reported %d results, want %d", len(values), want)
	}
	if d := distinct(values); len(d) != 1 || d[0] != "filled-by-slow-filler" {
		t.Errorf("callers got %q, want only filled-by-slow-filler", d)
	}
	if n, err := rdb.Get(ctx, ns+":origin-calls").Int(); err != nil || n != 1 {
		t.Errorf("origin calls counted in Redis = %d (%v), want 1: a fetch of %d leases kept its lock", n, err, slowFillLeases)
	}
}
