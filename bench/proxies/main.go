// Command proxies puts flightcache's caching proxy (examples/proxy) beside
// nginx proxy_cache and Varnish, in front of one origin (bench/server with
// -strategy none), all on loopback, and measures in one run:
//
//   - hit throughput and latency at two body sizes: 64 keep-alive clients
//     (a closed loop, each sending its next request when the last one
//     ends) on hot keys stored before the measurement starts, every
//     contestant running at once and the loads taking turns of a second,
//     so that a shared machine's drift reaches all of them alike;
//   - a cold herd: many clients at once on one cold key, spread over 3
//     instances of each cache, counting the origin's calls and the
//     distinct bodies served, and the latency;
//   - the resident memory (VmRSS, every process of the instance) after the
//     hit load.
//
// Contestants: nginx with proxy_cache_lock on and the access log off;
// Varnish with its built-in VCL and the origin as its backend (-b); the
// proxy on its in-process store, on Redis, and on Redis with a local tier.
// nginx and Varnish instances each keep their own cache, as a fleet of
// them does; the proxies on Redis share one namespace.
//
//	go run ./bench/proxies -redis 127.0.0.1:6379 -out docs/bench/proxies.json
//	go run ./bench/proxies -redis 127.0.0.1:6379 -only flightcache -smoke   # CI
//
// nginx and varnishd must be on PATH (scripts/bench.sh installs them);
// -only flightcache needs neither. The program builds the proxy and the
// origin, writes every configuration into a temporary directory, serves
// on free loopback ports, and stops every process it started, by PID.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/bench/internal/benchserver"
)

// options is what one run measures.
type options struct {
	Redis       string        `json:"-"`
	Only        []string      `json:"contestants"`
	Clients     int           `json:"hit_clients"`
	Keys        int           `json:"hit_keys"`
	Sizes       []int         `json:"hit_body_sizes"`
	Warm        time.Duration `json:"hit_warmup_ns"`
	Duration    time.Duration `json:"hit_duration_ns"`
	Rounds      int           `json:"hit_turns"`
	Instances   int           `json:"herd_instances"`
	HerdClients int           `json:"herd_clients"`
	HerdRounds  int           `json:"herd_rounds"`
	OriginDelay time.Duration `json:"origin_delay_ns"`
	LocalTier   string        `json:"local_tier"`
}

// contestantNames lists the caches in the order they are measured and
// shown; nginx, the first, is the baseline.
var contestantNames = []string{"nginx", "varnish", "fc-embedded", "fc-redis", "fc-redis-l1"}

