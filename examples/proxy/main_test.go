package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core/repotest"
)

// The tests run the built proxy as an OS process, as users run it, in
// front of a loopback httptest upstream, caching in the redis-server at
// FLIGHTCACHE_REDIS_ADDR under a namespace of their own (with -short and
// no redis-server, in the proxy's memory store).

var binDir string // holds the proxy binary, built once by proxyBinary

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flightcache-proxy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
	buildOut  []byte
)

// proxyBinary builds this command once per test run and returns its path.
func proxyBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "proxy")
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		buildOut, buildErr = exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOut)
	}
	return bin
}

// upstream is a test origin: it answers the proxy's readiness probe
// itself and counts every other request by method.
type upstream struct {
	*httptest.Server
	mu      sync.Mutex
	methods map[string]int // guarded by mu
	paths   map[string]int // guarded by mu
}

const readyPath = "/.ready"

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{methods: map[string]int{}, paths: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == readyPath {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		u.mu.Lock()
		u.methods[r.Method]++
		u.paths[r.URL.Path]++
		u.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count(method string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.methods[method]
}

func (u *upstream) pathCount(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.paths[path]
}

var nsSeq atomic.Int64

// startProxy runs the proxy for up on a free loopback port with the given
// extra arguments, waits until it answers, and returns its address
// (host:port). The process is stopped, by its PID, when the test ends.
// env is added to the process's environment; the variables the proxy
// reads are taken from it only.
func startProxy(t *testing.T, up *upstream, env []string, args ...string) string {
	t.Helper()
	addr, _ := startProxyLogs(t, up, env, args...)
	return addr
}

// startProxyLogs is startProxy, also returning what the proxy prints.
func startProxyLogs(t *testing.T, up *upstream, env []string, args ...string) (string, *lockedBuffer) {
	t.Helper()
	bin := proxyBinary(t)
	// Without -redis the proxy caches in FLIGHTCACHE_REDIS_ADDR's
	// redis-server, or with -short and none set, in its memory store.
	if !hasArg(args, "-redis") && !hasArg(args, "-redis-cluster") && hasRedis() {
		ns := fmt.Sprintf("proxytest-%d-%d-%d", os.Getpid(), time.Now().UnixNano(), nsSeq.Add(1))
		args = append(args, "-redis", repotest.RedisAddr(t), "-namespace", ns)
	}
	addr := freeAddr(t)
	args = append([]string{"-listen", addr, "-upstream", up.URL}, args...)
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); !proxyReads(name) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("proxy %s output:\n%s", addr, logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + readyPath)
		if err == nil {
			resp.Body.Close()
			if resp.Header.Get("X-Cache") != "" {
				return addr, &logs
			}
		}
		select {
		case <-done:
			t.Fatalf("the proxy exited at start:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy did not come up on %s within 30s:\n%s", addr, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxyReads reports whether the proxy reads the environment variable name.
func proxyReads(name string) bool {
	if name == passwordEnv {
		return true
	}
	for _, v := range envOf {
		if v == name {
			return true
		}
	}
	return false
}

func hasArg(args []string, name string) bool {
	for _, a := range args {
		if a == name {
			return true
		}
	}
	return false
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// result is what a client got.
type result struct {
	status int
	header http.Header
	body   string
}

var client = &http.Client{Timeout: 30 * time.Second}

// do sends method to http://addr+target with the given header lines
// ("Name: value") and returns the answer.
func do(t *testing.T, method, addr, target string, header ...string) result {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range header {
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimSpace(value)
		if strings.EqualFold(name, "Host") {
			req.Host = value
			continue
		}
		req.Header.Add(name, value)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, target, err)
	}
	return result{resp.StatusCode, resp.Header, string(body)}
}

// raw writes request, verbatim, on a new connection to addr and reads one
// response: for request lines and headers net/http's client does not send.
func raw(t *testing.T, addr, request string) result {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", request, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return result{resp.StatusCode, resp.Header, string(body)}
}

func wantBody(t *testing.T, what string, got result, want string) {
	t.Helper()
	if got.status != http.StatusOK || got.body != want {
		t.Errorf("%s: got %d %q (X-Cache %s), want 200 %q", what, got.status, got.body, got.header.Get("X-Cache"), want)
	}
}

// versioned is an upstream whose pages show the current version, cached
// for a minute.
func versioned(t *testing.T) (*upstream, *atomic.Int64) {
	var version atomic.Int64
	version.Store(1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprintf(w, "%s v%d", r.URL.RequestURI(), version.Load())
	})
	return up, &version
}

const token = "s3cret-purge-token"

// TestPurgeURL fills URLs through the proxy, changes the upstream, and
// purges them: only a request with the configured token purges, and the
// next GET gets the new version; PURGE never reaches the upstream.
func TestPurgeURL(t *testing.T) {
	up, version := versioned(t)
	addr := startProxy(t, up, nil, "-purge-token", token)
	bearer := "Authorization: Bearer " + token

	targets := []string{"/page", "/page?b=2&a=1", "/endpoint", "/absolute", "/http-url"}
	for _, target := range targets {
		wantBody(t, "fill "+target, do(t, "GET", addr, target), target+" v1")
	}
	version.Store(2)
	wantBody(t, "GET /page before any purge", do(t, "GET", addr, "/page"), "/page v1")

	refused := []struct {
		name   string
		header []string
		want   int
	}{
		{"no credentials", nil, http.StatusUnauthorized},
		{"basic credentials", []string{"Authorization: Basic " + token}, http.StatusUnauthorized},
		{"empty bearer", []string{"Authorization: Bearer "}, http.StatusUnauthorized},
		{"wrong token", []string{"Authorization: Bearer wrong"}, http.StatusForbidden},
		{"token prefix", []string{"Authorization: Bearer " + token[:len(token)-1]}, http.StatusForbidden},
		{"token with suffix", []string{"Authorization: Bearer " + token + "x"}, http.StatusForbidden},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			got := do(t, "PURGE", addr, "/page", tc.header...)
			if got.status != tc.want {
				t.Errorf("PURGE /page with %s = %d %q, want %d", tc.name, got.status, got.body, tc.want)
			}
			if tc.want == http.StatusUnauthorized && !strings.HasPrefix(got.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: WWW-Authenticate %q", got.header.Get("WWW-Authenticate"))
			}
			got = do(t, "POST", addr, purgePath+"?url=/page", tc.header...)
			if got.status != tc.want {
				t.Errorf("POST %s?url=/page with %s = %d, want %d", purgePath, tc.name, got.status, tc.want)
			}
			wantBody(t, "GET /page after a refused purge", do(t, "GET", addr, "/page"), "/page v1")
		})
	}

	purges := []struct {
		name, method, target, get string
	}{
		{"PURGE the URL", "PURGE", "/page", "/page"},
		{"PURGE keeps the query as sent", "PURGE", "/page?b=2&a=1", "/page?b=2&a=1"},
		{"POST to the endpoint", "POST", purgePath + "?url=" + url.QueryEscape("/endpoint"), "/endpoint"},
		{"PURGE an absolute-form target", "PURGE", "http://any.example/absolute", "/absolute"},
		{"endpoint with an absolute URL", "PURGE", purgePath + "?url=" + url.QueryEscape("https://www.example/http-url"), "/http-url"},
	}
	for _, tc := range purges {
		t.Run(tc.name, func(t *testing.T) {
			var got result
			if strings.HasPrefix(tc.target, "http://") {
				got = raw(t, addr, "PURGE "+tc.target+" HTTP/1.1\r\nHost: "+addr+"\r\n"+bearer+"\r\nConnection: close\r\n\r\n")
			} else {
				got = do(t, tc.method, addr, tc.target, bearer)
			}
			if got.status != http.StatusOK {
				t.Fatalf("%s %s = %d %q, want 200", tc.method, tc.target, got.status, got.body)
			}
			if cc := got.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("purge answer Cache-Control = %q, want no-store", cc)
			}
			wantBody(t, "GET after the purge", do(t, "GET", addr, tc.get), tc.get+" v2")
		})
	}
	if n := up.count("PURGE") + up.pathCount(purgePath); n != 0 {
		t.Errorf("the upstream got %d purge requests, want 0", n)
	}
}

