package echomw_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"go.uber.org/goleak"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/cachetest"
	"github.com/flightcache/flightcache/echomw"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newServer builds the suite's server on echo. echo does not answer HEAD
// with a GET route, so every route is registered for both methods.
func newServer(c *core.Cache, s cachetest.Server) http.Handler {
	e := echo.New()
	if s.Global != nil {
		e.Use(echomw.Cache(c, s.Global...))
	}
	for _, r := range s.Endpoints {
		var mw []echo.MiddlewareFunc
		if r.Cache != nil {
			mw = append(mw, echomw.Cache(c, r.Cache...))
		}
		h := echo.WrapHandler(r.Handler)
		e.GET(r.Path, h, mw...)
		e.HEAD(r.Path, h, mw...)
		e.POST(r.Path, h, mw...)
	}
	return e
}

func TestHTTPSuite(t *testing.T) {
	cachetest.TestHTTP(t, cachetest.Driver{
		New:     newServer,
		Pattern: func(path string) string { return path },
	})
}

type response struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, h http.Handler, method, target string, header ...string) response {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	body, _ := io.ReadAll(w.Result().Body)
	return response{w.Code, w.Result().Header, string(body)}
}

func newCache(t *testing.T) *core.Cache {
	t.Helper()
	s := core.NewMemoryStore(0)
	t.Cleanup(func() { s.Close() })
	return core.New(s)
}

func TestHandlerErrorReachesErrorHandler(t *testing.T) {
	var calls atomic.Int64
	e := echo.New()
	e.Use(echomw.Cache(newCache(t)))
	e.GET("/r", func(c echo.Context) error {
		if calls.Add(1) <= 2 {
			// What the handler wrote before failing must not reach the
			// client: echo's error response replaces it.
			c.Response().Header().Set("X-Partial", "yes")
			return echo.NewHTTPError(http.StatusServiceUnavailable)
		}
		return c.String(http.StatusOK, "recovered")
	})

	for i := range 2 {
		got := do(t, e, "GET", "/r")
		if got.status != http.StatusServiceUnavailable || !strings.Contains(got.body, "Service Unavailable") {
			t.Errorf("request %d = %d %q, want echo's 503 error response", i+1, got.status, got.body)
		}
		if got.header.Get("X-Partial") != "" {
			t.Errorf("request %d carries the failed handler's header X-Partial", i+1)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("handler called %d times for two failing requests, want 2 (errors are not cached)", n)
	}
	if got := do(t, e, "GET", "/r"); got.status != http.StatusOK || got.body != "recovered" || got.header.Get("X-Cache") != "MISS" {
		t.Errorf("after the errors = %d %q X-Cache %q, want a fresh 200 recovered MISS", got.status, got.body, got.header.Get("X-Cache"))
	}
}

// TestStaleIfErrorOnHandlerError checks that a handler's error, not only
// a 5xx status, counts as a failed refill: with StaleIfError the stale
// entry is served, echo's error handler never runs, and the error reaches
// the cache's observer.
func TestStaleIfErrorOnHandlerError(t *testing.T) {
	sentinel := errors.New("origin down")
	var calls atomic.Int64
	var observed []error
	s := core.NewMemoryStore(0)
	t.Cleanup(func() { s.Close() })
	c := core.New(s, core.WithObserver(func(err error) { observed = append(observed, err) }))
	advance := cachetest.FakeClock(c)
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		t.Errorf("echo's error handler ran with %v; the stale entry should have answered", err)
		c.NoContent(http.StatusInternalServerError)
	}
	e.Use(echomw.Cache(c, core.StaleIfError(time.Minute)))
	e.GET("/r", func(c echo.Context) error {
		if calls.Add(1) > 1 {
			return sentinel
		}
		c.Response().Header().Set("Cache-Control", "max-age=1")
		return c.String(http.StatusOK, "version 1")
	})
	do(t, e, "GET", "/r")
	advance(2 * time.Second) // stale now
	got := do(t, e, "GET", "/r")
	if got.status != http.StatusOK || got.body != "version 1" || got.header.Get("X-Cache") != "STALE" {
		t.Errorf("failed refill = %d %q X-Cache %q, want the stale version 1", got.status, got.body, got.header.Get("X-Cache"))
	}
	if calls.Load() != 2 || len(observed) != 1 || !errors.Is(observed[0], sentinel) {
		t.Errorf("handler ran %d times, observer saw %v; want 2 runs and the handler's error once", calls.Load(), observed)
	}
}

