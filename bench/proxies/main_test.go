package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	o, _, smoke, err := parseFlags([]string{"-redis", "127.0.0.1:1", "-only", "nginx,flightcache", "-sizes", "100,2048", "-smoke"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"nginx", "fc-embedded", "fc-redis", "fc-redis-l1"}; !slices.Equal(o.Only, want) {
		t.Errorf("-only = %q, want %q", o.Only, want)
	}
	if !smoke || o.HerdRounds != 1 || o.Duration >= time.Second || !slices.Equal(o.Sizes, []int{100, 2048}) {
		t.Errorf("smoke options = %+v", o)
	}
	for _, args := range [][]string{
		{"-redis", "127.0.0.1:1", "-only", "squid"},
		{"-redis", "127.0.0.1:1", "-sizes", "0"},
		{"-redis", "127.0.0.1:1", "-sizes", "2097152"},
		{"-redis", "127.0.0.1:1", "-herd-clients", "2"},
	} {
		if _, _, _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		p    int
		want time.Duration
	}{{50, 100}, {99, 198}, {100, 200}, {1, 2}} {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("percentile(1..200, %d) = %d, want %d", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("percentile(nil) = %d", got)
	}
}

// TestTreeMemory counts a child's memory with its parent's: a shell
// waiting on a sleep, both idle.
func TestTreeMemory(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	cmd := exec.Command("sh", "-c", "sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sh := cmd.Process.Pid
	var sleep int
	for deadline := time.Now().Add(10 * time.Second); sleep == 0 && time.Now().Before(deadline); {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", sh, sh))
		if f := strings.Fields(string(b)); len(f) == 1 {
			if comm, _ := os.ReadFile("/proc/" + f[0] + "/comm"); strings.TrimSpace(string(comm)) == "sleep" {
				sleep, _ = strconv.Atoi(f[0])
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sleep == 0 {
		t.Fatal("the shell did not start sleep")
	}
	a, _ := memory(sh)
	b, _ := memory(sleep)
	if a <= 0 || b <= 0 {
		t.Fatalf("memory(sh) = %d KiB, memory(sleep) = %d KiB", a, b)
	}
	if got, _ := treeMemory(sh); got != a+b {
		t.Errorf("treeMemory(sh) = %d KiB, want sh's %d + sleep's %d", got, a, b)
	}
}

func TestSizeName(t *testing.T) {
	if got := sizeName(65536); got != "64 KiB" {
		t.Errorf("sizeName(65536) = %q", got)
	}
	if got := sizeName(1000); got != "1000 B" {
		t.Errorf("sizeName(1000) = %q", got)
	}
}