// TestPurgeSoft soft-purges a URL whose response allows
// stale-while-revalidate: while the refresh is at the upstream, another
// client is served the old version at once instead of waiting.
func TestPurgeSoft(t *testing.T) {
	var version atomic.Int64
	version.Store(1)
	refreshing := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	stop := func() { releaseOnce.Do(func() { close(release) }) }
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		v := version.Load()
		if v > 1 && r.Method == http.MethodGet {
			select {
			case refreshing <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Cache-Control", "public, max-age=60, stale-while-revalidate=60")
		fmt.Fprintf(w, "v%d", v)
	})
	addr := startProxy(t, up, nil, "-purge-token", token)
	t.Cleanup(stop) // runs first: the proxy and the upstream wait for handlers
	wantBody(t, "fill", do(t, "GET", addr, "/soft"), "v1")
	version.Store(2)

	if got := do(t, "PURGE", addr, "/soft", "Authorization: Bearer "+token, "Soft-Purge: 1"); got.status != http.StatusOK {
		t.Fatalf("soft PURGE = %d %q, want 200", got.status, got.body)
	}
	first := make(chan result, 1)
	go func() { first <- get(addr, "/soft") }()
	select {
	case <-refreshing:
	case r := <-first:
		t.Fatalf("the first GET after a soft purge got %d %q without asking the upstream", r.status, r.body)
	case <-time.After(30 * time.Second):
		t.Fatal("the first GET after a soft purge did not reach the upstream within 30s")
	}
	second := make(chan result, 1)
	go func() { second <- get(addr, "/soft") }()
	var stale result
	select {
	case stale = <-second:
	case <-time.After(15 * time.Second):
		// It waits for the refresh: the purge was not soft.
	}
	stop()
	if r := <-first; r.body != "v2" {
		t.Errorf("the refreshing GET got %d %q, want v2", r.status, r.body)
	}
	if stale.status == 0 {
		stale = <-second
		t.Errorf("a GET during the refresh waited for it and got %q; want the stale v1 at once", stale.body)
	} else if stale.body != "v1" {
		t.Errorf("a GET during the refresh got %d %q (X-Cache %s), want the stale v1", stale.status, stale.body, stale.header.Get("X-Cache"))
	}
	wantBody(t, "GET after the refresh", do(t, "GET", addr, "/soft"), "v2")
}