func TestErrorHandlerSeesHandlerError(t *testing.T) {
	sentinel := errors.New("origin down")
	var seen error
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		seen = err
		c.String(http.StatusBadGateway, "custom")
	}
	e.Use(echomw.Cache(newCache(t)))
	e.GET("/r", func(c echo.Context) error { return sentinel })

	got := do(t, e, "GET", "/r")
	if seen != sentinel {
		t.Errorf("HTTPErrorHandler got %v, want the handler's error unchanged", seen)
	}
	if got.status != http.StatusBadGateway || got.body != "custom" {
		t.Errorf("response = %d %q, want the error handler's 502 custom", got.status, got.body)
	}
}

func TestPanicRecoveredThroughOriginalResponse(t *testing.T) {
	var calls atomic.Int64
	e := echo.New()
	e.Use(middleware.Recover())
	e.Use(echomw.Cache(newCache(t)))
	e.GET("/r", func(c echo.Context) error {
		calls.Add(1)
		c.Response().Header().Set("X-Partial", "yes")
		panic("boom")
	})

	for i := range 2 {
		got := do(t, e, "GET", "/r")
		if got.status != http.StatusInternalServerError || got.header.Get("X-Partial") != "" {
			t.Errorf("request %d = %d with X-Partial %q, want echo's clean 500", i+1, got.status, got.header.Get("X-Partial"))
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("handler called %d times, want 2 (panics are not cached)", n)
	}
}

func TestSkipper(t *testing.T) {
	var calls atomic.Int64
	e := echo.New()
	e.Use(echomw.CacheWithConfig(echomw.Config{
		Skipper: func(c echo.Context) bool { return c.QueryParam("fresh") != "" },
		Cache:   newCache(t),
	}))
	e.GET("/r", func(c echo.Context) error {
		return c.String(http.StatusOK, fmt.Sprintf("call %d", calls.Add(1)))
	})

	do(t, e, "GET", "/r")
	for range 2 {
		got := do(t, e, "GET", "/r?fresh=1")
		if got.header.Get("X-Cache") != "" {
			t.Errorf("skipped request has X-Cache %q, want none", got.header.Get("X-Cache"))
		}
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("handler called %d times, want 3 (skipped requests always run it)", n)
	}
	if got := do(t, e, "GET", "/r"); got.body != "call 1" || got.header.Get("X-Cache") != "HIT" {
		t.Errorf("unskipped request = %q X-Cache %q, want the cached call 1", got.body, got.header.Get("X-Cache"))
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Run("NilSkipper", func(t *testing.T) {
		e := echo.New()
		e.Use(echomw.CacheWithConfig(echomw.Config{Cache: newCache(t)}))
		e.GET("/r", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
		do(t, e, "GET", "/r")
		if got := do(t, e, "GET", "/r"); got.header.Get("X-Cache") != "HIT" {
			t.Errorf("X-Cache = %q, want HIT", got.header.Get("X-Cache"))
		}
	})
	t.Run("NilCachePanics", func(t *testing.T) {
		for name, f := range map[string]func(){
			"Cache":           func() { echomw.Cache(nil) },
			"CacheWithConfig": func() { echomw.CacheWithConfig(echomw.DefaultConfig) },
		} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s with a nil cache did not panic", name)
					}
				}()
				f()
			}()
		}
	})
}