func main() {
	o, out, smoke, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxies:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	rep, err := run(ctx, o, os.Stderr)
	stop()
	if rep != nil {
		printTable(os.Stdout, rep)
		if out != "" {
			if werr := writeJSON(out, rep); werr != nil && err == nil {
				err = werr
			}
		}
		if smoke && err == nil {
			err = checkSmoke(rep)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxies:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (o options, out string, smoke bool, err error) {
	fs := flag.NewFlagSet("proxies", flag.ContinueOnError)
	fs.StringVar(&o.Redis, "redis", "", "Redis host:port for the proxies on Redis and the origin's call counter (required)")
	only := fs.String("only", strings.Join(contestantNames, ","), "contestants, comma-separated; \"flightcache\" means the fc-* ones")
	fs.IntVar(&o.Clients, "clients", 64, "hit load: keep-alive clients")
	fs.IntVar(&o.Keys, "keys", 16, "hit load: hot keys, each stored before the load")
	sizes := fs.String("sizes", "2048,65536", "hit load: body sizes in bytes, comma-separated")
	fs.DurationVar(&o.Warm, "warmup", 300*time.Millisecond, "hit load: unmeasured load before each turn")
	fs.DurationVar(&o.Duration, "duration", 6*time.Second, "hit load: measured load per contestant and size, in -turns turns")
	fs.IntVar(&o.Rounds, "turns", 6, "hit load: turns per contestant and size; contestants take turns, in a rotating order")
	fs.IntVar(&o.Instances, "instances", 3, "herd: instances of each cache")
	fs.IntVar(&o.HerdClients, "herd-clients", 150, "herd: concurrent clients on one cold key, spread over the instances")
	fs.IntVar(&o.HerdRounds, "herd-rounds", 3, "herd: rounds per contestant, each on a new key")
	fs.DurationVar(&o.OriginDelay, "origin-delay", 200*time.Millisecond, "time the origin takes per call")
	fs.StringVar(&o.LocalTier, "local-tier", "64MiB", "fc-redis-l1: -local-tier of the proxy")
	fs.StringVar(&out, "out", "", "write the results as JSON to this file")
	fs.BoolVar(&smoke, "smoke", false, "CI: short loads (0.3 s), 1 herd round; fail unless every answer was right and each fleet on Redis called the origin once per herd")
	if err = fs.Parse(args); err != nil {
		return
	}
	if o.Redis == "" {
		o.Redis = os.Getenv("FLIGHTCACHE_REDIS_ADDR")
	}
	if o.Redis == "" {
		return o, "", false, errors.New("-redis host:port is required")
	}
	for _, name := range strings.Split(*only, ",") {
		switch name = strings.TrimSpace(name); {
		case name == "flightcache":
			o.Only = append(o.Only, "fc-embedded", "fc-redis", "fc-redis-l1")
		case slices.Contains(contestantNames, name):
			o.Only = append(o.Only, name)
		default:
			return o, "", false, fmt.Errorf("-only: unknown contestant %q (want some of %s, or flightcache)", name, strings.Join(contestantNames, ","))
		}
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 || n > benchserver.MaxBodySize {
			return o, "", false, fmt.Errorf("-sizes: %q: want 1 to %d", s, benchserver.MaxBodySize)
		}
		o.Sizes = append(o.Sizes, n)
	}
	if smoke {
		o.Warm, o.Duration, o.Rounds, o.HerdRounds = 100*time.Millisecond, 300*time.Millisecond, 1, 1
	}
	if o.Clients <= 0 || o.Keys <= 0 || o.Instances <= 0 || o.HerdClients < o.Instances || o.HerdRounds <= 0 || o.Duration <= 0 || o.Rounds <= 0 {
		return o, "", false, errors.New("-clients, -keys, -instances, -herd-rounds, -turns and -duration must be positive, -herd-clients at least -instances")
	}
	return o, out, smoke, nil
}

// Report is one run's results.
type Report struct {
	Machine string    `json:"machine"`
	Options options   `json:"options"`
	Results []*Result `json:"results"`
}

// Result is one contestant's measurements.
type Result struct {
	Name    string        `json:"name"`
	Version string        `json:"version"`
	Hit     []HitResult   `json:"hit"`
	Herd    []HerdRound   `json:"herd"`
	RSSKiB  int64         `json:"rss_kib"`      // after the hit loads, every process of instance 1
	PeakKiB int64         `json:"rss_peak_kib"` // VmHWM, summed likewise
	Setup   time.Duration `json:"setup_ns"`     // starting the instances
	// CacheErrors counts the store errors the proxies absorbed by
	// serving uncached (a Redis call past its 250 ms bound on a
	// saturated machine, say); 0 for nginx and Varnish.
	CacheErrors int      `json:"cache_errors"`
	Notes       []string `json:"notes,omitempty"`
}

// HitResult is the hit load at one body size.
type HitResult struct {
	Size        int           `json:"body_size"`
	Requests    int           `json:"requests"`
	PerSecond   float64       `json:"per_second"` // the median turn's
	Turns       []float64     `json:"turns_per_second"`
	P50         time.Duration `json:"p50_ns"`
	P99         time.Duration `json:"p99_ns"`
	Errors      int           `json:"errors"`
	FirstError  string        `json:"first_error,omitempty"`
	OriginCalls int64         `json:"origin_calls"` // during the measurement: 0 when every request hit
}

// HerdRound is one cold herd across the instances.
type HerdRound struct {
	OriginCalls int64         `json:"origin_calls"`
	Bodies      int           `json:"distinct_bodies"`
	P50         time.Duration `json:"p50_ns"`
	P99         time.Duration `json:"p99_ns"`
	Errors      int           `json:"errors"`
	FirstError  string        `json:"first_error,omitempty"`
}

// run measures every contestant of o in turn.
func run(ctx context.Context, o options, progress io.Writer) (*Report, error) {
	work, err := os.MkdirTemp("", "flightcache-proxies-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil { // nginx and Varnish workers run as other users
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: o.Redis})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", o.Redis, err)
	}
	bins, err := build(ctx, work)
	if err != nil {
		return nil, err
	}
	runID := fmt.Sprintf("px%d", time.Now().UnixNano())
	origin, err := startProcess(ctx, work, "origin", bins["server"], []string{
		"-strategy", "none", "-redis", o.Redis, "-run", runID, "-origin-delay", o.OriginDelay.String(),
		"-cache-control", "public, max-age=600",
	}, "-listen")
	if err != nil {
		return nil, err
	}
	defer origin.stop()
	fmt.Fprintf(progress, "origin on %s (run %s)\n", origin.addr, runID)

	rep := &Report{Machine: machine(), Options: o}
	calls := func() int64 {
		n, _ := rdb.Get(ctx, benchserver.CallsKey(runID)).Int64()
		return n
	}
	// Every contestant runs from the start, so that the hit loads can
	// take turns: on a shared machine the load drifts within minutes,
	// and turns of a second spread the drift over every contestant.
	fleets := make([]*fleet, 0, len(o.Only))
	defer func() {
		for _, f := range fleets {
			f.stop(nil)
		}
	}()
	for _, name := range o.Only {
		f, err := startFleet(ctx, o, name, bins, origin.addr, work, "pxbench-"+runID+"-"+name)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", name, err)
		}
		fleets = append(fleets, f)
		rep.Results = append(rep.Results, f.r)
		fmt.Fprintf(progress, "%s: %d instances (%s)\n", name, len(f.insts), f.r.Version)
	}

	for _, size := range o.Sizes {
		loads := make([]*hitLoad, len(fleets))
		for i, f := range fleets {
			var err error
			if loads[i], err = newHitLoad(ctx, o, f.insts[0].addr, fmt.Sprintf("hit-%s-%d", f.r.Name, size), size); err != nil {
				return rep, fmt.Errorf("%s: %w", f.r.Name, err)
			}
			defer loads[i].close()
		}
		for round := range o.Rounds {
			for j := range fleets {
				i := (j + round) % len(fleets) // each takes every place in the order
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				loads[i].run(o.Warm, false, calls)
				loads[i].run(o.Duration/time.Duration(o.Rounds), true, calls)
			}
		}
		for i, f := range fleets {
			h := loads[i].result()
			fmt.Fprintf(progress, "%-12s hit %6d B: %8.0f req/s (median of %d turns)  p50 %6.2fms  p99 %6.2fms  errors %d  origin calls %d\n",
				f.r.Name, size, h.PerSecond, o.Rounds, ms(h.P50), ms(h.P99), h.Errors, h.OriginCalls)
			f.r.Hit = append(f.r.Hit, h)
		}
	}
	for _, f := range fleets {
		f.r.RSSKiB, f.r.PeakKiB = treeMemory(f.insts[0].cmd.Process.Pid)
		fmt.Fprintf(progress, "%-12s memory: %d KiB resident (peak %d KiB)\n", f.r.Name, f.r.RSSKiB, f.r.PeakKiB)
	}
	for _, f := range fleets {
		addrs := make([]string, len(f.insts))
		for i, p := range f.insts {
			addrs[i] = p.addr
		}
		for round := range o.HerdRounds {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			h := herd(ctx, o, addrs, fmt.Sprintf("herd-%s-%d", f.r.Name, round), calls)
			fmt.Fprintf(progress, "%-12s herd %d: %d origin calls, %d bodies, p50 %.1fms, p99 %.1fms, errors %d\n",
				f.r.Name, round, h.OriginCalls, h.Bodies, ms(h.P50), ms(h.P99), h.Errors)
			f.r.Herd = append(f.r.Herd, h)
		}
		f.stop(progress)
	}
	return rep, nil
}

