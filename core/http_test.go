package core_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/cachetest"
)

// TestHTTPSuite runs the adapter suite through a bare net/http driver, so
// that core's own tests cover its HTTP layer the way the adapters use it,
// on the memory store and on a real redis-server.
func TestHTTPSuite(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		cachetest.TestHTTP(t, cachetest.Driver{New: newMuxServer, Pattern: muxPattern})
	})
	t.Run("redis", func(t *testing.T) {
		addr := realRedisAddr(t)
		cachetest.TestHTTP(t, cachetest.Driver{
			New:     newMuxServer,
			Pattern: muxPattern,
			Store: func(t *testing.T) core.Store {
				s := core.NewRedisStore(newClient(t, addr))
				t.Cleanup(func() { s.Close() })
				return s
			},
		})
	})
}

// muxPattern turns a suite path ("/items/:id") into a ServeMux pattern
// ("GET /items/{id}").
func muxPattern(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if name, ok := strings.CutPrefix(s, ":"); ok {
			segs[i] = "{" + name + "}"
		}
	}
	return "GET " + strings.Join(segs, "/")
}

// newMuxServer is the suite's server on an http.ServeMux, with the cache
// called the way an adapter calls it: Middleware once per middleware, then
// Serve per request with the route pattern the mux matched.
func newMuxServer(c *core.Cache, s cachetest.Server) http.Handler {
	mux := http.NewServeMux()
	for _, e := range s.Endpoints {
		var h http.Handler = e.Handler
		if e.Cache != nil {
			h = serveCached(c.Middleware(e.Cache...), h, nil)
		}
		mux.Handle(muxPattern(e.Path), h)
		mux.Handle("POST"+strings.TrimPrefix(muxPattern(e.Path), "GET"), h)
	}
	if s.Global == nil {
		return mux
	}
	return serveCached(c.Middleware(s.Global...), mux, mux)
}

// serveCached caches next's responses through m. Wrapping a whole mux, it
// asks the mux which pattern the request will match, since r.Pattern is
// set only once the mux has routed it.
func serveCached(m *core.Middleware, next http.Handler, mux *http.ServeMux) http.Handler {
	serve := func(w http.ResponseWriter, r *http.Request) error {
		next.ServeHTTP(w, r)
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pattern := r.Pattern
		if pattern == "" && mux != nil {
			_, pattern = mux.Handler(r)
		}
		m.Serve(w, r, pattern, serve)
	})
}
