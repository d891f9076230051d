package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/flightcache/flightcache/bench/internal/benchserver"
)

// Bounds on starting and stopping server processes.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 5 * time.Second
)

// buildServer builds the strategy server into dir and returns its path.
func buildServer(ctx context.Context, dir string) (string, error) {
	const pkg = "github.com/flightcache/flightcache/bench/server"
	bin := filepath.Join(dir, "server")
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s (run inside the flightcache workspace, or pass -server-binary): %w\n%s", pkg, err, out.Bytes())
	}
	return bin, nil
}

// A fleet is the server processes of one strategy, sharing one run id.
type fleet struct {
	run   string
	urls  []string // base URLs, one per process
	procs []*process
}

// A process is one server the harness started; only these are ever stopped.
type process struct {
	cmd    *exec.Cmd
	log    string        // its stdout and stderr
	exited chan struct{} // closed when it has exited
}

// startFleet starts n processes of s with the contract's arguments and
// returns once each answers /healthz. On failure it stops those it started.
func startFleet(ctx context.Context, s strategy, n int, base benchserver.Config, logDir string) (*fleet, error) {
	f := &fleet{run: base.Run}
	for i := range n {
		cfg := base
		port, err := freePort()
		if err != nil {
			f.stop()
			return nil, err
		}
		cfg.Listen = "127.0.0.1:" + strconv.Itoa(port)
		p, err := startProcess(s, cfg, filepath.Join(logDir, fmt.Sprintf("%s-%d.log", base.Run, i)))
		if err != nil {
			f.stop()
			return nil, err
		}
		f.procs = append(f.procs, p)
		f.urls = append(f.urls, "http://"+cfg.Listen)
	}
	for i, p := range f.procs {
		if err := p.waitReady(ctx, f.urls[i]); err != nil {
			f.stop()
			return nil, fmt.Errorf("%s server %d: %w", s.name, i, err)
		}
	}
	return f, nil
}

func startProcess(s strategy, cfg benchserver.Config, logPath string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create server log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(s.binary, append(cfg.Args(), s.args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.binary, err)
	}
	p := &process{cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// waitReady polls url's /healthz until it answers 200, the process exits,
// ctx ends or readyTimeout passes.
func (p *process) waitReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil)
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("exited before it was ready (%v):\n%s", p.cmd.ProcessState, p.logTail())
		case <-ctx.Done():
			return fmt.Errorf("not ready at %s: %w\n%s", url, ctx.Err(), p.logTail())
		case <-tick.C:
		}
	}
}

// logTail returns the end of the process's log.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

// stop sends SIGTERM to every process of the fleet, by PID, and kills
// those that have not exited after stopTimeout.
func (f *fleet) stop() {
	var wg sync.WaitGroup
	for _, p := range f.procs {
		wg.Go(p.stop)
	}
	wg.Wait()
}

func (p *process) stop() {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.cmd.Process.Kill()
	}
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