// fleet is the instances of one contestant and its results.
type fleet struct {
	r     *Result
	insts []*process
	once  sync.Once
}

// startFleet starts o.Instances of one contestant, with dir names under
// work; the proxies on Redis share namespace ns.
func startFleet(ctx context.Context, o options, name string, bins map[string]string, origin, work, ns string) (*fleet, error) {
	f := &fleet{r: &Result{Name: name}}
	began := time.Now()
	for i := range o.Instances {
		p, version, err := startContestant(ctx, name, bins, origin, filepath.Join(work, fmt.Sprintf("%s-%d", name, i)), o, ns)
		if err != nil {
			f.stop(nil)
			return nil, err
		}
		f.insts = append(f.insts, p)
		f.r.Version = version
	}
	f.r.Setup = time.Since(began)
	return f, nil
}

// stop stops f's instances, by PID, and reads the store errors the
// proxies logged. Later calls do nothing.
func (f *fleet) stop(progress io.Writer) {
	f.once.Do(func() {
		for _, p := range f.insts {
			if exited := p.stop(); exited != nil {
				f.r.Notes = append(f.r.Notes, exited.Error())
			}
			f.r.CacheErrors += absorbed(p.log, &f.r.Notes)
		}
		if f.r.CacheErrors > 0 && progress != nil {
			fmt.Fprintf(progress, "%-12s store errors absorbed (served uncached): %d\n", f.r.Name, f.r.CacheErrors)
		}
	})
}

