// Command proxy is a caching reverse proxy: an [httputil.ReverseProxy] to
// one upstream behind flightcache, as a shared HTTP cache that honours the
// upstream's Cache-Control. Several instances sharing one Redis (and
// namespace) fill each URL once between them:
//
//	go run ./examples/proxy -upstream http://127.0.0.1:8000 -redis 127.0.0.1:6379
//
// With a purge token (-purge-token, or FLIGHTCACHE_PURGE_TOKEN) it also
// answers PURGE requests; see purge.go. scripts/conformance.sh runs the
// http-cache-tests suite through it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"

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

// config is what the command line decides.
type config struct {
	upstream *url.URL
	// publicHost is sent to the upstream as X-Forwarded-Host; "" sends
	// none. Never the client's Host: see newHandler.
	publicHost string
	// purgeToken enables the purge endpoint; "" disables it.
	purgeToken string
	// cacheErrors lets error responses with explicit freshness be
	// stored, as RFC 9111 allows and as this proxy did before.
	cacheErrors bool
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to serve on")
	upstreamURL := flag.String("upstream", "", "URL of the origin server (required)")
	redisAddr := flag.String("redis", "", "Redis host:port or URL (default $REDIS_URL; none: in-process store)")
	namespace := flag.String("namespace", "flightcache-proxy", "cache key namespace in Redis")
	publicHost := flag.String("public-host", "", "host[:port] to send upstream as X-Forwarded-Host (default: send none; never the client's Host)")
	purgeToken := flag.String("purge-token", "", "bearer token that enables PURGE (default $FLIGHTCACHE_PURGE_TOKEN; none: purging is disabled)")
	cacheErrors := flag.Bool("cache-errors", false, "store error responses (4xx but 404 and 410, and 5xx) that state their freshness")
	earlyRefresh := flag.Float64("early-refresh", 0, "refresh hot entries in the background before they expire, within this many times their measured fetch time plus 100 ms (core.EarlyRefresh; 0: off, 2 is a good start)")
	ttlJitter := flag.Float64("ttl-jitter", 0, "shorten each stored response's lifetime by a random part of up to this fraction, below 1 (core.TTLJitter; 0: none)")
	flag.Parse()
	if *earlyRefresh < 0 || *ttlJitter < 0 || *ttlJitter >= 1 {
		fmt.Fprintln(os.Stderr, "proxy: -early-refresh must be at least 0, -ttl-jitter at least 0 and below 1")
		os.Exit(2)
	}
	upstream, err := url.Parse(*upstreamURL)
	if err != nil || upstream.Scheme == "" || upstream.Host == "" {
		fmt.Fprintln(os.Stderr, "proxy: -upstream must be an absolute URL such as http://127.0.0.1:8000")
		os.Exit(2)
	}
	token := *purgeToken
	if token == "" {
		token = os.Getenv("FLIGHTCACHE_PURGE_TOKEN")
	}
	if strings.ContainsAny(token, " \t\r\n") {
		fmt.Fprintln(os.Stderr, "proxy: the purge token must not contain white space")
		os.Exit(2)
	}
	if strings.ContainsAny(*publicHost, "/ \t\r\n") {
		fmt.Fprintln(os.Stderr, "proxy: -public-host must be a host name with an optional port, such as www.example.com")
		os.Exit(2)
	}

	opts := []core.Option{core.WithNamespace(*namespace), core.TTLJitter(*ttlJitter)}
	if *earlyRefresh > 0 {
		opts = append(opts, core.EarlyRefresh(*earlyRefresh))
	}
	c, closeStore := app.NewCache("proxy", *redisAddr, opts...)
	defer closeStore()
	if token != "" {
		fmt.Fprintf(os.Stderr, "proxy: PURGE enabled (bearer token)\n")
	}
	cfg := config{upstream: upstream, publicHost: *publicHost, purgeToken: token, cacheErrors: *cacheErrors}
	app.Serve("proxy", *listen, " (forwarding to "+upstream.String()+")", newHandler(c, cfg))
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
		ModifyResponse: bufferUnsized,
		ErrorLog:       log.Default(),
	}
	var origin http.Handler = rp
	if !cfg.cacheErrors {
		origin = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rp.ServeHTTP(&errorGuard{ResponseWriter: w}, r)
		})
	}
	// The key is the upstream and the request target, not the Host the
	// client used, so that instances on different addresses share entries.
	// The query stays as sent: a generic upstream may care about its order.
	target := upstream.String()
	keyFor := func(r *http.Request) string { return target + " " + r.URL.RequestURI() }
	// A response that states no freshness is not stored: a proxy must not
	// invent one for someone else's upstream.
	cached := nethttpmw.Middleware(c,
		core.ExplicitFreshnessOnly(),
		core.Statuses(understoodStatuses()...),
		core.KeyFunc(keyFor),
	)(origin)
	return &purger{c: c, token: cfg.purgeToken, keyFor: keyFor, next: stripHopByHop(cached)}
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
// into memory when it fits the cache's body limit: ReverseProxy flushes
// such a response after every write, and core stores no response that
// flushes. Event streams and larger bodies still stream.
func bufferUnsized(res *http.Response) error {
	ct, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if res.ContentLength >= 0 || ct == "text/event-stream" || res.Request.Method != http.MethodGet {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, core.DefaultMaxBodySize+1))
	if err != nil {
		return err
	}
	if len(body) > core.DefaultMaxBodySize {
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
