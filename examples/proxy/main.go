// Command proxy is a caching reverse proxy: an [httputil.ReverseProxy] to
// one upstream behind flightcache, as a shared HTTP cache that honours the
// upstream's Cache-Control. Several instances sharing one Redis (and
// namespace) fill each URL once between them:
//
//	go run ./examples/proxy -upstream http://127.0.0.1:8000 -redis 127.0.0.1:6379
//
// scripts/conformance.sh runs the http-cache-tests suite through it.
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

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/examples/internal/app"
	"github.com/flightcache/flightcache/nethttpmw"
)

// understoodStatuses are the final status codes net/http knows, but 206
// and 304, which core cannot combine with a stored response. RFC 9111
// (section 3) lets a shared cache store any of them when the upstream
// states its freshness; a code it does not understand stays unstored.
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
	listen := flag.String("listen", "127.0.0.1:8090", "address to serve on")
	upstreamURL := flag.String("upstream", "", "URL of the origin server (required)")
	redisAddr := flag.String("redis", "", "Redis host:port or URL (default $REDIS_URL; none: in-process store)")
	namespace := flag.String("namespace", "flightcache-proxy", "cache key namespace in Redis")
	flag.Parse()
	upstream, err := url.Parse(*upstreamURL)
	if err != nil || upstream.Scheme == "" || upstream.Host == "" {
		fmt.Fprintln(os.Stderr, "proxy: -upstream must be an absolute URL such as http://127.0.0.1:8000")
		os.Exit(2)
	}

	c, closeStore := app.NewCache("proxy", *redisAddr, core.WithNamespace(*namespace))
	defer closeStore()

	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream) // also sends the upstream's host, not the client's
			pr.SetXForwarded()
			// Tell the upstream this is a gateway cache that reads
			// Surrogate-Control (Edge Architecture 1.0).
			pr.Out.Header.Set("Surrogate-Capability", `flightcache="Surrogate/1.0"`)
		},
		ModifyResponse: bufferUnsized,
		ErrorLog:       log.Default(),
	}
	// The key is the upstream and the request target, not the Host the
	// client used, so that instances on different addresses share entries.
	// The query stays as sent: a generic upstream may care about its order.
	target := upstream.String()
	// A response that states no freshness is not stored: a proxy must not
	// invent one for someone else's upstream. Responses that Vary on a
	// request header stay unstored too (no KeyHeaders): invalidation by a
	// POST would reach only the variant keyed by that POST's own headers.
	handler := nethttpmw.Middleware(c,
		core.ExplicitFreshnessOnly(),
		core.Statuses(understoodStatuses()...),
		core.KeyFunc(func(r *http.Request) string {
			return target + " " + r.URL.RequestURI()
		}),
	)(rp)

	app.Serve("proxy", *listen, " (forwarding to "+upstream.String()+")", handler)
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