// absorbed counts the store errors a proxy's log reports it absorbed
// (serving uncached, or the breaker opening), and adds the first one of
// each log to notes.
func absorbed(log string, notes *[]string) int {
	b, err := os.ReadFile(log)
	if err != nil {
		return 0
	}
	n := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, " cache (serving uncached): ") || strings.Contains(line, " cache: ") {
			if n == 0 {
				*notes = append(*notes, line)
			}
			n++
		}
	}
	return n
}

// build compiles the proxy and the origin into work.
func build(ctx context.Context, work string) (map[string]string, error) {
	root, err := repoRoot(ctx)
	if err != nil {
		return nil, err
	}
	bins := map[string]string{}
	for name, pkg := range map[string]string{"proxy": "./examples/proxy", "server": "./bench/server"} {
		bin := filepath.Join(work, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
		bins[name] = bin
	}
	return bins, nil
}

// repoRoot is the checkout holding this program's source (go run, go
// build without -trimpath), or the workspace of the working directory.
func repoRoot(ctx context.Context) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "go.work")); err == nil {
			return root, nil
		}
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOWORK").Output()
	if w := strings.TrimSpace(string(out)); err == nil && w != "" && w != "off" {
		return filepath.Dir(w), nil
	}
	return "", errors.New("run from the flightcache checkout: its go.work names the proxy and the origin")
}

// startContestant starts one instance of name in dir, in front of origin.
func startContestant(ctx context.Context, name string, bins map[string]string, origin, dir string, o options, ns string) (*process, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	switch name {
	case "nginx":
		return startNginx(ctx, dir, origin)
	case "varnish":
		return startVarnish(ctx, dir, origin)
	}
	args := []string{"-upstream", "http://" + origin}
	switch name {
	case "fc-redis":
		args = append(args, "-redis", o.Redis, "-namespace", ns)
	case "fc-redis-l1":
		args = append(args, "-redis", o.Redis, "-namespace", ns, "-local-tier", o.LocalTier)
	}
	p, err := startProcess(ctx, dir, name, bins["proxy"], args, "-listen")
	return p, "examples/proxy", err
}

