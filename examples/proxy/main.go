// Command proxy is a caching reverse proxy: an [httputil.ReverseProxy] to
// one upstream behind flightcache, as a shared HTTP cache that honours the
// upstream's Cache-Control. Several instances sharing one Redis (and
// namespace) fill each URL once between them:
//
//	go run ./examples/proxy -upstream http://127.0.0.1:8000 -redis 127.0.0.1:6379
//
// config.go reads the flags a deployment needs (Redis by URL, with a
// password and TLS, or a Redis Cluster; the namespace; a local tier; the
// body limit; the upstream timeouts), each also from an environment
// variable; proxy -h lists them. With a purge token (-purge-token, or FLIGHTCACHE_PURGE_TOKEN) it also
// answers PURGE requests; see purge.go. scripts/conformance.sh runs the
// http-cache-tests suite through it.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strings"
	"time"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/examples/internal/app"
	"github.com/flightcache/flightcache/nethttpmw"
)

// understoodStatuses are the final status codes net/http knows, but 206
// and 304, which core cannot combine with a stored response. RFC 9111
// (section 3) lets a shared cache store any of them when the upstream
// states its freshness; a code it does not understand stays unstored.
// Unless -cache-errors is given, the error statuses that [unshared]
// names are kept out of the store on top of this list.
func understoodStatuses() []int {
	var codes []int
	for code := 200; code < 600; code++ {
		if http.StatusText(code) != "" && code != http.StatusPartialContent && code != http.StatusNotModified {
			codes = append(codes, code)
		}
	}
	return codes
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintf(os.Stderr, "proxy: %v\n(proxy -h lists every flag)\n", err)
		os.Exit(2)
	}
	store, closeStore := openStore(cfg)
	defer closeStore()
	c := app.NewCacheOn("proxy", store, cfg.redis.describe(), cacheOptions(cfg)...)
	if cfg.purgeToken != "" {
		fmt.Fprintf(os.Stderr, "proxy: PURGE enabled (bearer token)\n")
	}
	app.Serve("proxy", cfg.listen, " (forwarding to "+cfg.upstream.String()+")", newHandler(c, cfg))
}

// openStore returns the store cfg names and a function closing it. An
// unreachable Redis is reported, not fatal: the cache serves uncached
// until it answers, as it does when Redis fails later.
func openStore(cfg config) (core.Store, func()) {
	rdb := cfg.redis.client()
	if rdb == nil {
		s := core.NewMemoryStore(0)
		return s, func() { s.Close() }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		fmt.Fprintf(os.Stderr, "proxy: warning: %s does not answer (%v); serving uncached until it does\n", cfg.redis.describe(), err)
	}
	s := core.NewRedisStore(rdb)
	return s, func() { s.Close(); rdb.Close() }
}

// cacheOptions are the cache-wide settings cfg asks for.
func cacheOptions(cfg config) []core.Option {
	opts := []core.Option{
		core.WithNamespace(cfg.namespace),
		// A fill lasts as long as the upstream exchange may.
		core.WithFetchTimeout(cfg.timeout),
	}
	if cfg.localTier > 0 {
		opts = append(opts, core.WithLocalTier(cfg.localTier))
	}
	if cfg.earlyRefresh > 0 {
		opts = append(opts, core.EarlyRefresh(cfg.earlyRefresh))
	}
	if cfg.ttlJitter > 0 {
		opts = append(opts, core.TTLJitter(cfg.ttlJitter))
	}
	return opts
}

// newHandler returns the proxy: purge requests are answered here, every
// other request has its hop-by-hop headers removed and goes through the
// cache to the upstream.
func newHandler(c *core.Cache, cfg config) http.Handler {
	upstream, publicHost := cfg.upstream, cfg.publicHost
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream) // also sends the upstream's host, not the client's
			pr.SetXForwarded()
			// The key leaves out the Host the client sent (see keyFor),
			// so the upstream must not see it either: a page built from
			// X-Forwarded-Host: evil.example would be stored for everyone
			// (issue 12). That covers Host: name:port and absolute-form
			// targets too, whose host net/http puts in r.Host. Rewrite
			// has already removed the client's own Forwarded and
			// X-Forwarded-* headers.
			if publicHost != "" {
				pr.Out.Header.Set("X-Forwarded-Host", publicHost)
			} else {
				pr.Out.Header.Del("X-Forwarded-Host")
			}
			// Tell the upstream this is a gateway cache that reads
			// Surrogate-Control (Edge Architecture 1.0).
			pr.Out.Header.Set("Surrogate-Capability", `flightcache="Surrogate/1.0"`)
		},
		Transport:      upstreamTransport(cfg),
		ModifyResponse: func(res *http.Response) error { return bufferUnsized(res, cfg.maxBody) },
		ErrorHandler:   upstreamError,
	}
	timeout := cfg.timeout
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// On a fill, core's fetch timeout (the same) bounds the context
		// already; this bounds the requests the cache passes through.
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		if !cfg.cacheErrors {
			w = &errorGuard{ResponseWriter: w}
		}
		rp.ServeHTTP(w, r.WithContext(ctx))
	})
	// The key is the upstream and the request target, not the Host the
	// client used, so that instances on different addresses share entries.
	// The query stays as sent: a generic upstream may care about its order.
	target := upstream.String()
	keyFor := func(r *http.Request) string { return target + " " + r.URL.RequestURI() }
	// A response that states no freshness is not stored: a proxy must not
	// invent one for someone else's upstream.
	cached := nethttpmw.Middleware(c,
		core.ExplicitFreshnessOnly(),
		core.MaxBodySize(int(cfg.maxBody)),
		core.Statuses(understoodStatuses()...),
		core.KeyFunc(keyFor),
	)(origin)
	return &purger{c: c, token: cfg.purgeToken, keyFor: keyFor, next: stripHopByHop(cached)}
}

