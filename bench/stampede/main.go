// Command stampede measures a cold-key stampede over real HTTP on loopback,
// at scale: P server processes (separate OS processes, each with its own
// cache and Redis clients) share one redis-server, N concurrent clients in
// total are spread over them and released at once on one cold URL, and
// the origin behind every cache takes 200 ms. For each strategy and each
// P×N it reports how many times the origin ran (counted in Redis, so
// exactly, across processes), how many distinct bodies the clients got,
// the p50/p99/max extra wait (client latency minus the origin delay) and
// the errors. Each client has its own keep-alive connection, opened
// before its herd is released, and each fresh fleet first serves a small
// unmeasured herd, so that neither connection setup nor a process's first
// requests are measured. Every cell runs -rounds herds, each on a cold key
// of its own.
//
//	go run ./bench/stampede -redis 127.0.0.1:6379 -out stampede.json
//
// Strategies: none (no cache), singleflight (in-process only, nothing
// shared), polling (flightcache's lock without pub/sub wake-ups; waiters
// poll every 250 ms), flightcache (the full thing), and peer, another
// library's server given with -peer-binary. Every server follows the
// contract of package bench/internal/benchserver; the harness
// builds bench/server for its own strategies unless
// -server-binary is given.
//
// -smoke runs P=2, N=20 with every strategy and exits non-zero unless
// flightcache made one origin call and served one body, and no strategy
// had a transport error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/bench/internal/benchserver"
	"github.com/flightcache/flightcache/bench/internal/report"
)

// ownStrategies are the strategies of bench/server, in run order.
var ownStrategies = []string{"none", "singleflight", "polling", "flightcache"}

// options is what one run measures and how.
type options struct {
	redis        string
	processes    []int
	clients      []int
	rounds       int      // herds per cell
	strategies   []string // own strategies and, if peerBinary is set, peerName
	originDelay  time.Duration
	timeout      time.Duration // per client request
	serverBinary string        // "" builds bench/server
	peerBinary   string
	peerName     string
	serverArgs   []string       // extra arguments for the own strategies' servers
	logDir       string         // "" keeps the servers' logs in a temporary directory
	expiry       *expiryOptions // set: run the expiry mode instead (see expiry.go)
}

// strategy is one kind of server: a binary and the arguments that pick
// the strategy, after the contract's.
type strategy struct {
	name   string
	binary string
	args   []string
}

func main() {
	os.Exit(runMain())
}