// nginxConf is nginx as a shared cache in front of one origin: the cache
// lock on, so that one request per key fills it while the others wait,
// the access log off, keep-alive connections to the origin; nginx's
// defaults otherwise. (Debian's nginx.conf adds sendfile and tcp_nopush:
// with the Go client, tcp_nopush held most 64 KiB hits for a delayed ACK,
// 44 ms at p50, and sendfile alone was no faster here.)
const nginxConf = `daemon off;
master_process on;
worker_processes auto;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
{{user}}
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path {{dir}}/client_body;
	proxy_temp_path {{dir}}/proxy_temp;
	fastcgi_temp_path {{dir}}/fastcgi;
	uwsgi_temp_path {{dir}}/uwsgi;
	scgi_temp_path {{dir}}/scgi;
	proxy_cache_path {{dir}}/cache levels=1:2 keys_zone=bench:16m max_size=1g inactive=10m use_temp_path=off;
	upstream origin {
		server {{origin}};
		keepalive 256;
	}
	server {
		listen {{listen}};
		location / {
			proxy_pass http://origin;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_cache bench;
			proxy_cache_lock on;
		}
	}
}
`

func startNginx(ctx context.Context, dir, origin string) (*process, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the workers write the cache in dir
	}
	conf := strings.NewReplacer("{{dir}}", dir, "{{origin}}", origin, "{{listen}}", addr, "{{user}}", user).Replace(nginxConf)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	p, err := startListening(ctx, dir, "nginx", "nginx", []string{"-c", path, "-p", dir, "-e", filepath.Join(dir, "error.log")}, addr)
	return p, version(ctx, "nginx", "-v"), err
}

// startVarnish starts varnishd in the foreground with its built-in VCL
// and origin as the backend, storage in memory.
func startVarnish(ctx context.Context, dir, origin string) (*process, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	args := []string{"-F", "-a", addr, "-b", origin, "-n", filepath.Join(dir, "varnish"), "-s", "malloc,256m", "-T", "127.0.0.1:0"}
	p, err := startListening(ctx, dir, "varnish", "varnishd", args, addr)
	return p, version(ctx, "varnishd", "-V"), err
}