// get is do for goroutines: it reports errors in the result.
func get(addr, target string) result {
	resp, err := client.Get("http://" + addr + target)
	if err != nil {
		return result{status: -1, body: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, string(body)}
}

// TestPurgeDisabled runs the proxy without a token: purge requests are
// refused by the proxy itself and purge nothing.
func TestPurgeDisabled(t *testing.T) {
	up, version := versioned(t)
	addr := startProxy(t, up, nil)
	wantBody(t, "fill", do(t, "GET", addr, "/page"), "/page v1")
	version.Store(2)
	for _, tc := range []struct {
		method, target string
		want           int
	}{
		{"PURGE", "/page", http.StatusMethodNotAllowed},
		{"POST", purgePath + "?url=/page", http.StatusNotFound},
		{"GET", purgePath + "?url=/page", http.StatusNotFound},
	} {
		got := do(t, tc.method, addr, tc.target, "Authorization: Bearer "+token)
		if got.status != tc.want {
			t.Errorf("%s %s with purging disabled = %d %q, want %d", tc.method, tc.target, got.status, got.body, tc.want)
		}
	}
	wantBody(t, "GET after refused purges", do(t, "GET", addr, "/page"), "/page v1")
	if n := up.count("PURGE") + up.pathCount(purgePath); n != 0 {
		t.Errorf("the upstream got %d purge requests, want 0", n)
	}
}

// TestPurgeTokenFromEnv enables purging with FLIGHTCACHE_PURGE_TOKEN.
func TestPurgeTokenFromEnv(t *testing.T) {
	up, version := versioned(t)
	addr := startProxy(t, up, []string{"FLIGHTCACHE_PURGE_TOKEN=" + token})
	wantBody(t, "fill", do(t, "GET", addr, "/page"), "/page v1")
	version.Store(2)
	if got := do(t, "PURGE", addr, "/page", "Authorization: Bearer wrong"); got.status != http.StatusForbidden {
		t.Errorf("PURGE with a wrong token = %d, want 403", got.status)
	}
	if got := do(t, "PURGE", addr, "/page", "Authorization: bearer "+token); got.status != http.StatusOK {
		t.Errorf("PURGE with the token = %d %q, want 200", got.status, got.body)
	}
	wantBody(t, "GET after the purge", do(t, "GET", addr, "/page"), "/page v2")
}

// TestPurgeBadRequests covers purge requests that are refused for what
// they ask, and purges by tag, which core does not offer yet.
func TestPurgeBadRequests(t *testing.T) {
	up, _ := versioned(t)
	addr := startProxy(t, up, nil, "-purge-token", token)
	bearer := "Authorization: Bearer " + token
	for _, tc := range []struct {
		name, method, target string
		header               []string
		want                 int
	}{
		{"endpoint without url or tag", "POST", purgePath, nil, http.StatusBadRequest},
		{"endpoint with url and tag", "POST", purgePath + "?url=/a&tag=x", nil, http.StatusBadRequest},
		{"endpoint with a relative url", "POST", purgePath + "?url=a", nil, http.StatusBadRequest},
		{"endpoint with a GET", "GET", purgePath + "?url=/a", nil, http.StatusMethodNotAllowed},
		{"bad Soft-Purge", "PURGE", "/a", []string{"Soft-Purge: yes"}, http.StatusBadRequest},
		{"tag by Surrogate-Key", "PURGE", "/a", []string{"Surrogate-Key: x y"}, http.StatusOK},
		{"tag on the endpoint", "POST", purgePath + "?tag=x", nil, http.StatusOK},
		{"soft tag purge", "PURGE", "/a", []string{"Surrogate-Key: x", "Soft-Purge: 1"}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := do(t, tc.method, addr, tc.target, append(tc.header, bearer)...)
			if got.status != tc.want {
				t.Errorf("%s %s = %d %q, want %d", tc.method, tc.target, got.status, got.body, tc.want)
			}
		})
	}
	if n := up.count("PURGE") + up.pathCount(purgePath); n != 0 {
		t.Errorf("the upstream got %d purge requests, want 0", n)
	}
}

