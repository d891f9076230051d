package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/repotest"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// TestParseConfig reads each setting from its flag and from its
// environment variable, the flag winning.
func TestParseConfig(t *testing.T) {
	up := []string{"-upstream", "http://127.0.0.1:8000"}
	tests := []struct {
		name  string
		args  []string
		env   func(string) string
		check func(t *testing.T, c config)
	}{
		{"defaults", up, env(), func(t *testing.T, c config) {
			if c.listen != defaultListen || c.namespace != defaultNamespace || c.localTier != 0 ||
				c.maxBody != core.DefaultMaxBodySize || c.redis.single != nil || c.redis.cluster != nil ||
				c.dialTimeout != defaultDialTimeout || c.headerTimeout != defaultHeaderTimeout || c.timeout != defaultTimeout {
				t.Errorf("defaults: got %+v", c)
			}
		}},
		{"upstream from env", nil, env("FLIGHTCACHE_UPSTREAM", "https://origin.example:8443/base"), func(t *testing.T, c config) {
			if c.upstream.String() != "https://origin.example:8443/base" {
				t.Errorf("upstream = %v", c.upstream)
			}
		}},
		{"redis host:port with password from env", append(up, "-redis", "127.0.0.1:6380"), env("REDIS_PASSWORD", "pw"), func(t *testing.T, c config) {
			o := c.redis.single
			if o == nil || o.Addr != "127.0.0.1:6380" || o.Password != "pw" || o.TLSConfig != nil || !o.ContextTimeoutEnabled {
				t.Errorf("redis options = %+v", o)
			}
		}},
		{"redis URL with user, password and db", append(up, "-redis", "redis://app:url-pw@10.0.0.1:6379/2"), env("REDIS_PASSWORD", "env-pw"), func(t *testing.T, c config) {
			o := c.redis.single
			if o == nil || o.Addr != "10.0.0.1:6379" || o.Username != "app" || o.Password != "url-pw" || o.DB != 2 || o.TLSConfig != nil {
				t.Errorf("redis options = %+v", o)
			}
		}},
		{"rediss URL turns TLS on", append(up, "-redis", "rediss://:pw@cache.example:6380"), env(), func(t *testing.T, c config) {
			o := c.redis.single
			if o == nil || o.TLSConfig == nil || o.TLSConfig.ServerName != "cache.example" || o.Password != "pw" {
				t.Fatalf("redis options = %+v", o)
			}
			if got := c.redis.describe(); got != "Redis at cache.example:6380 (TLS)" || strings.Contains(got, "pw") {
				t.Errorf("describe() = %q", got)
			}
		}},
		{"REDIS_URL", up, env("REDIS_URL", "redis://10.0.0.2:6379"), func(t *testing.T, c config) {
			if c.redis.single == nil || c.redis.single.Addr != "10.0.0.2:6379" {
				t.Errorf("redis options = %+v", c.redis.single)
			}
		}},
		{"cluster seeds", append(up, "-redis-cluster", "10.0.0.1:7000, 10.0.0.2:7001"), env("REDIS_PASSWORD", "pw"), func(t *testing.T, c config) {
			o := c.redis.cluster
			if o == nil || strings.Join(o.Addrs, ",") != "10.0.0.1:7000,10.0.0.2:7001" || o.Password != "pw" || !o.ContextTimeoutEnabled {
				t.Errorf("cluster options = %+v", o)
			}
		}},
		{"cluster URL with TLS", append(up, "-redis-cluster", "rediss://:pw@10.0.0.1:7000?addr=10.0.0.2:7001"), env(), func(t *testing.T, c config) {
			o := c.redis.cluster
			if o == nil || len(o.Addrs) != 2 || o.TLSConfig == nil || o.Password != "pw" {
				t.Errorf("cluster options = %+v", o)
			}
		}},
		{"sizes, namespace, timeouts", append(up, "-redis", "127.0.0.1:6379", "-namespace", "shop:v2", "-local-tier", "64MiB",
			"-max-body", "512KiB", "-upstream-dial-timeout", "1s", "-upstream-header-timeout", "2s", "-upstream-timeout", "3s"), env(),
			func(t *testing.T, c config) {
				if c.namespace != "shop:v2" || c.localTier != 64<<20 || c.maxBody != 512<<10 ||
					c.dialTimeout != time.Second || c.headerTimeout != 2*time.Second || c.timeout != 3*time.Second {
					t.Errorf("got %+v", c)
				}
			}},
		{"the same from env", up, env("REDIS_URL", "127.0.0.1:6379", "FLIGHTCACHE_NAMESPACE", "shop:v2", "FLIGHTCACHE_LOCAL_TIER", "1GiB",
			"FLIGHTCACHE_MAX_BODY", "2048", "FLIGHTCACHE_UPSTREAM_DIAL_TIMEOUT", "1s", "FLIGHTCACHE_UPSTREAM_HEADER_TIMEOUT", "2s",
			"FLIGHTCACHE_UPSTREAM_TIMEOUT", "3s"), func(t *testing.T, c config) {
			if c.namespace != "shop:v2" || c.localTier != 1<<30 || c.maxBody != 2048 ||
				c.dialTimeout != time.Second || c.headerTimeout != 2*time.Second || c.timeout != 3*time.Second {
				t.Errorf("got %+v", c)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			c, err := parseConfig(tc.args, tc.env, &out)
			if err != nil {
				t.Fatalf("parseConfig(%q) = %v\n%s", tc.args, err, out.String())
			}
			tc.check(t, c)
		})
	}
	t.Run("flag over variable", func(t *testing.T) {
		c, err := parseConfig(append(up, "-namespace", "flag"), env("FLIGHTCACHE_NAMESPACE", "env"), new(bytes.Buffer))
		if err != nil || c.namespace != "flag" {
			t.Errorf("namespace = %q, %v; want the flag's", c.namespace, err)
		}
	})
}

// TestParseConfigErrors refuses every bad setting with an error that names
// it, and never echoes a password.
func TestParseConfigErrors(t *testing.T) {
	up := []string{"-upstream", "http://127.0.0.1:8000"}
	tests := []struct {
		name string
		args []string
		env  func(string) string
		want string
	}{
		{"no upstream", nil, env(), "-upstream"},
		{"relative upstream", []string{"-upstream", "/x"}, env(), "-upstream"},
		{"ftp upstream", []string{"-upstream", "ftp://h/"}, env(), "-upstream"},
		{"both redis flags", append(up, "-redis", "h:1", "-redis-cluster", "h:2"), env(), "not both"},
		{"redis without port", append(up, "-redis", "localhost"), env(), "-redis"},
		{"redis bad port", append(up, "-redis", "localhost:99999"), env(), "port"},
		{"redis bad scheme", append(up, "-redis", "http://h:1"), env(), "-redis"},
		{"redis broken URL", append(up, "-redis", "redis://:topsecret@[::1"), env(), "-redis"},
		{"cluster bad seed", append(up, "-redis-cluster", "h:1,,h:2"), env(), "-redis-cluster"},
		{"namespace with braces", append(up, "-namespace", "a{b}"), env(), "-namespace"},
		{"empty namespace", append(up, "-namespace", ""), env(), "-namespace"},
		{"local tier without redis", append(up, "-local-tier", "1MiB"), env(), "-local-tier"},
		{"bad size", append(up, "-max-body", "1MB"), env(), "max-body"},
		{"negative size", append(up, "-max-body", "-1"), env(), "max-body"},
		{"zero body", append(up, "-max-body", "0"), env(), "-max-body"},
		{"huge body", append(up, "-max-body", "1GiB"), env(), "-max-body"},
		{"zero timeout", append(up, "-upstream-timeout", "0s"), env(), "must be positive"},
		{"bad variable", up, env("FLIGHTCACHE_UPSTREAM_TIMEOUT", "soon"), "$FLIGHTCACHE_UPSTREAM_TIMEOUT"},
		{"stray argument", append(up, "extra"), env(), "unexpected argument"},
		{"unknown flag", append(up, "-redis-url", "x"), env(), "not defined"},
		{"token with space", append(up, "-purge-token", "a b"), env(), "white space"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := parseConfig(tc.args, tc.env, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseConfig(%q) = %v, want an error mentioning %q", tc.args, err, tc.want)
			}
			if strings.Contains(err.Error()+out.String(), "topsecret") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// TestHelp lists every flag with its variable.
func TestHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseConfig([]string{"-h"}, env(), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parseConfig(-h) = %v, want flag.ErrHelp", err)
	}
	for name, v := range envOf {
		if !strings.Contains(out.String(), "-"+name) || !strings.Contains(out.String(), "$"+v) {
			t.Errorf("-h does not list -%s with $%s:\n%s", name, v, out.String())
		}
	}
	for _, s := range []string{"rediss://", "REDIS_PASSWORD", "-cache-errors"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("-h does not mention %s", s)
		}
	}
}

// TestNamespaceFlag finds the proxy's entries under its namespace in Redis.
func TestNamespaceFlag(t *testing.T) {
	addr := repotest.RedisAddr(t)
	up, _ := versioned(t)
	ns := fmt.Sprintf("proxyns-%d-%d", os.Getpid(), time.Now().UnixNano())
	p := startProxy(t, up, nil, "-redis", addr, "-namespace", ns)
	wantBody(t, "fill", do(t, "GET", p, "/ns"), "/ns v1")
	wantBody(t, "hit", do(t, "GET", p, "/ns"), "/ns v1")
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), ns+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Errorf("no key under %s:* after a fill", ns)
	}
	if n := up.pathCount("/ns"); n != 1 {
		t.Errorf("upstream called %d times, want 1", n)
	}
}