func runMain() int {
	o, smoke, out, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "stampede:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.expiry != nil {
		return runExpiry(ctx, o, *o.expiry, smoke, out, os.Stderr)
	}
	rep, err := bench(ctx, o, os.Stderr)
	if rep != nil && len(rep.Cells) > 0 {
		printTable(os.Stdout, rep)
		if out != "" {
			if werr := rep.Write(out); werr != nil {
				fmt.Fprintln(os.Stderr, "stampede:", werr)
				return 1
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stampede:", err)
		return 1
	}
	if smoke {
		if failures := smokeFailures(rep, o.strategies); len(failures) > 0 {
			for _, f := range failures {
				fmt.Fprintln(os.Stderr, "stampede: smoke:", f)
			}
			return 1
		}
		fmt.Fprintln(os.Stderr, "stampede: smoke: ok")
	}
	return 0
}

func parseFlags(args []string) (o options, smoke bool, out string, err error) {
	fs := flag.NewFlagSet("stampede", flag.ContinueOnError)
	fs.StringVar(&o.redis, "redis", "", "shared redis-server host:port (required)")
	procs := fs.String("processes", "1,2,4,8", "server process counts P, comma-separated")
	clients := fs.String("clients", "100,1000", "concurrent client counts N (in total, spread over the processes), comma-separated")
	fs.IntVar(&o.rounds, "rounds", 3, "herds per cell, each on a cold key of its own; waits are pooled, calls and bodies are the worst round's")
	strategies := fs.String("strategies", "", "strategies to run, comma-separated (default: all, peer only with -peer-binary)")
	fs.DurationVar(&o.originDelay, "origin-delay", 200*time.Millisecond, "how long each origin call takes")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on each client request")
	fs.StringVar(&o.serverBinary, "server-binary", "", "bench/server binary (default: go build it into a temporary directory)")
	fs.StringVar(&o.peerBinary, "peer-binary", "", "server binary of the peer strategy, following the benchserver contract (optional)")
	fs.StringVar(&o.peerName, "peer-name", "peer", "name of the peer strategy in the output")
	pollInterval := fs.Duration("poll-interval", 0, "polling and flightcache servers: waiters' poll interval (0: the library default, 250ms)")
	storeTimeout := fs.Duration("store-timeout", 0, "polling and flightcache servers: bound on each Redis call (0: the library default, 250ms)")
	fs.BoolVar(&smoke, "smoke", false, "P=2, N=20, every strategy; exit non-zero unless flightcache made 1 origin call and served 1 body and nothing had transport errors")
	fs.StringVar(&o.logDir, "logs", "", "keep the servers' output in this directory (default: a temporary one, removed)")
	fs.StringVar(&out, "out", "", "write every cell and the machine as JSON to this file")
	expiry := fs.Bool("expiry", false, "measure hot keys expiring under steady load instead of cold herds (see -keys, -ttl, -duration, -rate, -workers, -early-refresh; -processes defaults to 4)")
	e := expiryFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, false, "", err
	}
	if *expiry {
		procsSet := false
		fs.Visit(func(f *flag.Flag) { procsSet = procsSet || f.Name == "processes" })
		e.processes = 4
		if procsSet {
			ps, err := positiveInts("-processes", *procs)
			if err != nil || len(ps) != 1 {
				return o, false, "", errExpiryFlags
			}
			e.processes = ps[0]
		}
		if e.keys <= 0 || e.ttl <= 0 || e.duration <= 0 || e.rate <= 0 || e.workers <= 0 || !(e.early > 0) {
			return o, false, "", errExpiryFlags
		}
		o.expiry = e
	}
	if o.redis == "" {
		return o, false, "", errors.New("-redis host:port is required: the fleet shares one real redis-server (for example -redis 127.0.0.1:6379)")
	}
	if o.rounds <= 0 {
		return o, false, "", fmt.Errorf("-rounds %d: want at least 1", o.rounds)
	}
	if *pollInterval > 0 {
		o.serverArgs = append(o.serverArgs, "-poll-interval", pollInterval.String())
	}
	if *storeTimeout > 0 {
		o.serverArgs = append(o.serverArgs, "-store-timeout", storeTimeout.String())
	}
	if smoke {
		*procs, *clients, *strategies = "2", "20", ""
	}
	if o.processes, err = positiveInts("-processes", *procs); err != nil {
		return o, false, "", err
	}
	if o.clients, err = positiveInts("-clients", *clients); err != nil {
		return o, false, "", err
	}
	o.strategies, err = pickStrategies(*strategies, o.peerBinary, o.peerName)
	return o, smoke, out, err
}

