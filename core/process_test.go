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

// childEnv switches the test binary into a stampede child process; its
// value is the namespace the children share.
const childEnv = "FLIGHTCACHE_TEST_CHILD_NS"

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
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+ns, "FLIGHTCACHE_REDIS_ADDR="+addr)
		cmd.Stdout, cmd.Stderr = &outs[i], &outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
	}
	defer func() {
		for _, cmd := range cmds {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		}
	}()

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

// runChild is one stampede process: it signals readiness, waits for the
// go-ahead, runs childCallers concurrent Do calls and prints each result.
func runChild() int {
	ns := os.Getenv(childEnv)
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("FLIGHTCACHE_REDIS_ADDR"), ContextTimeoutEnabled: true})
	defer rdb.Close()
	store := core.NewRedisStore(rdb)
	defer store.Close()
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
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := false
	for range childCallers {
		wg.Go(func() {
			v, err := c.Do(ctx, "cold", fetch)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fmt.Println("Do:", err)
				failed = true
				return
			}
			fmt.Println("RESULT " + string(v))
		})
	}
	wg.Wait()
	if failed {
		return 1
	}
	return 0
}