// TestRedisPasswordFlag connects as a Redis ACL user: with the password in
// the URL, and from $REDIS_PASSWORD, both fill once and hit; a wrong
// password is reported at start and the proxy serves uncached.
func TestRedisPasswordFlag(t *testing.T) {
	addr := repotest.RedisAddr(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	user := fmt.Sprintf("proxytest-%d-%d", os.Getpid(), time.Now().UnixNano())
	const pw = "pw-0123456789"
	if err := rdb.Do(ctx, "ACL", "SETUSER", user, "on", ">"+pw, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Do(context.Background(), "ACL", "DELUSER", user) })

	for _, tc := range []struct {
		name string
		env  []string
		url  string
	}{
		{"in the URL", nil, "redis://" + user + ":" + pw + "@" + addr},
		{"from REDIS_PASSWORD", []string{"REDIS_PASSWORD=" + pw}, "redis://" + user + "@" + addr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, _ := versioned(t)
			ns := fmt.Sprintf("proxypw-%d-%d", os.Getpid(), time.Now().UnixNano())
			p := startProxy(t, up, tc.env, "-redis", tc.url, "-namespace", ns)
			do(t, "GET", p, "/pw")
			if got := do(t, "GET", p, "/pw"); got.header.Get("X-Cache") != "HIT" {
				t.Errorf("second GET: X-Cache %q, want HIT", got.header.Get("X-Cache"))
			}
			if n := up.pathCount("/pw"); n != 1 {
				t.Errorf("upstream called %d times, want 1", n)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		up, _ := versioned(t)
		p, logs := startProxyLogs(t, up, nil, "-redis", "redis://"+user+":wrong@"+addr)
		for range 2 {
			if got := do(t, "GET", p, "/pw"); got.status != http.StatusOK {
				t.Errorf("GET with Redis refusing the password = %d, want 200 (uncached)", got.status)
			}
		}
		if n := up.pathCount("/pw"); n != 2 {
			t.Errorf("upstream called %d times, want 2 (nothing cached)", n)
		}
		if !strings.Contains(logs.String(), "does not answer") || strings.Contains(logs.String(), ":wrong@") {
			t.Errorf("start-up log does not report the refused login, or shows the password:\n%s", logs.String())
		}
	})
}

// TestRedisClusterFlag fills once through two proxies on one Redis Cluster.
func TestRedisClusterFlag(t *testing.T) {
	addrs := os.Getenv("FLIGHTCACHE_REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		if testing.Short() {
			t.Skip("FLIGHTCACHE_REDIS_CLUSTER_ADDRS not set; skipped in -short mode")
		}
		t.Fatal("FLIGHTCACHE_REDIS_CLUSTER_ADDRS is not set: run ./scripts/test.sh, which starts a Redis Cluster, or use go test -short")
	}
	up, _ := versioned(t)
	ns := fmt.Sprintf("proxycl-%d-%d", os.Getpid(), time.Now().UnixNano())
	p1 := startProxy(t, up, nil, "-redis-cluster", addrs, "-namespace", ns)
	p2 := startProxy(t, up, nil, "-redis-cluster", addrs, "-namespace", ns)
	for _, target := range []string{"/c1", "/c2", "/c3"} {
		wantBody(t, "fill", do(t, "GET", p1, target), target+" v1")
		got := do(t, "GET", p2, target)
		wantBody(t, "other proxy", got, target+" v1")
		if got.header.Get("X-Cache") != "HIT" || up.pathCount(target) != 1 {
			t.Errorf("%s through the second proxy: X-Cache %q, %d upstream calls; want HIT, 1", target, got.header.Get("X-Cache"), up.pathCount(target))
		}
	}
}