func positiveInts(name, list string) ([]int, error) {
	var ns []int
	for f := range strings.SplitSeq(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s %q: want positive integers separated by commas", name, list)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// pickStrategies returns the strategies of list in run order; an empty
// list means all, the peer included when it has a binary.
func pickStrategies(list, peerBinary, peerName string) ([]string, error) {
	all := slices.Clone(ownStrategies)
	if peerBinary != "" {
		all = append(all, peerName)
	}
	if list == "" {
		return all, nil
	}
	var picked []string
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(all, name) {
			return nil, fmt.Errorf("-strategies: unknown strategy %q: want some of %v (the peer needs -peer-binary)", name, all)
		}
		picked = append(picked, name)
	}
	slices.SortStableFunc(picked, func(a, b string) int { return slices.Index(all, a) - slices.Index(all, b) })
	return slices.Compact(picked), nil
}

// bench runs every cell of o, logging progress to progress, and returns
// the report, with the cells done so far when it fails.
func bench(ctx context.Context, o options, progress io.Writer) (*report.Stampede, error) {
	rdb := benchserver.NewRedisClient(o.redis)
	defer rdb.Close()
	machine, err := describeMachine(ctx, rdb, o.redis)
	if err != nil {
		return nil, err
	}
	work, logDir, err := workDirs(o, "flightcache-stampede-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	strategies, err := resolveStrategies(ctx, o, work)
	if err != nil {
		return nil, err
	}

	rep := &report.Stampede{
		Machine: machine, Started: time.Now().UTC(), Strategies: o.strategies,
		OriginDelayMS: ms(o.originDelay),
	}
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, s := range strategies {
		for _, p := range o.processes {
			cells, err := measureFleet(ctx, rdb, s, p, o, benchserver.Config{
				Redis: o.redis, Run: fmt.Sprintf("%s-%s-p%d", runID, s.name, p), OriginDelay: o.originDelay,
			}, logDir, progress)
			rep.Cells = append(rep.Cells, cells...)
			if err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

// measureFleet starts p servers of s, measures each client count on its own
// cold key, and stops them.
func measureFleet(ctx context.Context, rdb *redis.Client, s strategy, p int, o options, cfg benchserver.Config, logDir string, progress io.Writer) ([]report.Cell, error) {
	f, err := startFleet(ctx, s, p, cfg, logDir)
	if err != nil {
		return nil, err
	}
	defer rdb.Del(context.WithoutCancel(ctx), benchserver.CallsKey(cfg.Run))
	defer f.stop()
	if err := warmUp(ctx, f, cfg.Run, o.timeout); err != nil {
		return nil, fmt.Errorf("%s P=%d: %w", s.name, p, err)
	}
	var cells []report.Cell
	for _, n := range o.clients {
		c, err := measure(ctx, rdb, f, s, fmt.Sprintf("%s-n%d", cfg.Run, n), n, o) // fresh keys per cell

		if err != nil {
			return cells, fmt.Errorf("%s P=%d N=%d: %w", s.name, p, n, err)
		}
		fmt.Fprintf(progress, "%-12s P=%d N=%-4d origin calls %4d, distinct bodies %4d, extra wait p50 %6.1fms p99 %6.1fms, errors %d\n",
			c.Strategy, c.Processes, c.Clients, c.OriginCalls, c.DistinctBodies, c.ExtraWaitP50MS, c.ExtraWaitP99MS, c.Errors())
		cells = append(cells, c)
	}
	return cells, nil
}

// warmUp sends a small herd, 10 clients per process, for a key of its
// own through the fresh fleet and checks every request succeeds: a
// process's first requests dial Redis, subscribe and run code for the
// first time, which the measured herds should not pay for.
func warmUp(ctx context.Context, f *fleet, run string, timeout time.Duration) error {
	_, outcomes := herd(ctx, f.urls, benchserver.ItemPrefix+run+"-warm", 10*len(f.urls), timeout)
	for _, o := range outcomes {
		if o.err != nil || o.status != http.StatusOK {
			return fmt.Errorf("warm-up request: status %d, error %v", o.status, o.err)
		}
	}
	return nil
}

// resolveStrategies finds or builds the binaries of o's strategies.
func resolveStrategies(ctx context.Context, o options, work string) ([]strategy, error) {
	server := o.serverBinary
	var out []strategy
	for _, name := range o.strategies {
		if o.peerBinary != "" && name == o.peerName {
			out = append(out, strategy{name: name, binary: o.peerBinary})
			continue
		}
		if server == "" {
			var err error
			if server, err = buildServer(ctx, work); err != nil {
				return nil, err
			}
		}
		out = append(out, strategy{name: name, binary: server, args: append([]string{"-strategy", name}, o.serverArgs...)})
	}
	return out, nil
}

// describeMachine says where the run happens; it also checks that Redis
// answers.
func describeMachine(ctx context.Context, rdb *redis.Client, addr string) (report.Machine, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	info, err := rdb.InfoMap(ctx, "server").Result()
	if err != nil {
		return report.Machine{}, fmt.Errorf("cannot reach Redis at %s (-redis): %w", addr, err)
	}
	m := report.Machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, NumCPU: runtime.NumCPU(), GoVersion: runtime.Version()}
	for _, section := range info {
		if v, ok := section["redis_version"]; ok {
			m.RedisVersion = v
		}
	}
	return m, nil
}

// printTable writes the cells grouped by N, then P, strategies in run order.
func printTable(w io.Writer, rep *report.Stampede) {
	m := rep.Machine
	fmt.Fprintf(w, "%s/%s, %d CPUs, %s, Redis %s; origin delay %gms; extra wait = latency - origin delay\n\n",
		m.GOOS, m.GOARCH, m.NumCPU, m.GoVersion, m.RedisVersion, rep.OriginDelayMS)
	cells := slices.Clone(rep.Cells)
	slices.SortStableFunc(cells, func(a, b report.Cell) int {
		if a.Clients != b.Clients {
			return a.Clients - b.Clients
		}
		if a.Processes != b.Processes {
			return a.Processes - b.Processes
		}
		return slices.Index(rep.Strategies, a.Strategy) - slices.Index(rep.Strategies, b.Strategy)
	})
	fmt.Fprintf(w, "origin calls and distinct bodies: the most in one round; waits: over all rounds;\n")
	fmt.Fprintf(w, "cache errors: store errors the caches absorbed by serving uncached, in all rounds\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "N\tP\tstrategy\torigin calls\tdistinct bodies\tp50 ms\tp99 ms\tmax ms\tnon-200\ttransport errors\tcache errors\t")
	for _, c := range cells {
		cacheErrors := "-" // not reported
		if c.CacheErrors != nil {
			cacheErrors = strconv.FormatInt(*c.CacheErrors, 10)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%d\t%.1f\t%.1f\t%.1f\t%d\t%d\t%s\t\n", c.Clients, c.Processes, c.Strategy,
			c.OriginCalls, c.DistinctBodies, c.ExtraWaitP50MS, c.ExtraWaitP99MS, c.ExtraWaitMaxMS, c.StatusErrors, c.TransportErrors, cacheErrors)
	}
	tw.Flush()
}

// smokeFailures returns what is wrong with a smoke run: a strategy that
// did not run, flightcache calling the origin or serving a body more than
// once (or failing a client), any transport error.
func smokeFailures(rep *report.Stampede, strategies []string) []string {
	var failures []string
	for _, name := range strategies {
		if !slices.ContainsFunc(rep.Cells, func(c report.Cell) bool { return c.Strategy == name }) {
			failures = append(failures, fmt.Sprintf("strategy %s did not run", name))
		}
	}
	for _, c := range rep.Cells {
		where := fmt.Sprintf("%s P=%d N=%d", c.Strategy, c.Processes, c.Clients)
		if c.TransportErrors > 0 {
			failures = append(failures, fmt.Sprintf("%s: %d transport errors, want 0", where, c.TransportErrors))
		}
		if c.Strategy != "flightcache" {
			continue
		}
		if c.OriginCalls != 1 {
			failures = append(failures, fmt.Sprintf("%s: %d origin calls, want 1", where, c.OriginCalls))
		}
		if c.DistinctBodies != 1 {
			failures = append(failures, fmt.Sprintf("%s: %d distinct bodies, want 1", where, c.DistinctBodies))
		}
		if c.StatusErrors > 0 {
			failures = append(failures, fmt.Sprintf("%s: %d non-200 responses, want 0", where, c.StatusErrors))
		}
	}
	return failures
}

// workDirs makes a temporary work directory (the caller removes it) and
// returns it with the directory the processes' logs go to: o.logDir,
// created if need be, or the work directory.
func workDirs(o options, prefix string) (work, logDir string, err error) {
	work, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", "", fmt.Errorf("create work directory: %w", err)
	}
	if o.logDir == "" {
		return work, work, nil
	}
	if err := os.MkdirAll(o.logDir, 0o755); err != nil {
		os.RemoveAll(work)
		return "", "", fmt.Errorf("create log directory: %w", err)
	}
	return work, o.logDir, nil
}
