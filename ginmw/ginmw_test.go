package ginmw_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/goleak"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/cachetest"
	"github.com/flightcache/flightcache/ginmw"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	goleak.VerifyTestMain(m)
}

func newServer(c *core.Cache, s cachetest.Server) http.Handler {
	r := gin.New()
	if s.Global != nil {
		r.Use(ginmw.Cache(c, s.Global...))
	}
	for _, rt := range s.Endpoints {
		handlers := []gin.HandlerFunc{gin.WrapF(rt.Handler)}
		if rt.Cache != nil {
			handlers = append([]gin.HandlerFunc{ginmw.Cache(c, rt.Cache...)}, handlers...)
		}
		// gin does not answer HEAD from a GET route.
		r.GET(rt.Path, handlers...)
		r.HEAD(rt.Path, handlers...)
		r.POST(rt.Path, handlers...)
	}
	return r
}

func TestHTTPSuite(t *testing.T) {
	cachetest.TestHTTP(t, cachetest.Driver{New: newServer, Pattern: func(path string) string { return path }})
}

func newCache(t *testing.T, opts ...core.Option) *core.Cache {
	t.Helper()
	s := core.NewMemoryStore(0)
	t.Cleanup(func() { s.Close() })
	return core.New(s, opts...)
}

type response struct {
	status int
	header http.Header
	body   string
}

func get(h http.Handler, target string) response {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
	return response{w.Code, w.Result().Header, w.Body.String()}
}

func TestHitSkipsLaterHandlers(t *testing.T) {
	var after, handler atomic.Int64
	r := gin.New()
	r.Use(ginmw.Cache(newCache(t)), func(c *gin.Context) { after.Add(1) })
	r.GET("/r", func(c *gin.Context) {
		handler.Add(1)
		c.String(http.StatusOK, "call %d", handler.Load())
	})
	first, second := get(r, "/r"), get(r, "/r")
	if second.header.Get("X-Cache") != "HIT" || second.body != first.body {
		t.Errorf("second response %q X-Cache %q, want the cached %q as a HIT", second.body, second.header.Get("X-Cache"), first.body)
	}
	if after.Load() != 1 || handler.Load() != 1 {
		t.Errorf("after two requests the later middleware ran %d times and the handler %d, want 1 and 1", after.Load(), handler.Load())
	}
}

func TestGroupAndRoute(t *testing.T) {
	c := newCache(t)
	var calls atomic.Int64
	show := func(gc *gin.Context) { gc.String(http.StatusOK, "%s %d", gc.Param("id"), calls.Add(1)) }
	r := gin.New()
	api := r.Group("/api", ginmw.Cache(c))
	api.GET("/items/:id", show)
	r.GET("/p/:id", ginmw.Cache(c, core.TTL(10*time.Second)), show)
	r.GET("/plain/:id", show)
	for _, tc := range []struct {
		name, target, want string
	}{
		{"group", "/api/items/1", "HIT"},
		{"route", "/p/1", "HIT"},
		{"uncached", "/plain/1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, second := get(r, tc.target), get(r, tc.target)
			if got := second.header.Get("X-Cache"); got != tc.want {
				t.Errorf("GET %s twice: X-Cache %q, want %q", tc.target, got, tc.want)
			}
			if (tc.want == "HIT") != (first.body == second.body) {
				t.Errorf("GET %s twice: bodies %q and %q", tc.target, first.body, second.body)
			}
		})
	}
}

func TestRenderedResponsesReplay(t *testing.T) {
	for _, tc := range []struct {
		name   string
		render func(c *gin.Context, n int64)
		status int
		ctype  string
		body   string
	}{
		{"JSON", func(c *gin.Context, n int64) { c.JSON(http.StatusOK, gin.H{"call": n}) },
			200, "application/json; charset=utf-8", `{"call":1}`},
		{"String", func(c *gin.Context, n int64) { c.String(http.StatusOK, "call %d", n) },
			200, "text/plain; charset=utf-8", "call 1"},
		{"StatusChangedBeforeBody", func(c *gin.Context, n int64) {
			c.Status(http.StatusAccepted)
			c.Data(http.StatusNonAuthoritativeInfo, "text/csv", fmt.Appendf(nil, "call,%d", n))
		}, 203, "text/csv", "call,1"},
		{"StatusOnly", func(c *gin.Context, n int64) { c.Status(http.StatusNonAuthoritativeInfo) },
			203, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			r := gin.New()
			r.Use(ginmw.Cache(newCache(t), core.Statuses(200, 203)))
			r.GET("/r", func(c *gin.Context) { tc.render(c, calls.Add(1)) })
			for i, want := range []string{"MISS", "HIT"} {
				got := get(r, "/r")
				if got.status != tc.status || got.body != tc.body || got.header.Get("Content-Type") != tc.ctype || got.header.Get("X-Cache") != want {
					t.Errorf("request %d = %d %q Content-Type %q X-Cache %q, want %d %q Content-Type %q X-Cache %q", i+1,
						got.status, got.body, got.header.Get("Content-Type"), got.header.Get("X-Cache"), tc.status, tc.body, tc.ctype, want)
				}
			}
			if calls.Load() != 1 {
				t.Errorf("handler ran %d times, want 1", calls.Load())
			}
		})
	}
}

// commitLog is a store that records the values committed to it.
type commitLog struct {
	*core.MemoryStore
	mu     sync.Mutex // guards values
	values [][]byte
}

func (s *commitLog) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	s.mu.Lock()
	s.values = append(s.values, bytes.Clone(value))
	s.mu.Unlock()
	return s.MemoryStore.SetNX(ctx, key, value, ttl)
}

