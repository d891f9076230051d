package core_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
)

// TestVaryVariantsFleetWide runs a herd of requests with mixed
// Accept-Language values through several caches ("processes") on one
// store, against a slow handler whose response varies on the header:
// each language must reach the origin once, and every client must get
// its own language's bytes.
func TestVaryVariantsFleetWide(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		var log errorLog
		cs := caches(t, 3, newStore, namespace(t), core.WithObserver(log.observe))
		routes := make([]*core.Middleware, len(cs))
		for i, c := range cs {
			routes[i] = c.Middleware()
		}
		var calls sync.Map // language → *atomic.Int64
		handler := func(w http.ResponseWriter, r *http.Request) error {
			lang := r.Header.Get("Accept-Language")
			n, _ := calls.LoadOrStore(lang, new(atomic.Int64))
			call := n.(*atomic.Int64).Add(1)
			time.Sleep(50 * time.Millisecond)
			w.Header().Set("Vary", "Accept-Language")
			fmt.Fprintf(w, "lang=%s call=%d", lang, call)
			return nil
		}
		langs := []string{"en", "de", "fr", "ja"}
		const clients = 120
		bodies := make([]string, clients)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				<-start
				r := httptest.NewRequest("GET", "http://example.com/page", nil).WithContext(context.Background())
				r.Header.Set("Accept-Language", langs[i%len(langs)])
				w := httptest.NewRecorder()
				if err := routes[i%len(routes)].Serve(w, r, "", handler); err != nil {
					t.Errorf("Serve: %v", err)
				}
				bodies[i] = w.Body.String()
			})
		}
		close(start)
		wg.Wait()
		for i, b := range bodies {
			if want := fmt.Sprintf("lang=%s call=1", langs[i%len(langs)]); b != want {
				t.Errorf("client %d got %q, want %q", i, b, want)
			}
		}
		for _, lang := range langs {
			if n, ok := calls.Load(lang); !ok || n.(*atomic.Int64).Load() != 1 {
				t.Errorf("origin calls for %s: %v, want 1", lang, n)
			}
		}
		if ops := log.ops(); len(ops) > 0 {
			t.Errorf("store errors: %v", ops)
		}
	})
}
