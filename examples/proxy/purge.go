package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log"
	"net/http"
	"net/url"
	"strings"

	"github.com/flightcache/flightcache/core"
)

// purgePath is the proxy's own purge endpoint. Requests for it are
// answered by the proxy, never forwarded, whether purging is enabled or not.
const purgePath = "/.flightcache/purge"

// purger answers purge requests and passes every other request to next.
// A purge is either
//
//   - PURGE <target>, which purges the URL the target names through this
//     proxy (its stored response and every Vary variant), or
//   - POST or PURGE /.flightcache/purge?url=<target>, the same for a
//     client that cannot send another method; <target> is a path and
//     query as clients send them to the proxy, or an absolute URL, whose
//     host is ignored as the cache key ignores it;
//
// with Soft-Purge: 1 to mark the stored response stale rather than remove
// it ([core.Soft]). A purge by tag (a Surrogate-Key header on PURGE, or
// ?tag= on the endpoint) is recognised and refused until core offers it.
//
// Purging needs a token; without one configured every purge request is
// refused. Purge requests and their answers never reach the upstream and
// are never stored.
type purger struct {
	c      *core.Cache
	token  string // "": purging is disabled
	keyFor func(*http.Request) string
	next   http.Handler
}

// purgeRequest is what one purge request asks for: one URL, or tags.
type purgeRequest struct {
	target string   // the request target (path and query) of the URL
	tags   []string // for a purge by tag
	soft   bool
}

// errBadPurge is a purge request that cannot be understood; its text is
// the answer's body.
type errBadPurge string

func (e errBadPurge) Error() string { return string(e) }

func (p *purger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	endpoint := r.URL.Path == purgePath
	if r.Method != "PURGE" && !endpoint {
		p.next.ServeHTTP(w, r)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if p.token == "" {
		// Disabled: the endpoint does not exist, and PURGE is a method
		// this proxy does not allow. Neither goes to the upstream, which
		// would otherwise decide whether a PURGE it answers with 2xx
		// invalidates the URL for everyone.
		if endpoint {
			reply(w, http.StatusNotFound, "not found")
			return
		}
		h.Set("Allow", "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE")
		reply(w, http.StatusMethodNotAllowed, "purging is not enabled")
		return
	}
	if endpoint && r.Method != http.MethodPost && r.Method != "PURGE" {
		h.Set("Allow", "POST, PURGE")
		reply(w, http.StatusMethodNotAllowed, "use POST or PURGE")
		return
	}
	if status := p.authorize(r); status != http.StatusOK {
		if status == http.StatusUnauthorized {
			h.Set("WWW-Authenticate", `Bearer realm="flightcache purge"`)
		}
		reply(w, status, http.StatusText(status))
		return
	}
	req, err := parsePurge(r, endpoint)
	if err != nil {
		reply(w, http.StatusBadRequest, err.Error())
		return
	}

	var opts []core.PurgeOption
	if req.soft {
		opts = append(opts, core.Soft())
	}
	switch {
	case req.tags != nil:
		if req.soft {
			// Tag purges are hard in core: say so rather than purge
			// harder than asked.
			reply(w, http.StatusBadRequest, "a tag purge cannot be soft")
			return
		}
		err = p.c.PurgeTags(r.Context(), req.tags...)
		if errors.Is(err, core.ErrInvalidTag) {
			reply(w, http.StatusBadRequest, "invalid tag")
			return
		}
	default:
		// PurgeURL wants an absolute URL; the host is a placeholder,
		// as keyFor (the middleware's key) ignores it.
		err = p.c.PurgeURL(r.Context(), "http://proxy.invalid"+req.target,
			append(opts, core.KeyedAs(core.KeyFunc(p.keyFor)))...)
	}
	if err != nil {
		// The store could not be reached: nothing is promised. The
		// client gets no details; the log does.
		log.Printf("proxy: purge: %v", err)
		h.Set("Retry-After", "1")
		reply(w, http.StatusServiceUnavailable, "purge failed: cache unavailable, retry")
		return
	}
	reply(w, http.StatusOK, "purged")
}

// authorize checks r's bearer token against the configured one: 200 when
// it matches, 401 when r has no bearer token, 403 when it has another.
// Both tokens are hashed first, so that the comparison takes the same time
// whatever their lengths and contents.
func (p *purger) authorize(r *http.Request) int {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return http.StatusUnauthorized
	}
	got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(p.token))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return http.StatusForbidden
	}
	return http.StatusOK
}

// parsePurge reads what r asks to purge; endpoint tells whether r was sent
// to purgePath rather than to the URL it purges.
func parsePurge(r *http.Request, endpoint bool) (purgeRequest, error) {
	var req purgeRequest
	switch v := r.Header.Get("Soft-Purge"); v {
	case "", "0":
	case "1":
		req.soft = true
	default:
		return req, errBadPurge("Soft-Purge must be 1 or 0")
	}
	for _, v := range r.Header.Values("Surrogate-Key") {
		req.tags = append(req.tags, strings.Fields(v)...)
	}
	if !endpoint {
		if r.Header["Surrogate-Key"] != nil && req.tags == nil {
			return req, errBadPurge("Surrogate-Key names no tag")
		}
		req.target = r.URL.RequestURI()
		return req, nil
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return req, errBadPurge("malformed query")
	}
	for _, v := range q["tag"] {
		req.tags = append(req.tags, strings.Fields(v)...)
	}
	urls := q["url"]
	switch {
	case len(urls) > 1 || (len(urls) == 1 && req.tags != nil):
		return req, errBadPurge("give one url or tags, not both")
	case len(urls) == 1:
		req.target, err = requestTarget(urls[0])
		return req, err
	case req.tags == nil:
		return req, errBadPurge("give url=<path> or tag=<tag>")
	}
	return req, nil
}

// requestTarget returns the request target (path and query, escaped as
// net/http would hand them to the middleware) of s, a target such as
// /a?b=c or an absolute http or https URL.
func requestTarget(s string) (string, error) {
	var u *url.URL
	var err error
	if strings.HasPrefix(s, "/") {
		u, err = url.ParseRequestURI(s)
	} else if u, err = url.Parse(s); err == nil && ((u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
		err = errors.New("not an absolute http URL")
	}
	if err != nil {
		return "", errBadPurge("url must be a path such as /a?b=c or an absolute http URL")
	}
	u.Fragment, u.RawFragment = "", ""
	return u.RequestURI(), nil
}

// reply writes a short plain-text answer.
func reply(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}