// TestLocalTierFlag serves the second request from the local tier.
func TestLocalTierFlag(t *testing.T) {
	up, _ := versioned(t)
	p := startProxy(t, up, nil, "-redis", repotest.RedisAddr(t), "-namespace", fmt.Sprintf("proxyl1-%d-%d", os.Getpid(), time.Now().UnixNano()), "-local-tier", "1MiB")
	do(t, "GET", p, "/l1")
	do(t, "GET", p, "/l1")
	got := do(t, "GET", p, "/l1")
	if cs := got.header.Get("Cache-Status"); !strings.Contains(cs, "detail=l1") {
		t.Errorf("third GET: Cache-Status %q, want a local-tier hit (detail=l1)", cs)
	}
	if n := up.pathCount("/l1"); n != 1 {
		t.Errorf("upstream called %d times, want 1", n)
	}
}

func hasRedis() bool { return os.Getenv("FLIGHTCACHE_REDIS_ADDR") != "" || !testing.Short() }

// TestMaxBodyFlag stores bodies up to -max-body and passes larger ones
// through, sized or chunked, whole and uncached.
func TestMaxBodyFlag(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		n := 1000
		if strings.HasPrefix(r.URL.Path, "/big") {
			n = 3000
		}
		w.Header().Set("Cache-Control", "public, max-age=60")
		if !strings.HasSuffix(r.URL.Path, "-chunked") {
			w.Header().Set("Content-Length", fmt.Sprint(n))
		}
		w.Write(bytes.Repeat([]byte("x"), n))
	})
	p := startProxy(t, up, nil, "-max-body", "2KiB")
	for _, tc := range []struct {
		path  string
		size  int
		calls int
	}{
		{"/small", 1000, 1}, {"/small-chunked", 1000, 1},
		{"/big", 3000, 2}, {"/big-chunked", 3000, 2},
	} {
		for range 2 {
			if got := do(t, "GET", p, tc.path); got.status != http.StatusOK || len(got.body) != tc.size {
				t.Errorf("GET %s = %d with %d bytes, want 200 with %d", tc.path, got.status, len(got.body), tc.size)
			}
		}
		if n := up.pathCount(tc.path); n != tc.calls {
			t.Errorf("GET %s twice: %d upstream calls, want %d", tc.path, n, tc.calls)
		}
	}
}

