package core

import (
	"bufio"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/flightcache/flightcache/core/internal/entry"
)

// unstoredHeaders are response header fields never stored with a response:
// hop-by-hop fields (RFC 9110, section 7.6.1) and Cache-Status, which the
// cache sets itself when it replays one (response drops the cache header
// too). An Age header is kept: it is the age the response had when it was
// stored. Documented in doc.go.
var unstoredHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Cache-Status",
}

// recorder buffers a handler's response so that it can be stored and
// replayed, like http.TimeoutHandler's writer. A response that flushes,
// hijacks or outgrows the body limit is passed through to the real writer
// from that moment and is not stored.
type recorder struct {
	w           http.ResponseWriter // the filling request's real writer
	cacheHeader string
	maxBody     int

	header   http.Header // what the handler sees until streaming starts
	snapshot http.Header // header at WriteHeader time
	status   int
	body     []byte
	streamed bool   // the response went to w as it was written
	onStream func() // called once when streaming starts; may be nil
	// doNotStore is set by DoNotStore: the response goes to the filling
	// request alone, neither stored nor shared with waiting requests.
	doNotStore bool
}

var (
	_ http.ResponseWriter = (*recorder)(nil)
	_ http.Flusher        = (*recorder)(nil)
	_ http.Hijacker       = (*recorder)(nil)
)

func newRecorder(w http.ResponseWriter, cacheHeader string, maxBody int) *recorder {
	return &recorder{w: w, cacheHeader: cacheHeader, maxBody: maxBody, header: make(http.Header)}
}

func (rec *recorder) Header() http.Header {
	if rec.streamed {
		return rec.w.Header()
	}
	return rec.header
}

func (rec *recorder) WriteHeader(code int) {
	if rec.status != 0 || code < 200 {
		// Superfluous calls are ignored, as net/http does; 1xx
		// informational responses are not part of what is stored.
		return
	}
	rec.status = code
	rec.snapshot = canonicalHeader(rec.header)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	if !rec.streamed && len(rec.body)+len(b) > rec.maxBody {
		rec.stream()
	}
	if rec.streamed {
		return rec.w.Write(b)
	}
	rec.body = append(rec.body, b...)
	return len(b), nil
}

// stream gives up on storing: what was buffered goes to the real writer,
// and everything after it goes straight there.
func (rec *recorder) stream() {
	if rec.streamed {
		return
	}
	rec.streamed = true
	if rec.onStream != nil {
		rec.onStream()
	}
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	h := rec.w.Header()
	for k, v := range rec.snapshot {
		h[k] = v
	}
	h.Set(rec.cacheHeader, "BYPASS")
	h.Set(CacheStatusHeader, "flightcache; fwd=uri-miss; fwd-status="+strconv.Itoa(rec.status))
	rec.w.WriteHeader(rec.status)
	if len(rec.body) > 0 {
		rec.w.Write(rec.body)
		rec.body = nil
	}
}

// Flush streams the response: a flushing handler is streaming, and a
// stream is not stored.
func (rec *recorder) Flush() {
	rec.FlushError()
}

// FlushError is Flush for [http.ResponseController].
func (rec *recorder) FlushError() error {
	rec.stream()
	return http.NewResponseController(rec.w).Flush()
}

// Hijack hands the connection to the handler; the response is not stored.
func (rec *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(rec.w).Hijack()
	if err == nil {
		rec.streamed = true // the connection is the handler's now
	}
	return conn, brw, err
}

// DoNotStore marks the response being written to w as one the cache must
// neither store nor share: it goes to the request that produced it alone,
// and requests waiting on the same fill run the handler themselves. An
// adapter calls it when the framework says the handler failed in a way the
// response does not show (gin's Context.Errors); a handler may call it
// too, with the writer it was given. Unlike a Cache-Control: no-store
// header, it changes nothing the client sees.
//
// w is the writer of the handler that the cache runs to fill a key, or
// one that wraps it and has an Unwrap() http.ResponseWriter method, as
// [net/http.ResponseController] expects. For any other writer (a request
// that bypasses the cache, say) DoNotStore does nothing. It must be called
// before the handler returns; a response that already streamed to its
// client is not stored anyway.
func DoNotStore(w http.ResponseWriter) {
	for w != nil {
		if rec, ok := w.(*recorder); ok {
			rec.doNotStore = true
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

// Unwrap lets [http.ResponseController] reach the real writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.w }

// response returns the recorded response, without unstored headers, and
// varying on Accept-Encoding when it is encoded (see varyOnEncoding).
func (rec *recorder) response() entry.Response {
	status, h := rec.status, rec.snapshot
	if status == 0 {
		status, h = http.StatusOK, canonicalHeader(rec.header)
	}
	for _, k := range unstoredHeaders {
		delete(h, k)
	}
	delete(h, rec.cacheHeader) // canonical, see WithCacheHeader
	varyOnEncoding(h)
	return entry.Response{Status: status, Header: h, Body: rec.body}
}

// canonicalHeader returns a copy of h with every field name in canonical
// form. A handler may set w.Header()["set-cookie"] or ["cache-control"]
// directly, and net/http sends such names as written, but every rule the
// cache applies to a response (Set-Cookie and Cache-Control for storing,
// Vary for variants, the unstored fields) looks names up canonically: a
// name it did not recognise would let a personal response be shared.
// The values of names that differ only in case are merged, the canonical
// name's first, then the others' in byte order of the names: a rule then
// sees every line, as it would had they been sent under one name.
func canonicalHeader(h http.Header) http.Header {
	var odd []string // names not in canonical form
	for k := range h {
		if http.CanonicalHeaderKey(k) != k {
			odd = append(odd, k)
		}
	}
	c := h.Clone()
	if len(odd) == 0 {
		return c
	}
	slices.Sort(odd)
	for _, k := range odd {
		ck := http.CanonicalHeaderKey(k)
		c[ck] = append(slices.Clip(c[ck]), c[k]...)
		delete(c, k)
	}
	return c
}

// varyOnEncoding adds Accept-Encoding to the Vary of a response h whose
// Content-Encoding names a coding other than identity, unless its Vary
// already names it or says *. A compressing handler (or middleware) that
// forgets Vary: Accept-Encoding would otherwise have its compressed bytes
// stored as the URL's one response and served to clients that cannot
// decode them; varying, each Accept-Encoding value gets its own variant.
func varyOnEncoding(h http.Header) {
	if !encoded(h) {
		return
	}
	for _, v := range h["Vary"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name == "*" || strings.EqualFold(name, "Accept-Encoding") {
				return
			}
		}
	}
	h["Vary"] = append(slices.Clip(h["Vary"]), "Accept-Encoding")
}

// encoded reports whether h's Content-Encoding names a coding other than
// identity.
func encoded(h http.Header) bool {
	for _, v := range h["Content-Encoding"] {
		for coding := range strings.SplitSeq(v, ",") {
			if coding = strings.TrimSpace(coding); coding != "" && !strings.EqualFold(coding, "identity") {
				return true
			}
		}
	}
	return false
}