// TestPurgeStoreDown purges through a proxy whose Redis does not answer:
// 503 with a short body that names no internals, and GETs still served.
func TestPurgeStoreDown(t *testing.T) {
	up, _ := versioned(t)
	dead := freeAddr(t) // nothing listens there any more
	addr := startProxy(t, up, nil, "-purge-token", token, "-redis", dead, "-namespace", "proxytest-dead")
	wantBody(t, "GET with Redis down", do(t, "GET", addr, "/page"), "/page v1")
	got := do(t, "PURGE", addr, "/page", "Authorization: Bearer "+token)
	if got.status != http.StatusServiceUnavailable {
		t.Fatalf("PURGE with Redis down = %d %q, want 503", got.status, got.body)
	}
	if len(got.body) > 80 || strings.Contains(got.body, "127.0.0.1") || strings.Contains(strings.ToLower(got.body), "redis") {
		t.Errorf("503 body %q: want a short message without internals", got.body)
	}
}

// TestForwardedHostNotPoisoned sends the attacker's host in the ways a
// client can (Host, Host with a port, an absolute-form target) to an
// upstream that builds links from X-Forwarded-Host: a clean client must
// never get a page with the attacker's host in it (issue 12).
func TestForwardedHostNotPoisoned(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprintf(w, `<a href="//%s/next">`, r.Header.Get("X-Forwarded-Host"))
	})
	for _, public := range []string{"", "www.example.test"} {
		var args []string
		if public != "" {
			args = []string{"-public-host", public}
		}
		addr := startProxy(t, up, nil, args...)
		for i, attack := range []string{
			"GET /p%d HTTP/1.1\r\nHost: evil.example\r\n",
			"GET /p%d HTTP/1.1\r\nHost: evil.example:8443\r\n",
			"GET http://evil.example/p%d HTTP/1.1\r\nHost: evil.example\r\n",
		} {
			attack = fmt.Sprintf(attack, i)
			if got := raw(t, addr, attack+"Connection: close\r\n\r\n"); got.status != http.StatusOK {
				t.Fatalf("%q: %d %q", attack, got.status, got.body)
			}
			got := do(t, "GET", addr, fmt.Sprintf("/p%d", i))
			want := fmt.Sprintf(`<a href="//%s/next">`, public)
			if got.body != want {
				t.Errorf("-public-host %q: after %q a clean GET got %q, want %q", public, attack, got.body, want)
			}
		}
	}
}