func version(ctx context.Context, bin, flag string) string {
	out, _ := exec.CommandContext(ctx, bin, flag).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// process is a server this program started.
type process struct {
	name   string
	addr   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed once cmd has been waited for
	err    error         // cmd.Wait's result, set before exited closes
	once   sync.Once
}

// startProcess starts bin with args and listenFlag set to a free loopback
// address, and waits until it answers.
func startProcess(ctx context.Context, dir, name, bin string, args []string, listenFlag string) (*process, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	return startListening(ctx, dir, name, bin, append(args, listenFlag, addr), addr)
}

func startListening(ctx context.Context, dir, name, bin string, args []string, addr string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{name: name, addr: addr, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(ctx); err != nil {
		p.stop()
		out, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, out)
	}
	return p, nil
}

// waitReady polls the origin's health endpoint through p for up to 30 s.
func (p *process) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/healthz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("exited before answering: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("not answering: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// stop sends p SIGTERM, by its PID, and waits for it to exit, killing it
// after 15 seconds. It reports an unexpected exit. Later calls return nil.
func (p *process) stop() error {
	var err error
	p.once.Do(func() {
		select {
		case <-p.exited:
			err = fmt.Errorf("%s exited early: %v", p.name, p.err)
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(15 * time.Second)
		defer t.Stop()
		select {
		case <-p.exited:
		case <-t.C:
			p.cmd.Process.Kill()
			<-p.exited
			err = fmt.Errorf("%s did not stop within 15s of SIGTERM; killed", p.name)
		}
	})
	return err
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// hitLoad is the hit load on one instance at one body size, measured in
// turns.
type hitLoad struct {
	o      options
	size   int
	tr     *http.Transport
	client *http.Client
	urls   []string
	ctx    context.Context

	lat      []time.Duration // every measured turn's latencies
	rates    []float64       // each measured turn's requests per second
	errs     int
	firstErr error
	calls    int64 // origin calls during measured turns
}

// newHitLoad stores o.Keys keys of size bytes through addr.
func newHitLoad(ctx context.Context, o options, addr, prefix string, size int) (*hitLoad, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: o.Clients, MaxConnsPerHost: o.Clients, DisableCompression: true}
	h := &hitLoad{o: o, size: size, tr: tr, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, ctx: ctx}
	h.urls = make([]string, o.Keys)
	stored := make([]error, o.Keys)
	var wg sync.WaitGroup
	for k := range h.urls {
		h.urls[k] = fmt.Sprintf("http://%s%s%s-%d?size=%d", addr, benchserver.ItemPrefix, prefix, k, size)
		wg.Go(func() { stored[k] = getOnce(ctx, h.client, h.urls[k], size) })
	}
	wg.Wait()
	if err := errors.Join(stored...); err != nil {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("store the hot keys: %w", err)
	}
	return h, nil
}

func (h *hitLoad) close() { h.tr.CloseIdleConnections() }

// run runs o.Clients keep-alive clients for d, each sending its next
// request when its last one ends; measured runs are kept.
func (h *hitLoad) run(d time.Duration, measured bool, calls func() int64) {
	var wg sync.WaitGroup
	lat := make([][]time.Duration, h.o.Clients)
	errs := make([]int, h.o.Clients)
	firstErr := make([]error, h.o.Clients)
	before := calls()
	began := time.Now()
	deadline := began.Add(d)
	for c := range h.o.Clients {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			l := make([]time.Duration, 0, 1<<12)
			for i := c; time.Now().Before(deadline) && h.ctx.Err() == nil; i++ {
				t0 := time.Now()
				err := get(h.ctx, h.client, h.urls[i%len(h.urls)], h.size, buf)
				l = append(l, time.Since(t0))
				if err != nil {
					errs[c]++
					if firstErr[c] == nil {
						firstErr[c] = err
					}
				}
			}
			lat[c] = l
		})
	}
	wg.Wait()
	elapsed := time.Since(began)
	if !measured {
		return
	}
	h.calls += calls() - before
	n := 0
	for c := range h.o.Clients {
		n += len(lat[c])
		h.lat = append(h.lat, lat[c]...)
		h.errs += errs[c]
		if firstErr[c] != nil && h.firstErr == nil {
			h.firstErr = firstErr[c]
		}
	}
	h.rates = append(h.rates, float64(n)/elapsed.Seconds())
}

// result summarises the measured turns: the median turn's rate, the
// latency percentiles over every turn.
func (h *hitLoad) result() HitResult {
	res := HitResult{Size: h.size, Requests: len(h.lat), Errors: h.errs, OriginCalls: h.calls, Turns: slices.Clone(h.rates)}
	if h.firstErr != nil {
		res.FirstError = h.firstErr.Error()
	}
	rates := slices.Clone(h.rates)
	slices.Sort(rates)
	if len(rates) > 0 {
		res.PerSecond = rates[len(rates)/2]
	}
	slices.Sort(h.lat)
	res.P50, res.P99 = percentile(h.lat, 50), percentile(h.lat, 99)
	return res
}

// getOnce GETs url and checks the answer.
func getOnce(ctx context.Context, client *http.Client, url string, size int) error {
	return get(ctx, client, url, size, make([]byte, 32<<10))
}

// get GETs url, reads the body into buf (over and over) and checks that
// it is a 200 of size bytes.
func get(ctx context.Context, client *http.Client, url string, size int, buf []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, buf)
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d", resp.StatusCode)
	case n != int64(size):
		return fmt.Errorf("body of %d bytes, want %d", n, size)
	}
	return nil
}

