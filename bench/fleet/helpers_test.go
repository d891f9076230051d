package fleet

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core/repotest"
)

// exampleDir is the net/http example's source, relative to this package.
var exampleDir = filepath.Join("..", "..", "examples", "nethttp")

// redisAddr returns the redis-server the test command started
// (repotest.RedisAddr): without one the test fails, unless -short.
func redisAddr(t *testing.T) string {
	t.Helper()
	return repotest.RedisAddr(t)
}

// buildExample builds the net/http example of this checkout into a
// temporary directory, with the race detector when this test has it, and
// returns the binary.
func buildExample(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nethttp")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = exampleDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", exampleDir, err, out)
	}
	return bin
}

// startFleet runs the example server binary as n OS processes, named p0,
// p1, …, each on a free loopback port with the given extra arguments, and
// returns their base URLs. The processes are stopped at the end of the test.
func startFleet(t *testing.T, bin string, n int, args ...string) []string {
	t.Helper()
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
		cmd := exec.Command(bin, argv...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	return urls
}

// originCalls sums the origin calls the servers at urls report, failing
// the test for any cache error one reports.
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
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
