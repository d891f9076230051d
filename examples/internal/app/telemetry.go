package app

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/flightcache/flightcache/flightotel"
)

// telemetry is the examples' OpenTelemetry setup, made once.
var telemetry = sync.OnceValue(func() *telemetrySetup {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		log.Fatal(err)
	}
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter)))
	otel.SetTextMapPropagator(propagation.TraceContext{})
	s := &telemetrySetup{metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), shutdown: func() {}}
	// Traces go where OTEL_TRACES_EXPORTER says: "otlp" (OTLP over HTTP,
	// configured by the OTEL_EXPORTER_OTLP_* variables), "console"
	// (stdout), or nowhere (the default).
	var spans sdktrace.SpanExporter
	switch v := os.Getenv("OTEL_TRACES_EXPORTER"); v {
	case "otlp":
		spans, err = otlptracehttp.New(context.Background())
	case "console":
		spans, err = stdouttrace.New(stdouttrace.WithPrettyPrint())
	case "", "none":
	default:
		err = fmt.Errorf("OTEL_TRACES_EXPORTER=%q: want otlp, console or none", v)
	}
	if err != nil {
		log.Fatal(err)
	}
	if spans != nil {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans))
		otel.SetTracerProvider(tp)
		s.shutdown = func() { tp.Shutdown(context.Background()) }
	}
	s.tel = flightotel.New() // on the global providers set above
	return s
})

type telemetrySetup struct {
	tel      *flightotel.Telemetry
	metrics  http.Handler
	shutdown func()
}

// Instrument serves the Prometheus metrics at /metrics and everything
// else through h, inside an OpenTelemetry server span (otelhttp), in which
// the cache records how it served each request.
func Instrument(who string, h http.Handler) http.Handler {
	s := telemetry()
	traced := otelhttp.NewHandler(h, who)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			s.metrics.ServeHTTP(w, r)
			return
		}
		traced.ServeHTTP(w, r)
	})
}
