package flightotel_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/flightotel"
	"github.com/flightcache/flightcache/nethttpmw"
)

// Example wires the module into a cache and reads back the responses
// metric after a miss and a hit. A real program gives New a meter provider
// with the Prometheus or OTLP exporter (or sets the global one), and puts
// otelhttp, otelgin or otelecho in front of the cache for the server span.
func Example() {
	reader := sdkmetric.NewManualReader()
	tel := flightotel.New(flightotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	store := core.NewMemoryStore(0)
	defer store.Close()
	c := core.New(store, core.WithEvents(tel.Events()))
	tel.Observe(c)

	mux := http.NewServeMux()
	mux.Handle("GET /p/{id}", nethttpmw.Middleware(c)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "product "+r.PathValue("id"))
	})))
	for range 2 {
		mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/p/1", nil))
	}

	var rm metricdata.ResourceMetrics
	reader.Collect(context.Background(), &rm)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != flightotel.MetricResponses {
				continue
			}
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				status, _ := p.Attributes.Value(flightotel.AttrCacheStatus)
				route, _ := p.Attributes.Value(flightotel.AttrRoute)
				fmt.Println(route.AsString(), status.AsString(), p.Value)
			}
		}
	}
	// Unordered output:
	// GET /p/{id} miss 1
	// GET /p/{id} hit 1
}
