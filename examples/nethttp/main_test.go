package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core/repotest"
)

// serverArgsEnv turns the test binary into the example server, with the
// given arguments (one per line): the end-to-end test runs it as several
// OS processes.
const serverArgsEnv = "FLIGHTCACHE_EXAMPLE_SERVER_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(serverArgsEnv); args != "" {
		os.Args = append([]string{os.Args[0]}, strings.Split(args, "\n")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	processes = 4
	herd      = 400
	ttl       = 2 * time.Second
)

// TestFleetServesOneBodyPerExpiry starts the example server as 4 OS
// processes on one redis-server and fires 400 concurrent clients at a cold
// URL across them: one origin call and one body, and the same again after
// the TTL expires.
func TestFleetServesOneBodyPerExpiry(t *testing.T) {
	addr := redisAddr(t)
	ns := fmt.Sprintf("e2e-%d-%d", os.Getpid(), time.Now().UnixNano())
	urls := startFleet(t, processes, "-redis", addr, "-namespace", ns, "-delay", "300ms", "-ttl", ttl.String(), "-store-timeout", "2s")
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: herd}}
	for _, u := range urls {
		waitReady(t, client, u)
	}

	first := stampede(t, client, urls, "/products/1")
	if got := originCalls(t, client, urls); got != 1 {
		t.Errorf("origin calls after the first herd = %d, want 1", got)
	}
	time.Sleep(ttl + 500*time.Millisecond) // let the entry expire
	second := stampede(t, client, urls, "/products/1")
	if got := originCalls(t, client, urls); got != 2 {
		t.Errorf("origin calls after the herd past the TTL = %d, want 2", got)
	}
	if first == second {
		t.Error("the herd after the TTL got the first body again; want a fresh render")
	}
}

// stampede sends herd concurrent GETs for path spread over urls and
// returns the one body they all got.
func stampede(t *testing.T, client *http.Client, urls []string, path string) string {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	bodies := make([]string, herd)
	statuses := make([]int, herd)
	for i := range herd {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest("GET", urls[i%len(urls)]+path, nil)
			req.Host = "shop.example" // as a load balancer in front of the fleet forwards it
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			bodies[i], statuses[i] = string(b), resp.StatusCode
		})
	}
	close(start)
	wg.Wait()
	distinct := map[string]int{}
	for i := range herd {
		if statuses[i] != http.StatusOK {
			t.Errorf("client %d: status %d", i, statuses[i])
		}
		distinct[bodies[i]]++
	}
	if len(distinct) != 1 {
		t.Fatalf("%d clients got %d distinct bodies, want 1: %v", herd, len(distinct), distinct)
	}
	return bodies[0]
}

// redisAddr returns the redis-server the test command started
// (repotest.RedisAddr): without one the test fails, unless -short.
func redisAddr(t *testing.T) string {
	t.Helper()
	return repotest.RedisAddr(t)
}

// startFleet runs the example server as n OS processes, named p0, p1, …,
// each on a free loopback port with the given extra arguments, and returns
// their base URLs. The processes are stopped at the end of the test.
func startFleet(t *testing.T, n int, args ...string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	urls := make([]string, n)
	cmds := make([]*exec.Cmd, 0, n)
	// Stop the processes we started, by their PIDs, all at once: each
	// takes a moment to shut down.
	t.Cleanup(func() {
		for _, cmd := range cmds {
			cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, cmd := range cmds {
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}
	})
	for i := range urls {
		port := freePort(t)
		urls[i] = fmt.Sprintf("http://127.0.0.1:%d", port)
		argv := append([]string{"-listen", fmt.Sprintf("127.0.0.1:%d", port), "-name", fmt.Sprintf("p%d", i)}, args...)
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), serverArgsEnv+"="+strings.Join(argv, "\n"))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	return urls
}

func originCalls(t *testing.T, client *http.Client, urls []string) int64 {
	t.Helper()
	var total int64
	for _, u := range urls {
		resp, err := client.Get(u + "/admin/stats")
		if err != nil {
			t.Fatal(err)
		}
		var s map[string]int64
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if s["errors"] != 0 {
			t.Errorf("%s reported %d cache errors", u, s["errors"])
		}
		total += s["origin_calls"]
	}
	return total
}

func waitReady(t *testing.T, client *http.Client, u string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(u + "/admin/stats"); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not come up within 30s", u)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
