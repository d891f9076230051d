// Package echomw adds flightcache response caching to echo v4 handlers:
//
//	e.Use(echomw.Cache(c))
//
// The middleware can be installed for the whole server, for a group or
// for a single route; the route pattern that [core.PerRoute] tables are
// keyed by is echo's [echo.Context.Path] ("/products/:id"). Handlers keep
// using c.JSON, c.String and the rest as usual: on a miss their response
// is recorded by package core, which makes every caching decision, and
// every response, cached or not, is written through the request's own
// [echo.Response], so echo's logger and other middleware see its status
// and size. A handler that returns an error is never cached; the error
// reaches echo's HTTPErrorHandler unchanged. A handler that answers but
// must keep its response out of the cache calls
// core.DoNotStore(c.Response()).
package echomw

import (
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/flightcache/flightcache/core"
)

// Config configures [CacheWithConfig].
type Config struct {
	// Skipper says which requests bypass the middleware entirely: they go
	// straight to the next handler, uncached and without the cache
	// header. nil means [middleware.DefaultSkipper], which skips nothing.
	// For requests that should be marked BYPASS instead, use [core.Skip].
	Skipper middleware.Skipper

	// Cache is the cache responses are stored in. It is required.
	Cache *core.Cache

	// Options are applied on top of Cache's default policy, as in
	// [Cache].
	Options []core.PolicyOption
}

// DefaultConfig is the default configuration: it skips no request.
// Cache must still be set.
var DefaultConfig = Config{Skipper: middleware.DefaultSkipper}

// Cache returns middleware that caches the responses of the handlers
// after it through c, under the cache's default policy with opts applied
// on top. It panics if c is nil.
func Cache(c *core.Cache, opts ...core.PolicyOption) echo.MiddlewareFunc {
	config := DefaultConfig
	config.Cache = c
	config.Options = opts
	return CacheWithConfig(config)
}

// CacheWithConfig returns the middleware of [Cache] configured by config.
// It panics if config.Cache is nil.
func CacheWithConfig(config Config) echo.MiddlewareFunc {
	if config.Cache == nil {
		panic("flightcache/echomw: nil *core.Cache")
	}
	skip := config.Skipper
	if skip == nil {
		skip = middleware.DefaultSkipper
	}
	rt := config.Cache.Middleware(config.Options...)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if skip(c) {
				return next(c)
			}
			call := chainCalls.Get().(*chainCall)
			call.c, call.res, call.next = c, c.Response(), next
			err := rt.Serve(call.res, c.Request(), c.Path(), call.run)
			*call = chainCall{run: call.run}
			chainCalls.Put(call)
			return err
		}
	}
}

// chainCall is the rest of one request's chain as core's next: a pooled
// value whose run is bound once, so that a hit allocates nothing in the
// adapter. core calls next only before Serve returns, on the request's
// own goroutine, so the value is free again once Serve has returned.
type chainCall struct {
	c    echo.Context
	res  *echo.Response
	next echo.HandlerFunc
	run  func(http.ResponseWriter, *http.Request) error
}

var chainCalls = sync.Pool{New: func() any {
	call := new(chainCall)
	call.run = func(w http.ResponseWriter, r *http.Request) error {
		return run(call.c, call.res, w, r, call.next)
	}
	return call
}}

// run calls next with c writing to w and reading r: core's recorder (or
// res itself when core passes the request through) and the request with
// the fill's detached context. It restores c's response and request
// before returning, panics included, so that echo's HTTPErrorHandler, the
// Recover middleware and everything outside this middleware answer
// through res, never into a recorder whose content core discards when
// next fails.
func run(c echo.Context, res *echo.Response, w http.ResponseWriter, r *http.Request, next echo.HandlerFunc) error {
	req := c.Request()
	defer c.SetRequest(req)
	c.SetRequest(r)
	if w != http.ResponseWriter(res) {
		defer c.SetResponse(res)
		c.SetResponse(echo.NewResponse(w, c.Echo()))
	}
	return next(c)
}