// TestUpstreamTimeouts answers 504 when the upstream is too slow to send
// its header (-upstream-header-timeout) or to finish (-upstream-timeout),
// stores nothing, and asks the upstream again on the next request.
func TestUpstreamTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"header", []string{"-upstream-header-timeout", "300ms", "-upstream-timeout", "20s"}},
		{"overall", []string{"-upstream-header-timeout", "300ms", "-upstream-timeout", "300ms"}},
		{"overall with a late body", []string{"-upstream-header-timeout", "10s", "-upstream-timeout", "300ms"}},
		{"header with -cache-errors", []string{"-upstream-header-timeout", "300ms", "-upstream-timeout", "20s", "-cache-errors"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "public, max-age=60")
				if calls.Add(1) == 1 { // the first call is too slow
					if tc.name == "overall with a late body" {
						w.Header().Set("Content-Length", "2")
						w.WriteHeader(http.StatusOK)
						w.(http.Flusher).Flush()
					}
					select {
					case <-release:
					case <-r.Context().Done():
					}
					return
				}
				w.Write([]byte("ok"))
			})
			p := startProxy(t, up, nil, tc.args...)
			got := do2(p, "/slow")
			if tc.name == "overall with a late body" {
				// The header went out: the client sees a cut body.
				if got.err == nil && got.body == "ok" {
					t.Errorf("first GET = %d %q, want a cut response", got.status, got.body)
				}
			} else if got.status != http.StatusGatewayTimeout || got.header.Get("Cache-Control") != "no-store" {
				t.Errorf("first GET = %d (Cache-Control %q), want 504 no-store", got.status, got.header.Get("Cache-Control"))
			}
			wantBody(t, "second GET", do(t, "GET", p, "/slow"), "ok")
			if n := calls.Load(); n != 2 {
				t.Errorf("upstream called %d times, want 2 (the timeout is not stored)", n)
			}
		})
	}
}

// outcome is what a client got, or the error that cut its response.
type outcome struct {
	result
	err error
}

// do2 is do for a response that may be cut short: one GET on a new
// connection, never retried (net/http's client may retry a GET whose
// connection closed without a response).
func do2(addr, target string) outcome {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return outcome{err: err}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "GET "+target+" HTTP/1.1\r\nHost: proxy.test\r\n\r\n"); err != nil {
		return outcome{err: err}
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return outcome{result{resp.StatusCode, resp.Header, string(body)}, err}
}