// TestErrorsNotCached has clients provoke error responses that the
// upstream marks public with a max-age: none is served to the next client
// (issue 13), while a 404 is still cached.
func TestErrorsNotCached(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=30")
		switch {
		case len(r.Header.Get("X-Oversized")) > 4096:
			http.Error(w, "header too large", http.StatusBadRequest)
		case r.Header.Get("X-Status") != "":
			code, _ := strconv.Atoi(r.Header.Get("X-Status"))
			http.Error(w, "error", code)
		case r.URL.Path == "/missing":
			http.Error(w, "not found", http.StatusNotFound)
		default:
			fmt.Fprint(w, "ok")
		}
	})
	addr := startProxy(t, up, nil)
	codes := []int{401, 403, 405, 406, 413, 414, 415, 429, 431, 451, 500, 501, 502, 503, 504}
	t.Run("400 from an oversized header", func(t *testing.T) {
		if got := do(t, "GET", addr, "/big", "X-Oversized: "+strings.Repeat("x", 5000)); got.status != http.StatusBadRequest {
			t.Fatalf("the attack got %d, want the upstream's 400", got.status)
		}
		wantBody(t, "a clean GET after the attack", do(t, "GET", addr, "/big"), "ok")
	})
	for _, code := range codes {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			target := fmt.Sprintf("/e%d", code)
			if got := do(t, "GET", addr, target, "X-Status: "+strconv.Itoa(code)); got.status != code {
				t.Fatalf("the attack got %d, want the upstream's %d", got.status, code)
			}
			wantBody(t, "a clean GET after the attack", do(t, "GET", addr, target), "ok")
		})
	}
	t.Run("404 is still cached", func(t *testing.T) {
		do(t, "GET", addr, "/missing")
		if got := do(t, "GET", addr, "/missing"); got.status != http.StatusNotFound || got.header.Get("X-Cache") != "HIT" {
			t.Errorf("second GET /missing = %d, X-Cache %q; want 404 HIT", got.status, got.header.Get("X-Cache"))
		}
	})
}

// TestCacheErrorsFlag shows the opt-in: with -cache-errors a 503 the
// upstream marks public with a max-age is stored and served again.
func TestCacheErrorsFlag(t *testing.T) {
	var calls atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=30")
		if calls.Add(1) == 1 {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	})
	addr := startProxy(t, up, nil, "-cache-errors")
	do(t, "GET", addr, "/flaky")
	if got := do(t, "GET", addr, "/flaky"); got.status != http.StatusServiceUnavailable || got.header.Get("X-Cache") != "HIT" {
		t.Errorf("with -cache-errors the second GET = %d %q (X-Cache %q), want the stored 503", got.status, got.body, got.header.Get("X-Cache"))
	}
}

// TestConnectionHeaderDoesNotPoisonVariants sends Accept-Language: fr and
// names it in Connection, so that it is stripped before the upstream: the
// upstream's default-language answer must not become the French variant
// (issue 14).
func TestConnectionHeaderDoesNotPoisonVariants(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		if strings.HasPrefix(r.Header.Get("Accept-Language"), "fr") {
			fmt.Fprint(w, "bonjour")
			return
		}
		fmt.Fprint(w, "hello")
	})
	addr := startProxy(t, up, nil)
	for _, conn := range []string{"Accept-Language", "close, accept-language", "keep-alive,Accept-Language"} {
		t.Run(conn, func(t *testing.T) {
			target := "/greet?c=" + url.QueryEscape(conn)
			raw(t, addr, "GET "+target+" HTTP/1.1\r\nHost: "+addr+"\r\nAccept-Language: fr\r\nConnection: "+conn+"\r\n\r\n")
			wantBody(t, "a clean French GET", do(t, "GET", addr, target, "Accept-Language: fr"), "bonjour")
			wantBody(t, "a clean GET", do(t, "GET", addr, target), "hello")
		})
	}
}

// TestPurgeTag fills pages whose upstream tags them (Surrogate-Key), then
// purges one tag through the proxy: every page carrying it is refetched,
// the others are not, and clients never see the tag header.
func TestPurgeTag(t *testing.T) {
	var version atomic.Int64
	version.Store(1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		tag := "product-1"
		if r.URL.Path == "/other" {
			tag = "product-2"
		}
		w.Header().Set("Surrogate-Key", tag+" all")
		fmt.Fprintf(w, "%s v%d", r.URL.Path, version.Load())
	})
	addr := startProxy(t, up, nil, "-purge-token", token)
	for _, p := range []string{"/a", "/b", "/other"} {
		got := do(t, "GET", addr, p)
		wantBody(t, "fill "+p, got, p+" v1")
		if got.header.Get("Surrogate-Key") != "" {
			t.Errorf("GET %s: the client got Surrogate-Key %q", p, got.header.Get("Surrogate-Key"))
		}
	}
	version.Store(2)
	if got := do(t, "PURGE", addr, "/anything", "Authorization: Bearer "+token, "Surrogate-Key: product-1"); got.status != http.StatusOK {
		t.Fatalf("PURGE by tag = %d %q, want 200", got.status, got.body)
	}
	wantBody(t, "GET /a after its tag was purged", do(t, "GET", addr, "/a"), "/a v2")
	wantBody(t, "GET /b after its tag was purged", do(t, "GET", addr, "/b"), "/b v2")
	wantBody(t, "GET /other, not tagged product-1", do(t, "GET", addr, "/other"), "/other v1")
}
