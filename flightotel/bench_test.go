package flightotel_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/flightotel"
	"github.com/flightcache/flightcache/nethttpmw"
)

// BenchmarkHit measures a cache hit through nethttpmw on the memory store
// without the module (path=none: no Events) and with it (path=flightotel:
// the SDK's meter provider and a recording server span in the request's
// context, which the hit adds its attributes to), in the same run:
//
//	go test -run '^$' -bench BenchmarkHit -count 5 ./flightotel | benchstat -col /path -
func BenchmarkHit(b *testing.B) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("bench").Start(context.Background(), "server")
	defer span.End()
	for _, v := range []struct {
		name string
		opts []core.Option
	}{
		{"none", nil},
		{"flightotel", []core.Option{core.WithEvents(flightotel.New(
			flightotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))),
			flightotel.WithTracerProvider(tp)).Events())}},
	} {
		b.Run("path="+v.name, func(b *testing.B) {
			c := core.New(core.NewMemoryStore(0), v.opts...)
			mux := http.NewServeMux()
			mux.Handle("GET /item/{id}", nethttpmw.Middleware(c)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, `{"id":1,"name":"a small JSON document"}`)
			})))
			r := httptest.NewRequest(http.MethodGet, "/item/1", nil).WithContext(ctx)
			mux.ServeHTTP(httptest.NewRecorder(), r) // fill
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				mux.ServeHTTP(w, r)
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
