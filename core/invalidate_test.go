package core_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core"
)

// stallingInvalidations is a store whose Invalidate hangs until its
// context ends, as a Redis that stopped answering does.
type stallingInvalidations struct{ *core.MemoryStore }

func (s stallingInvalidations) Invalidate(ctx context.Context, key string, marker []byte, ttl time.Duration) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestFailedInvalidationIsReported checks that an unsafe request whose
// invalidation times out is reported to the Observer: the timeout is the
// store's, not the client's, so it must not be dropped as "caller gone".
func TestFailedInvalidationIsReported(t *testing.T) {
	var mu sync.Mutex
	var got []*core.Error
	store := core.NewMemoryStore(0)
	t.Cleanup(func() { store.Close() })
	c := core.New(stallingInvalidations{store},
		core.WithStoreTimeout(20*time.Millisecond),
		core.WithObserver(func(err error) {
			var ce *core.Error
			if errors.As(err, &ce) {
				mu.Lock()
				got = append(got, ce)
				mu.Unlock()
			}
		}))
	req := httptest.NewRequest(http.MethodPost, "http://example.com/items/1", nil)
	err := c.Middleware().Serve(httptest.NewRecorder(), req, "", func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	if err != nil {
		t.Fatalf("Serve(POST) = %v, want nil: a failed invalidation is the cache's to absorb", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Op != core.OpInvalidate || !errors.Is(got[0], context.DeadlineExceeded) {
		t.Errorf("observer got %v, want one %q error wrapping context.DeadlineExceeded", got, core.OpInvalidate)
	}
	if n := c.Stats().Errors.Load(); n != 1 {
		t.Errorf("Stats().Errors = %d, want 1", n)
	}
}