// herd releases o.HerdClients clients at once on one cold key, spread
// over addrs, each on a connection opened beforehand.
func herd(ctx context.Context, o options, addrs []string, key string, calls func() int64) HerdRound {
	var h HerdRound
	tr := &http.Transport{MaxIdleConnsPerHost: o.HerdClients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	// Open the connections: one request per client at once, each on a
	// key of its own (so each holds its connection for an origin call).
	var wg sync.WaitGroup
	for c := range o.HerdClients {
		wg.Go(func() {
			getOnce(ctx, client, fmt.Sprintf("http://%s%s%s-open-%d", addrs[c%len(addrs)], benchserver.ItemPrefix, key, c), benchserver.BodySize)
		})
	}
	wg.Wait()

	before := calls()
	start := make(chan struct{})
	lat := make([]time.Duration, o.HerdClients)
	bodies := make([]string, o.HerdClients)
	errs := make([]error, o.HerdClients)
	for c := range o.HerdClients {
		wg.Go(func() {
			url := fmt.Sprintf("http://%s%s%s", addrs[c%len(addrs)], benchserver.ItemPrefix, key)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			<-start
			t0 := time.Now()
			resp, err := client.Do(req)
			if err == nil {
				var b []byte
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				if n, ok := benchserver.CallOf(b); ok {
					bodies[c] = strconv.FormatInt(n, 10)
				}
			}
			lat[c], errs[c] = time.Since(t0), err
		})
	}
	close(start)
	wg.Wait()
	h.OriginCalls = calls() - before
	seen := map[string]bool{}
	for c, err := range errs {
		if err != nil {
			h.Errors++
			if h.FirstError == "" {
				h.FirstError = err.Error()
			}
			continue
		}
		seen[bodies[c]] = true
	}
	h.Bodies = len(seen)
	slices.Sort(lat)
	h.P50, h.P99 = percentile(lat, 50), percentile(lat, 99)
	return h
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(float64(p)/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// treeMemory sums VmRSS and VmHWM (KiB) over pid and its descendants:
// nginx's workers, Varnish's cache process.
func treeMemory(pid int) (rss, peak int64) {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces: the fields after it follow
		// the last ')'.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 {
			if ppid, err := strconv.Atoi(fields[1]); err == nil {
				children[ppid] = append(children[ppid], p)
			}
		}
	}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = append(queue[1:], children[p]...)
		r, h := memory(p)
		rss, peak = rss+r, peak+h
	}
	return rss, peak
}

// memory reads VmRSS and VmHWM of pid from /proc/<pid>/status, in KiB.
func memory(pid int) (rss, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch name {
		case "VmRSS":
			rss = n
		case "VmHWM":
			peak = n
		}
	}
	return rss, peak
}