func TestEchoRenderersReplayed(t *testing.T) {
	var calls atomic.Int64
	e := echo.New()
	e.Use(echomw.Cache(newCache(t)))
	e.GET("/json/:id", func(c echo.Context) error {
		calls.Add(1)
		return c.JSON(http.StatusOK, map[string]string{"id": c.Param("id")})
	})
	e.GET("/text", func(c echo.Context) error {
		calls.Add(1)
		c.Response().Header().Set("X-Handler", "text")
		return c.String(http.StatusOK, "plain words")
	})
	e.GET("/blob", func(c echo.Context) error {
		calls.Add(1)
		return c.Blob(http.StatusOK, "application/octet-stream", []byte{0, 1, 2, 255})
	})

	for _, target := range []string{"/json/7", "/text", "/blob"} {
		before := calls.Load()
		first, second := do(t, e, "GET", target), do(t, e, "GET", target)
		if calls.Load()-before != 1 {
			t.Errorf("%s: handler ran %d times for two requests, want 1", target, calls.Load()-before)
		}
		if first.header.Get("X-Cache") != "MISS" || second.header.Get("X-Cache") != "HIT" {
			t.Errorf("%s: X-Cache %q then %q, want MISS then HIT", target, first.header.Get("X-Cache"), second.header.Get("X-Cache"))
		}
		if second.status != first.status || second.body != first.body ||
			second.header.Get("Content-Type") != first.header.Get("Content-Type") ||
			second.header.Get("X-Handler") != first.header.Get("X-Handler") {
			t.Errorf("%s: hit = %d %q %v, want the miss's %d %q %v", target,
				second.status, second.body, second.header, first.status, first.body, first.header)
		}
	}
	if got := do(t, e, "GET", "/json/7"); got.body != "{\"id\":\"7\"}\n" || !strings.HasPrefix(got.header.Get("Content-Type"), echo.MIMEApplicationJSON) {
		t.Errorf("/json/7 hit = %q (%s), want echo's JSON encoding", got.body, got.header.Get("Content-Type"))
	}
}

// TestResponseBookkeeping checks that middleware outside the cache, such
// as a logger, sees the status and size of every response in
// echo.Response, replayed hits included.
func TestResponseBookkeeping(t *testing.T) {
	type seen struct {
		status    int
		size      int64
		committed bool
	}
	var got []seen
	var calls atomic.Int64
	e := echo.New()
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			err := next(c)
			res := c.Response()
			got = append(got, seen{res.Status, res.Size, res.Committed})
			return err
		}
	})
	e.Use(echomw.Cache(newCache(t), core.Statuses(http.StatusCreated)))
	e.GET("/r", func(c echo.Context) error {
		calls.Add(1)
		return c.String(http.StatusCreated, "twelve bytes")
	})

	first, second := do(t, e, "GET", "/r"), do(t, e, "GET", "/r")
	if first.header.Get("X-Cache") != "MISS" || second.header.Get("X-Cache") != "HIT" || calls.Load() != 1 {
		t.Fatalf("X-Cache %q then %q after %d handler calls, want MISS then HIT after 1",
			first.header.Get("X-Cache"), second.header.Get("X-Cache"), calls.Load())
	}
	want := seen{http.StatusCreated, int64(len("twelve bytes")), true}
	for i, s := range got {
		if s != want {
			t.Errorf("request %d: echo.Response = %+v, want %+v", i+1, s, want)
		}
	}
}

// TestLeaderErrorIsItsOwn is the echo shape of a request-caused failure:
// the handler of the request leading a cold key's fill returns an error
// because of that request's own headers (echo's 401 or 406 as an error).
// Only that request gets echo's error response; the requests waiting on
// the fill get their own answer, from one new fill.
func TestLeaderErrorIsItsOwn(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	e := echo.New()
	e.Use(echomw.Cache(newCache(t), core.TTL(time.Hour)))
	e.GET("/r", func(c echo.Context) error {
		if calls.Add(1) == 1 {
			<-release
		}
		if c.Request().Header.Get("Accept") == "application/x-junk" {
			return echo.NewHTTPError(http.StatusNotAcceptable)
		}
		return c.String(http.StatusOK, "page")
	})
	const n = 10
	got := make([]response, n)
	cachetest.Herd(t, n, func() bool { return calls.Load() > 0 }, func() { close(release) }, func(ctx context.Context, i int) {
		r := httptest.NewRequestWithContext(ctx, "GET", "/r", nil)
		if i == 0 {
			r.Header.Set("Accept", "application/x-junk")
		}
		w := httptest.NewRecorder()
		e.ServeHTTP(w, r)
		got[i] = response{w.Code, w.Result().Header, w.Body.String()}
	})
	if got[0].status != http.StatusNotAcceptable {
		t.Errorf("the leader got %d, want its own 406", got[0].status)
	}
	for i, r := range got[1:] {
		if r.status != http.StatusOK || r.body != "page" {
			t.Errorf("waiter %d got %d %q, want its own 200 page", i+1, r.status, r.body)
		}
	}
	if c := calls.Load(); c != 2 {
		t.Errorf("handler ran %d times, want 2: the leader's, then one new fill for the waiters", c)
	}
}
