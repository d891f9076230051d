// Command hithttp measures cache hits through real HTTP: requests per
// second of one gin server on loopback, under a closed loop of keep-alive
// clients, for four variants of the same route and 2 KiB body (those of
// the adapters' BenchmarkHit, see core/repotest):
//
//   - bare: the handler, no cache;
//
//   - floor: a handler doing one raw go-redis GET of the bytes the cache
//     stored for the route, then writing the body: what a hit from Redis
//     cannot avoid;
//
//   - cached: ginmw with every request a hit from Redis;
//
//   - cached-l1: the same with core.WithLocalTier, every request a hit
//     from process memory.
//
//     go run ./bench/hithttp -redis 127.0.0.1:6379 -rounds 3 -duration 5s -out hithttp.json
//
// Every response is checked: a status other than 200, a body of another
// size or, for the cached variants, an X-Cache other than HIT ends the
// run with an error.
//
// Each variant runs in a server process of its own (this program,
// re-executed), started fresh for every measurement; the variants take
// turns, round after round, so that a change in the machine's load falls
// on all of them. It prints each round's req/s and its ratios to bare and
// floor, then the medians, and with -out FILE.json writes them all as
// JSON (bench/internal/report.HitHTTP). The load generator is in this
// process: on a machine with few cores it competes with the server and
// redis-server, alike for every variant.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/bench/internal/report"
	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/ginmw"
)

const bodySize = 2 << 10

var variants = []string{"bare", "floor", "cached", "cached-l1"}

func main() {
	redisAddr := flag.String("redis", "", "Redis host:port (required)")
	rounds := flag.Int("rounds", 3, "rounds of every variant")
	duration := flag.Duration("duration", 5*time.Second, "length of one measurement")
	clients := flag.Int("clients", 64, "keep-alive clients, each with one request in flight")
	out := flag.String("out", "", "also write every round and the medians as JSON to this file")
	serve := flag.String("serve", "", "internal: serve this variant on -listen")
	listen := flag.String("listen", "127.0.0.1:0", "internal: address to serve on")
	ns := flag.String("namespace", "", "internal: the cache namespace")
	profile := flag.String("cpuprofile", "", "write the servers' CPU profiles to this file, suffixed with the variant")
	flag.Parse()
	if *redisAddr == "" {
		log.Fatal("hithttp: -redis is required")
	}
	if *serve != "" {
		runServer(*serve, *listen, *redisAddr, *ns, *profile)
		return
	}
	if *rounds <= 0 || *duration <= 0 || *clients <= 0 {
		log.Fatal("hithttp: -rounds, -duration and -clients must be positive")
	}
	rep := &report.HitHTTP{
		Started: time.Now().UTC(), Machine: machine(*redisAddr),
		Clients: *clients, BodySize: bodySize, Duration: *duration, Variants: variants,
	}
	namespace := fmt.Sprintf("hithttp-%d-%d", os.Getpid(), time.Now().UnixNano())
	fill(*redisAddr, namespace)
	var all []map[string]sample
	for round := 1; round <= *rounds; round++ {
		got := map[string]sample{}
		for _, v := range variants {
			got[v] = measure(v, *redisAddr, namespace, *profile, *clients, *duration)
		}
		all = append(all, got)
		rep.Rounds = append(rep.Rounds, summarize(got))
		printRound(fmt.Sprintf("round %d", round), rep.Rounds[len(rep.Rounds)-1])
	}
	med := map[string]sample{}
	for _, v := range variants {
		var s []sample
		for _, got := range all {
			s = append(s, got[v])
		}
		pick := func(f func(sample) float64) float64 {
			var xs []float64
			for _, x := range s {
				xs = append(xs, f(x))
			}
			return median(xs)
		}
		med[v] = sample{
			rps:    pick(func(x sample) float64 { return x.rps }),
			server: pick(func(x sample) float64 { return x.server }),
			client: pick(func(x sample) float64 { return x.client }),
			redis:  pick(func(x sample) float64 { return x.redis }),
		}
	}
	rep.Median = summarize(med)
	printRound("median", rep.Median)
	if *out != "" {
		if err := rep.Write(*out); err != nil {
			log.Fatal("hithttp: ", err)
		}
	}
}

// summarize returns the samples of one round, or their medians, with
// their ratios to bare and floor, of req/s and of requests per CPU second
// (what a machine whose cores the three processes share would serve).
func summarize(got map[string]sample) map[string]report.HitHTTPSample {
	bare, floor := got["bare"], got["floor"]
	sum := map[string]report.HitHTTPSample{}
	for _, v := range variants {
		s := got[v]
		sum[v] = report.HitHTTPSample{
			PerSecond: s.rps, ServerCPU: s.server, ClientsCPU: s.client, RedisCPU: s.redis,
			VsBare: s.rps / bare.rps, VsFloor: s.rps / floor.rps,
			CPUVsBare: bare.cpu() / s.cpu(), CPUVsFloor: floor.cpu() / s.cpu(),
		}
	}
	return sum
}

// printRound prints one round's samples, or the medians: req/s and CPU µs per
// request (server + clients + redis-server), then the ratios to bare and
// floor.
func printRound(name string, got map[string]report.HitHTTPSample) {
	fmt.Printf("%s:\n", name)
	for _, v := range variants {
		s := got[v]
		fmt.Printf("  %-9s %7.0f req/s  cpu/req %5.1f µs (server %5.1f, clients %5.1f, redis %4.1f)  req/s÷bare %.2f  ÷floor %.2f  req/cpu÷bare %.2f  ÷floor %.2f\n",
			v, s.PerSecond, s.CPU(), s.ServerCPU, s.ClientsCPU, s.RedisCPU, s.VsBare, s.VsFloor, s.CPUVsBare, s.CPUVsFloor)
	}
}

