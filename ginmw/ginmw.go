// Package ginmw adds flightcache response caching to gin handlers:
//
//	r.Use(ginmw.Cache(c))
//
// The middleware goes on the engine, a route group or a single route
// (r.GET("/p/:id", ginmw.Cache(c, core.TTL(10*time.Second)), show)). The
// route pattern that [core.PerRoute] tables are keyed by is gin's
// [gin.Context.FullPath], such as "/products/:id". All caching decisions
// are made by package core; this package only runs the rest of gin's
// handler chain into core's response recorder, and tells core
// ([core.DoNotStore]) when the chain recorded gin errors.
package ginmw

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"sync"

	"github.com/gin-gonic/gin"

	"github.com/flightcache/flightcache/core"
)

// Cache returns gin middleware that caches the responses of the handlers
// after it through c, under the cache's default policy with opts applied
// on top.
//
// On a hit the handlers after the middleware do not run. On a miss they
// run once per key while other requests for it wait; during that fill
// they see a gin.Context whose Writer buffers the response and whose
// Request carries a context detached from the client's (see
// [core.Middleware.Serve]). When the chain records gin errors
// ([gin.Context.Error]) during the fill, such as a failed render, its
// response goes to its own request only: it is neither stored nor shared
// with the waiting requests ([core.DoNotStore]), and its headers are left
// as the handlers set them.
// A handler panic reaches the request whose fill panicked, where
// [gin.Recovery] placed before the middleware turns it into a 500; the
// requests waiting on that fill run their own.
// Requests that match no route pass through uncached.
func Cache(c *core.Cache, opts ...core.PolicyOption) gin.HandlerFunc {
	rt := c.Middleware(opts...)
	return func(gc *gin.Context) {
		if gc.FullPath() == "" {
			// No route matched: gin writes its 404 or 405 after the
			// chain, where a recorder cannot see it.
			return
		}
		call := chainCalls.Get().(*chainCall)
		call.gc, call.ran = gc, false
		rt.Serve(gc.Writer, gc.Request, gc.FullPath(), call.run)
		ran := call.ran
		call.gc = nil
		chainCalls.Put(call)
		if !ran {
			// Answered from the cache or another request's fill: the
			// handlers after this one must not run.
			gc.Abort()
		}
	}
}

// chainCall is the rest of one request's chain as core's next: a pooled
// value whose run (its next method) is bound once, so that a hit
// allocates nothing in the adapter. core calls next only before Serve
// returns, on the request's own goroutine, so the value is free again
// once Serve has returned.
type chainCall struct {
	gc  *gin.Context
	ran bool
	run func(http.ResponseWriter, *http.Request) error
}

var chainCalls = sync.Pool{New: func() any {
	c := new(chainCall)
	c.run = c.next
	return c
}}

func (c *chainCall) next(w http.ResponseWriter, r *http.Request) error {
	gc := c.gc
	c.ran = true
	orig, req := gc.Writer, gc.Request
	defer func() { gc.Writer, gc.Request = orig, req }()
	gc.Request = r
	if w == orig {
		gc.Next() // passing through, uncached
		return nil
	}
	fw := &fillWriter{ResponseWriter: w, req: r, status: orig.Status(), size: -1}
	gc.Writer = fw
	errs := len(gc.Errors)
	gc.Next()
	if len(gc.Errors) > errs {
		core.DoNotStore(w)
	}
	fw.WriteHeaderNow() // what gin's engine does for its own writer
	return nil
}

// fillWriter is the [gin.ResponseWriter] the handler chain writes to while
// it fills the cache. Like gin's own writer it holds the status back until
// the body or WriteHeaderNow, so a handler may still change it; everything
// goes to core's recorder.
type fillWriter struct {
	http.ResponseWriter
	req    *http.Request // the fill's; its context ends with the fill
	status int
	size   int // -1 until the header is written
}

var _ gin.ResponseWriter = (*fillWriter)(nil)

func (w *fillWriter) WriteHeader(code int) {
	if code > 0 && !w.Written() {
		w.status = code
	}
}

func (w *fillWriter) WriteHeaderNow() {
	if !w.Written() {
		w.size = 0
		w.ResponseWriter.WriteHeader(w.status)
	}
}

func (w *fillWriter) Write(b []byte) (int, error) {
	w.WriteHeaderNow()
	n, err := w.ResponseWriter.Write(b)
	w.size += n
	return n, err
}

func (w *fillWriter) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

func (w *fillWriter) Status() int   { return w.status }
func (w *fillWriter) Size() int     { return w.size }
func (w *fillWriter) Written() bool { return w.size != -1 }

// Flush streams the response: it reaches the client as written and is not
// stored.
func (w *fillWriter) Flush() { w.FlushError() }

// FlushError is Flush for [http.ResponseController].
func (w *fillWriter) FlushError() error {
	w.WriteHeaderNow()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands the connection to the handler; the response is not stored.
func (w *fillWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && !w.Written() {
		w.size = 0 // nothing more may be written through w
	}
	return conn, brw, err
}

// CloseNotify returns a channel that receives when the fill's context ends
// (see [core.WithFetchTimeout]), not when the client that started it
// leaves: the fill serves every request waiting on it.
func (w *fillWriter) CloseNotify() <-chan bool {
	ch := make(chan bool, 1)
	context.AfterFunc(w.req.Context(), func() { ch <- true })
	return ch
}

// Pusher returns nil: a stored response cannot push.
func (w *fillWriter) Pusher() http.Pusher { return nil }

// Unwrap lets [http.ResponseController] reach core's recorder.
func (w *fillWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
