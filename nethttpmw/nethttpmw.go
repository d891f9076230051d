// Package nethttpmw adds flightcache response caching to net/http handlers:
//
//	mux.Handle("GET /products/{id}", nethttpmw.Middleware(c)(show))
//
// It works with [http.ServeMux] patterns and with any router that accepts
// func(http.Handler) http.Handler middleware, such as chi. All caching
// decisions are made by package core.
package nethttpmw

import (
	"net/http"

	"github.com/flightcache/flightcache/core"
)

// Middleware returns middleware that caches next's responses through c,
// under the cache's default policy with opts applied on top.
//
// The route pattern that [core.PerRoute] tables are keyed by is
// [http.Request.Pattern]. When the middleware wraps an [*http.ServeMux]
// as a whole, it asks the mux which pattern the request will match.
// Other routers decide their pattern after the middleware runs; with them,
// give each route its own middleware instead of a table.
//
// A handler that must keep its response out of the cache (a fallback
// served because a dependency failed, say) calls [core.DoNotStore] with
// its writer; there is no error return to signal it.
func Middleware(c *core.Cache, opts ...core.PolicyOption) func(http.Handler) http.Handler {
	rt := c.Middleware(opts...)
	return func(next http.Handler) http.Handler {
		mux, _ := next.(*http.ServeMux)
		serve := func(w http.ResponseWriter, r *http.Request) error {
			next.ServeHTTP(w, r)
			return nil
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			pattern := r.Pattern
			if pattern == "" && mux != nil {
				_, pattern = mux.Handler(r)
			}
			rt.Serve(w, r, pattern, serve)
		})
	}
}

// Wrap is Middleware(c, opts...)(h).
func Wrap(h http.Handler, c *core.Cache, opts ...core.PolicyOption) http.Handler {
	return Middleware(c, opts...)(h)
}