// machine describes this machine and the redis-server at addr.
func machine(addr string) report.Machine {
	m := report.Machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, NumCPU: runtime.NumCPU(), GoVersion: runtime.Version()}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	info, err := rdb.Info(context.Background(), "server").Result()
	if err != nil {
		log.Fatalf("hithttp: redis %s: %v", addr, err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			m.RedisVersion = v
		}
	}
	return m
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fill stores the route's response under namespace, once, through a
// cached server of this process.
func fill(redisAddr, namespace string) {
	h, stop := handler("cached", redisAddr, namespace)
	defer stop()
	srv := &http.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	// The clients' request: no Accept-Encoding, as measure sends it.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, err := client.Get("http://" + ln.Addr().String() + "/items/42")
	if err != nil {
		log.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || n != bodySize {
		log.Fatalf("hithttp: filling request answered %d with %d bytes", resp.StatusCode, n)
	}
}

// measure starts a server of variant v and measures the req/s that
// clients keep-alive connections reach in d, and the CPU time spent per
// request.
func measure(v, redisAddr, namespace, profile string, clients int, d time.Duration) sample {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(exe, "-serve", v, "-redis", redisAddr, "-namespace", namespace, "-cpuprofile", profile)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		log.Fatalf("hithttp: %s server: %v", v, err)
	}
	url := "http://" + strings.TrimSpace(addr) + "/items/42"
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || n != bodySize) {
			err = fmt.Errorf("answered %d with %d bytes", resp.StatusCode, n)
		}
		if err == nil && v != "bare" && v != "floor" && resp.Header.Get("X-Cache") != "HIT" {
			err = fmt.Errorf("X-Cache %q, want HIT", resp.Header.Get("X-Cache"))
		}
		return err
	}
	// Warm up: connections open, the local tier filled.
	for range 2 * clients {
		if err := get(); err != nil {
			log.Fatalf("hithttp: %s warm-up: %v", v, err)
		}
	}
	server0, self0, redis0 := procCPU(cmd.Process.Pid), selfCPU(), redisCPU(rdb)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var served atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := get(); err != nil {
					failed.Store(err)
					return
				}
				served.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := failed.Load(); err != nil {
		log.Fatalf("hithttp: %s: %v", v, err)
	}
	n := float64(served.Load())
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / n }
	return sample{
		rps:    n / elapsed.Seconds(),
		server: per(procCPU(cmd.Process.Pid) - server0),
		client: per(selfCPU() - self0),
		redis:  per(redisCPU(rdb) - redis0),
	}
}

// sample is one measurement: req/s, and CPU µs per request of the
// server process, of this process (the clients) and of redis-server.
type sample struct{ rps, server, client, redis float64 }

func (s sample) cpu() float64 { return s.server + s.client + s.redis }

// procCPU returns the CPU time process pid has used (Linux).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses: state is
	// field 3; utime and stime are fields 14 and 15, in clock ticks.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func selfCPU() time.Duration { return procCPU(os.Getpid()) }

// redisCPU returns the CPU time redis-server has used.
func redisCPU(rdb *redis.Client) time.Duration {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			x, _ := strconv.ParseFloat(v, 64)
			total += x
		}
	}
	return time.Duration(total * float64(time.Second))
}

// runServer serves variant v until interrupted, printing its address.
func runServer(v, listen, redisAddr, namespace, profile string) {
	if profile != "" {
		f, err := os.Create(profile + "." + v)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	h, stop := handler(v, redisAddr, namespace)
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		srv.Close()
	}()
	fmt.Println(ln.Addr().String())
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		log.Print(err)
	}
}

// handler returns the gin engine of variant v.
func handler(v, redisAddr, namespace string) (http.Handler, func()) {
	gin.SetMode(gin.ReleaseMode)
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, PoolSize: 64})
	body := make([]byte, bodySize)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	origin := func(c *gin.Context) { c.Data(http.StatusOK, "application/json", body) }
	r := gin.New()
	var store *core.RedisStore
	switch v {
	case "bare":
		r.GET("/items/:id", origin)
	case "floor":
		keys, err := rdb.Keys(context.Background(), namespace+":*").Result()
		if err != nil || len(keys) != 1 {
			log.Fatalf("hithttp: keys of namespace %s = %v (%v), want the filled entry", namespace, keys, err)
		}
		r.GET("/items/:id", func(c *gin.Context) {
			b, err := rdb.Get(c.Request.Context(), keys[0]).Bytes()
			if err != nil {
				c.AbortWithStatus(http.StatusInternalServerError)
				return
			}
			c.Data(http.StatusOK, "application/json", b[len(b)-bodySize:])
		})
	case "cached", "cached-l1":
		store = core.NewRedisStore(rdb)
		opts := []core.Option{core.WithNamespace(namespace)}
		if v == "cached-l1" {
			opts = append(opts, core.WithLocalTier(64<<20))
		}
		c := core.New(store, opts...)
		// One key whatever port each server listens on.
		r.Use(ginmw.Cache(c, core.TTL(time.Hour), core.KeyHost("hithttp")))
		r.GET("/items/:id", origin)
	default:
		log.Fatalf("hithttp: variant %q: want one of %v", v, variants)
	}
	return r, func() {
		if store != nil {
			store.Close()
		}
		rdb.Close()
	}
}