// upstreamTransport is http.DefaultTransport's configuration with cfg's
// timeouts, and enough idle connections kept to the one upstream for a
// proxy's concurrency (the default keeps 2).
func upstreamTransport(cfg config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: cfg.dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = cfg.dialTimeout
	t.ResponseHeaderTimeout = cfg.headerTimeout
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 256
	return t
}

// upstreamError answers a request the upstream did not: 504 when it timed
// out (connecting, waiting for the header, or the whole exchange), 502
// otherwise. The answer is marked no-store: it says nothing about the
// resource, and under the default settings errorGuard keeps it out of the
// store anyway.
func upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		status = http.StatusGatewayTimeout
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client left: nobody reads the answer
	}
	log.Printf("proxy: upstream %s %s: %v", r.Method, r.URL.RequestURI(), err)
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, http.StatusText(status), status)
}

// unshared reports whether a response with this status is kept out of the
// store whatever its Cache-Control says (unless -cache-errors is given):
// every 4xx but 404 and 410, and every 5xx. A client can provoke most of
// them for a URL that is fine for everyone else: 400 or 431 with an
// oversized or malformed header, 413 or 415 with a body, 405 or 501 with a
// method, 406, 412, 416 and 417 with Accept, preconditions, Range and
// Expect, 401 and 403 with credentials, 429 by sending many requests; a
// 5xx is a passing failure of the upstream. Stored with explicit
// freshness, as RFC 9111 allows, one such response would be served to
// every client until it expires (cache-poisoned denial of service). 404
// and 410 say the resource is missing whoever asks, so they are stored.
func unshared(status int) bool {
	return status >= 400 && status != http.StatusNotFound && status != http.StatusGone
}

// errorGuard marks the response being written with [core.DoNotStore] when
// its status is [unshared]: it goes to the client that caused it alone, and
// requests waiting on the same fill ask the upstream themselves. Core's
// Statuses cannot express this, as it stores 405, 414 and 501 with explicit
// freshness whatever the list says.
type errorGuard struct {
	http.ResponseWriter
	wrote bool
}

func (g *errorGuard) WriteHeader(code int) {
	if !g.wrote && code >= 200 {
		g.wrote = true
		if unshared(code) {
			core.DoNotStore(g.ResponseWriter)
		}
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *errorGuard) Write(b []byte) (int, error) {
	g.wrote = true // an implicit 200
	return g.ResponseWriter.Write(b)
}

// Unwrap lets [http.ResponseController] (ReverseProxy's flushes and
// upgrades) reach the writer underneath.
func (g *errorGuard) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// hopByHopHeaders are removed from every request before the cache sees it,
// as ReverseProxy removes them before the upstream does, besides the ones
// the request's Connection header names. Te and Upgrade are handled apart:
// see stripHopByHop.
var hopByHopHeaders = []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Trailer"}

// stripHopByHop removes from each request the headers that ReverseProxy
// would not forward, so that the cache keys and picks variants on the
// request the upstream actually gets (issue 14). Otherwise Accept-Language:
// fr with Connection: Accept-Language fills the French variant with the
// upstream's default-language answer. RFC 9110 (section 7.6.1) makes every
// field named in Connection hop-by-hop. Upgrade stays, for ReverseProxy to
// switch protocols with (the cache bypasses requests that carry it); Te is
// reduced to what ReverseProxy passes on, "trailers" or nothing.
func stripHopByHop(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header
		strip := len(h["Te"]) > 0
		for _, name := range hopByHopHeaders {
			strip = strip || len(h[name]) > 0
		}
		conn := h.Values("Connection")
		if !strip && len(conn) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		r = r.Clone(r.Context())
		h = r.Header
		for _, v := range conn {
			for name := range strings.SplitSeq(v, ",") {
				name = http.CanonicalHeaderKey(strings.TrimSpace(name))
				if name != "" && name != "Connection" && name != "Upgrade" {
					delete(h, name)
				}
			}
		}
		for _, name := range hopByHopHeaders {
			delete(h, name)
		}
		if te := h["Te"]; len(te) > 0 {
			delete(h, "Te")
			for _, v := range te {
				if hasToken(v, "trailers") {
					h.Set("Te", "trailers")
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// hasToken reports whether the comma-separated list v holds token, ignoring
// case and parameters.
func hasToken(v, token string) bool {
	for elem := range strings.SplitSeq(v, ",") {
		elem, _, _ = strings.Cut(elem, ";")
		if strings.EqualFold(strings.TrimSpace(elem), token) {
			return true
		}
	}
	return false
}

// bufferUnsized reads a GET response of unknown length (chunked, say)
// into memory when it fits limit, the cache's body limit (-max-body):
// ReverseProxy flushes such a response after every write, and core stores
// no response that flushes. Event streams and larger bodies still stream.
func bufferUnsized(res *http.Response, limit int64) error {
	ct, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if res.ContentLength >= 0 || ct == "text/event-stream" || res.Request.Method != http.MethodGet {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return err
	}
	if int64(len(body)) > limit {
		res.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), res.Body), res.Body}
		return nil
	}
	res.Body.Close()
	res.Body, res.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	return nil
}
