package nethttpmw_test

import (
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/cachetest"
	"github.com/flightcache/flightcache/nethttpmw"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pattern turns a suite path ("/items/:id") into a ServeMux pattern
// ("GET /items/{id}").
func pattern(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if name, ok := strings.CutPrefix(s, ":"); ok {
			segs[i] = "{" + name + "}"
		}
	}
	return "GET " + strings.Join(segs, "/")
}

func newServer(c *core.Cache, s cachetest.Server) http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.Endpoints {
		var h http.Handler = r.Handler
		if r.Cache != nil {
			h = nethttpmw.Wrap(h, c, r.Cache...)
		}
		mux.Handle(pattern(r.Path), h)
		mux.Handle("POST"+strings.TrimPrefix(pattern(r.Path), "GET"), h)
	}
	if s.Global == nil {
		return mux
	}
	return nethttpmw.Middleware(c, s.Global...)(mux)
}

func TestHTTPSuite(t *testing.T) {
	cachetest.TestHTTP(t, cachetest.Driver{New: newServer, Pattern: pattern})
}