func machine() string {
	cpu := "unknown cpu"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimLeft(v, "\t :")
				break
			}
		}
	}
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("%s x %d, %s, %s, load average before %s, %s", cpu, runtime.NumCPU(), runtime.GOOS, runtime.Version(), load, time.Now().UTC().Format(time.RFC3339))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func writeJSON(path string, rep *Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// printTable writes the results, each against the baseline (nginx when it
// was measured, the first contestant otherwise) as ratios.
func printTable(w io.Writer, rep *Report) {
	if len(rep.Results) == 0 {
		return
	}
	base := rep.Results[0]
	for _, r := range rep.Results {
		if r.Name == "nginx" {
			base = r
		}
	}
	fmt.Fprintf(w, "%s\n\n", rep.Machine)
	fmt.Fprintf(w, "| cache | ")
	for _, s := range rep.Options.Sizes {
		fmt.Fprintf(w, "hits/s %s | ×%s | p99 %s | ", sizeName(s), base.Name, sizeName(s))
	}
	fmt.Fprintf(w, "herd origin calls (%d instances) | herd p99 | RSS | ×%s | store errors absorbed |\n", rep.Options.Instances, base.Name)
	fmt.Fprintf(w, "|---|%s---:|---:|---:|---:|---:|\n", strings.Repeat("---:|---:|---:|", len(rep.Options.Sizes)))
	for _, r := range rep.Results {
		fmt.Fprintf(w, "| %s | ", r.Name)
		for i, h := range r.Hit {
			ratio := math.NaN()
			if i < len(base.Hit) {
				ratio = turnRatio(h, base.Hit[i])
			}
			fmt.Fprintf(w, "%.0f | %.2f | %.2f ms | ", h.PerSecond, ratio, ms(h.P99))
		}
		var calls []string
		var lat []time.Duration
		for _, h := range r.Herd {
			calls = append(calls, strconv.FormatInt(h.OriginCalls, 10))
			lat = append(lat, h.P99)
		}
		slices.Sort(lat)
		fmt.Fprintf(w, "%s | %.0f ms | %.1f MiB | %.2f | %d |\n", strings.Join(calls, ", "), ms(percentile(lat, 50)),
			float64(r.RSSKiB)/1024, float64(r.RSSKiB)/float64(max(base.RSSKiB, 1)), r.CacheErrors)
	}
	fmt.Fprintf(w, "\nhits/s: %d keep-alive clients on %d hot keys, the median of %d turns of %v (each after %v unmeasured), the contestants taking turns in a rotating order; ×%s: the median over the rounds of the ratio to %[6]s's turn of the same round; herd: %d clients at once on one cold key over %d instances, origin %v, one value per round (median p99 of the rounds); RSS after the hit loads, every process of one instance.\n",
		rep.Options.Clients, rep.Options.Keys, rep.Options.Rounds, rep.Options.Duration/time.Duration(rep.Options.Rounds), rep.Options.Warm, base.Name, rep.Options.HerdClients, rep.Options.Instances, rep.Options.OriginDelay)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	defer tw.Flush()
	for _, r := range rep.Results {
		if r.Version != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", r.Name, r.Version)
		}
	}
}

// turnRatio is the median over the rounds of h's turn rate divided by
// base's turn rate in the same round (the turns next to each other in
// time).
func turnRatio(h, base HitResult) float64 {
	if len(h.Turns) != len(base.Turns) || len(h.Turns) == 0 {
		return math.NaN()
	}
	r := make([]float64, len(h.Turns))
	for k := range r {
		r[k] = h.Turns[k] / base.Turns[k]
	}
	slices.Sort(r)
	if len(r)%2 == 0 {
		return (r[len(r)/2-1] + r[len(r)/2]) / 2
	}
	return r[len(r)/2]
}

func sizeName(n int) string {
	if n%1024 == 0 {
		return strconv.Itoa(n/1024) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}

// checkSmoke fails a smoke run in which any answer was wrong, a hit load
// called the origin, or a fleet on Redis called it more than once in a herd.
func checkSmoke(rep *Report) error {
	var problems []string
	for _, r := range rep.Results {
		for _, h := range r.Hit {
			if h.Errors > 0 || h.Requests == 0 || h.OriginCalls != 0 {
				problems = append(problems, fmt.Sprintf("%s hits at %d B: %d requests, %d errors (%s), %d origin calls", r.Name, h.Size, h.Requests, h.Errors, h.FirstError, h.OriginCalls))
			}
		}
		for _, h := range r.Herd {
			if h.Errors > 0 || h.Bodies != 1 && strings.HasPrefix(r.Name, "fc-redis") || h.OriginCalls != 1 && strings.HasPrefix(r.Name, "fc-redis") {
				problems = append(problems, fmt.Sprintf("%s herd: %d origin calls, %d bodies, %d errors (%s)", r.Name, h.OriginCalls, h.Bodies, h.Errors, h.FirstError))
			}
		}
		if r.RSSKiB <= 0 {
			problems = append(problems, r.Name+": no resident memory read")
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("smoke failed:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}