func (s *commitLog) Replace(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	s.values = append(s.values, bytes.Clone(value))
	s.mu.Unlock()
	return s.MemoryStore.Replace(ctx, key, old, value, ttl)
}

// holding reports whether a committed value contains b.
func (s *commitLog) holding(b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.values {
		if bytes.Contains(v, b) {
			return true
		}
	}
	return false
}

func TestRenderErrorNotStored(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(c *gin.Context)
	}{
		{"render fails before the header", func(c *gin.Context) {
			c.Header("X-Fill", "fill-marker")
			c.JSON(http.StatusOK, make(chan int)) // does not marshal: gin records the error
		}},
		{"error after the body", func(c *gin.Context) {
			c.Header("X-Fill", "fill-marker")
			c.String(http.StatusOK, "partial")
			c.Error(errors.New("lookup failed after writing"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &commitLog{MemoryStore: core.NewMemoryStore(0)}
			defer store.Close()
			var calls atomic.Int64
			r := gin.New()
			r.Use(ginmw.Cache(core.New(store)))
			r.GET("/r", func(c *gin.Context) {
				calls.Add(1)
				tc.handler(c)
			})
			for i := range 2 {
				got := get(r, "/r")
				if cc := got.header.Values("Cache-Control"); len(cc) != 0 {
					t.Errorf("request %d: Cache-Control %q reached the client, want none: not storing is the cache's business", i, cc)
				}
				if got.header.Get("X-Cache") == "HIT" {
					t.Errorf("request %d: X-Cache HIT after a gin error", i)
				}
			}
			if calls.Load() != 2 {
				t.Errorf("after a gin error the handler ran %d times for two requests, want 2", calls.Load())
			}
			if store.holding([]byte("fill-marker")) {
				t.Error("the response of a chain with gin errors was committed to the store")
			}
		})
	}
}

func TestLoggerSeesReplayedStatus(t *testing.T) {
	type seen struct{ status, size int }
	var logged []seen
	r := gin.New()
	r.Use(func(c *gin.Context) {
		c.Next()
		logged = append(logged, seen{c.Writer.Status(), c.Writer.Size()})
	}, ginmw.Cache(newCache(t), core.Statuses(203)))
	r.GET("/r", func(c *gin.Context) { c.String(http.StatusNonAuthoritativeInfo, "cached") })
	get(r, "/r")
	get(r, "/r")
	want := seen{203, len("cached")}
	if len(logged) != 2 || logged[0] != want || logged[1] != want {
		t.Errorf("logger saw %v, want %v for the miss and the hit", logged, want)
	}
}

func TestUnmatchedRoutePassesThrough(t *testing.T) {
	r := gin.New()
	r.Use(ginmw.Cache(newCache(t), core.Statuses(200, 404)))
	r.GET("/r", func(c *gin.Context) { c.String(http.StatusOK, "here") })
	for range 2 {
		got := get(r, "/nowhere")
		if got.status != 404 || got.body != "404 page not found" || got.header.Get("X-Cache") != "" {
			t.Errorf("GET /nowhere = %d %q X-Cache %q, want gin's own 404 untouched", got.status, got.body, got.header.Get("X-Cache"))
		}
	}
}

// TestPanicBelongsToItsRequest checks that a panic in the handler of the
// request leading a fill (one its own headers may have triggered) reaches
// that request only: the requests waiting on it run the handler
// themselves, and each gets gin.Recovery's 500.
func TestPanicBelongsToItsRequest(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	r := gin.New()
	r.Use(gin.RecoveryWithWriter(io.Discard), ginmw.Cache(newCache(t)))
	r.GET("/r", func(c *gin.Context) {
		calls.Add(1)
		<-release
		panic("origin exploded")
	})
	const n = 8
	statuses := make([]int, n)
	send := func(ctx context.Context, i int) {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequestWithContext(ctx, "GET", "/r", nil))
		statuses[i] = w.Code
	}
	// The first client alone, until the handler has it; then the others,
	// released once each waits on that fill.
	cachetest.Herd(t, n, func() bool { return calls.Load() > 0 }, func() { close(release) }, send)
	for i, s := range statuses {
		if s != http.StatusInternalServerError {
			t.Errorf("client %d got status %d, want 500 from gin.Recovery", i, s)
		}
	}
	if calls.Load() != n {
		t.Errorf("handler ran %d times, want %d (each request its own run)", calls.Load(), n)
	}
	// The context went back to gin's pool in a usable state.
	r.GET("/ok", func(c *gin.Context) { c.String(http.StatusOK, "fine") })
	if got := get(r, "/ok"); got.status != 200 || got.body != "fine" {
		t.Errorf("request after the panic = %d %q, want 200 fine", got.status, got.body)
	}
}

func TestStreamingHandler(t *testing.T) {
	var calls atomic.Int64
	r := gin.New()
	r.Use(ginmw.Cache(newCache(t)))
	r.GET("/r", func(c *gin.Context) {
		n := calls.Add(1)
		c.Stream(func(w io.Writer) bool {
			fmt.Fprintf(w, "event %d;", n)
			return false
		})
	})
	// A real server: gin's c.Stream needs http.CloseNotifier, which
	// httptest.ResponseRecorder lacks once a response bypasses the cache.
	srv := httptest.NewServer(r)
	defer srv.Close()
	fetch := func() (string, string) {
		resp, err := srv.Client().Get(srv.URL + "/r")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.Header.Get("X-Cache")
	}
	first, _ := fetch()
	second, xcache := fetch()
	if first != "event 1;" || second != "event 2;" || xcache != "BYPASS" {
		t.Errorf("streamed bodies %q then %q (X-Cache %q), want each client its own stream, BYPASS", first, second, xcache)
	}
}
