package core_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flightcache/flightcache/core"
)

// BenchmarkHTTPHit measures a hit served through Middleware.Serve from the
// memory store: a plain response, one that varies on Accept-Language, and
// a compressed one (which a request must accept), so that the replay path's
// allocations can be compared before and after a change.
func BenchmarkHTTPHit(b *testing.B) {
	for _, tc := range []struct {
		name   string
		header http.Header // the stored response's
		req    http.Header // the request's
	}{
		{"plain", http.Header{}, http.Header{}},
		{"vary", http.Header{"Vary": {"Accept-Language"}}, http.Header{"Accept-Language": {"de"}}},
		{"gzip", http.Header{"Vary": {"Accept-Encoding"}, "Content-Encoding": {"gzip"}}, http.Header{"Accept-Encoding": {"gzip, br"}}},
	} {
		b.Run("response="+tc.name, func(b *testing.B) {
			s := core.NewMemoryStore(0)
			b.Cleanup(func() { s.Close() })
			m := core.New(s).Middleware()
			next := func(w http.ResponseWriter, r *http.Request) error {
				for k, v := range tc.header {
					w.Header()[k] = v
				}
				fmt.Fprint(w, "a body of some bytes")
				return nil
			}
			r := httptest.NewRequest("GET", "/hit", nil)
			r.Header = tc.req
			m.Serve(httptest.NewRecorder(), r, "", next) // fill
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				m.Serve(w, r, "", next)
			}
			if w.code != http.StatusOK || w.h.Get("X-Cache") != "HIT" {
				b.Fatalf("last response %d X-Cache %q, want a 200 HIT", w.code, w.h.Get("X-Cache"))
			}
		})
	}
}

// discardWriter is a ResponseWriter that keeps the status and header only.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
