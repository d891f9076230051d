package core

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flightcache/flightcache/core/internal/entry"
)

// heuristicStatuses are the status codes RFC 9110 (section 15.1) lets a
// cache store without being told: a response with one of them is stored
// when it carries explicit freshness (s-maxage, max-age or Expires), even
// if the route's Statuses do not list it. Other codes (206, 5xx, ...) are
// stored only when listed. Documented on Statuses and in doc.go.
var heuristicStatuses = []int{200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}

// cacheControl is a parsed Cache-Control header.
type cacheControl struct {
	noStore, noCache, private, public, mustRevalidate, proxyRevalidate bool
	maxAge, sMaxAge, staleWhileRevalidate, staleIfError                int // -1: absent
}

func parseCacheControl(h http.Header) cacheControl {
	cc := cacheControl{maxAge: -1, sMaxAge: -1, staleWhileRevalidate: -1, staleIfError: -1}
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store":
				cc.noStore = true
			case "no-cache":
				cc.noCache = true
			case "private":
				cc.private = true
			case "public":
				cc.public = true
			case "must-revalidate":
				cc.mustRevalidate = true
			case "proxy-revalidate":
				cc.proxyRevalidate = true
			case "stale-while-revalidate":
				cc.staleWhileRevalidate = seconds(arg, cc.staleWhileRevalidate)
			case "stale-if-error":
				cc.staleIfError = seconds(arg, cc.staleIfError)
			case "max-age":
				cc.maxAge = seconds(arg, cc.maxAge)
			case "s-maxage":
				cc.sMaxAge = seconds(arg, cc.sMaxAge)
			}
		}
	}
	return cc
}

// seconds parses a delta-seconds argument. A malformed one counts as 0
// (stale at once, RFC 9111 section 1.2.2); a repeated directive keeps the
// smallest value.
func seconds(arg string, prev int) int {
	n, err := strconv.Atoi(strings.Trim(arg, `"`))
	if err != nil || n < 0 {
		n = 0
	}
	n = min(n, 365*24*3600)
	if prev >= 0 {
		n = min(n, prev)
	}
	return n
}

// surrogateControl parses Surrogate-Control, whose directives may carry a
// ";target" suffix; the cache takes every directive as addressed to it.
func surrogateControl(h http.Header) (cacheControl, bool) {
	vs := h.Values("Surrogate-Control")
	if len(vs) == 0 {
		return cacheControl{}, false
	}
	sc := cacheControl{maxAge: -1, sMaxAge: -1}
	for _, v := range vs {
		for d := range strings.SplitSeq(v, ",") {
			d, _, _ = strings.Cut(strings.TrimSpace(d), ";")
			name, arg, _ := strings.Cut(d, "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store":
				sc.noStore = true
			case "max-age":
				sc.maxAge = seconds(arg, sc.maxAge)
			}
		}
	}
	return sc, true
}

// explicitFreshness returns the freshness lifetime the response states:
// s-maxage, else max-age, else Expires minus Date; false if it states none.
func explicitFreshness(h http.Header, cc cacheControl, now time.Time) (time.Duration, bool) {
	switch {
	case cc.sMaxAge >= 0:
		return time.Duration(cc.sMaxAge) * time.Second, true
	case cc.maxAge >= 0:
		return time.Duration(cc.maxAge) * time.Second, true
	}
	exp := h.Values("Expires")
	if len(exp) == 0 {
		return 0, false
	}
	expires, err := http.ParseTime(exp[0])
	if err != nil || len(exp) > 1 {
		return 0, true // an invalid Expires means already expired
	}
	date := now
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		date = d
	}
	return expires.Sub(date), true
}

// initialAge is the age the response had when it arrived: its Age header,
// which must be one field line of digits. Anything else — a second line,
// a sign, a fraction, a parameter — makes ok false, and the response is
// not stored: its age is unknown, and not storing is always allowed.
func initialAge(h http.Header) (age time.Duration, ok bool) {
	vs := h["Age"]
	switch {
	case len(vs) == 0:
		return 0, true
	case len(vs) > 1 || vs[0] == "" || strings.Trim(vs[0], "0123456789") != "":
		return 0, false
	}
	n, err := strconv.ParseInt(vs[0], 10, 64)
	if err != nil {
		n = 1 << 31 // too old to tell: "2147483648" in RFC 9111's words
	}
	return time.Duration(min(n, 1<<31)) * time.Second, true
}

// staleWindow is how long past its freshness a stored response with
// header h may be served while it is refreshed (RFC 5861): the response's
// stale-while-revalidate, else the route's [StaleWhileRevalidate]; never
// when the response says must-revalidate, proxy-revalidate or no-cache,
// and not by the route's default when it says s-maxage, which implies
// proxy-revalidate (RFC 9111, section 5.2.2.10).
func (p *policy) staleWindow(h http.Header) time.Duration {
	cc := parseCacheControl(h)
	return cc.staleAllowed(cc.staleWhileRevalidate, p.staleWhileRevalidate)
}

// staleAllowed is the RFC 5861 window of a response with these
// directives: its own (seconds, -1 when absent), else the route default;
// never when it forbids serving stale (must-revalidate, proxy-revalidate,
// no-cache), and no route default when it says s-maxage, which implies
// proxy-revalidate for a shared cache.
func (cc cacheControl) staleAllowed(own int, routeDefault time.Duration) time.Duration {
	switch {
	case cc.mustRevalidate || cc.proxyRevalidate || cc.noCache:
		return 0
	case own >= 0:
		return time.Duration(own) * time.Second
	case cc.sMaxAge >= 0:
		return 0
	}
	return routeDefault
}

// staleIfErrorWindow is how long past its freshness a stored response
// with header h may be served when refilling it fails (RFC 5861): its own
// stale-if-error, else the route's [StaleIfError], under the same rules
// as staleWindow.
func (p *policy) staleIfErrorWindow(h http.Header) time.Duration {
	cc := parseCacheControl(h)
	return cc.staleAllowed(cc.staleIfError, p.staleIfError)
}

// originFailed reports whether a response status is one that RFC 5861
// counts as an error for stale-if-error.
func originFailed(status int) bool {
	switch status {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// sharedWithCredentials reports whether a response may be stored from,
// or served to, a request carrying Authorization (RFC 9111, section 3.5):
// its Cache-Control says public, must-revalidate or s-maxage.
func sharedWithCredentials(h http.Header) bool {
	cc := parseCacheControl(h)
	return cc.public || cc.mustRevalidate || cc.sMaxAge >= 0
}

// storable decides whether a recorded response may be stored and shared,
// and for how long it stays fresh from now.
func (p *policy) storable(resp entry.Response, now time.Time) (time.Duration, bool) {
	listed := slices.Contains(p.statuses, resp.Status)
	if !listed && !slices.Contains(heuristicStatuses, resp.Status) {
		return 0, false
	}
	if _, ok := resp.Header["Set-Cookie"]; ok {
		return 0, false
	}
	if varyAll(resp.Header) {
		return 0, false // it depends on more than the request's header fields
	}
	cc := parseCacheControl(resp.Header)
	if sc, ok := surrogateControl(resp.Header); ok {
		// Addressed to gateway caches like this one, it overrides
		// Cache-Control (Edge Architecture 1.0).
		if sc.noStore {
			return 0, false
		}
		if sc.maxAge >= 0 {
			cc.sMaxAge = sc.maxAge
			cc.noStore, cc.noCache, cc.private = false, false, false
		}
	}
	if cc.noStore || cc.noCache || cc.private {
		return 0, false
	}
	ttl, explicit := explicitFreshness(resp.Header, cc, now)
	switch {
	case explicit && p.ignoreCacheControl:
		if ttl <= 0 {
			return 0, false
		}
		ttl = p.ttl
	case explicit:
	case !listed || p.explicitOnly:
		return 0, false // no freshness stated, and none the route may give
	default:
		ttl = p.ttl
	}
	age, ok := initialAge(resp.Header)
	ttl -= age
	return ttl, ok && ttl > 0
}

// withETag gives a stored 200 without a validator an ETag computed from
// its body: the same in every process, so conditional requests work
// whichever instance answers them.
func withETag(resp entry.Response) {
	if resp.Status != http.StatusOK || resp.Header.Get("ETag") != "" {
		return
	}
	sum := sha256.Sum256(resp.Body)
	resp.Header.Set("ETag", `"`+computedETagPrefix+base64.RawURLEncoding.EncodeToString(sum[:16])+`"`)
}

const computedETagPrefix = "fc-"

// computedETag reports whether etag is one the cache made up (withETag),
// which the upstream would not recognise.
func computedETag(etag string) bool {
	return strings.HasPrefix(strings.TrimPrefix(etag, "W/"), `"`+computedETagPrefix)
}

// hasValidators reports whether a response carries the upstream's own
// validators, so that it can be revalidated once stale.
func hasValidators(h http.Header) bool {
	etag := h.Get("Etag")
	return (etag != "" && !computedETag(etag)) || h.Get("Last-Modified") != ""
}

// revalidation decodes a stale stored response and reports whether it can
// be revalidated.
func revalidation(stale []byte) (entry.Response, bool) {
	if stale == nil {
		return entry.Response{}, false
	}
	old, err := entry.DecodeResponse(stale)
	if err != nil || old.Status != http.StatusOK || !hasValidators(old.Header) {
		return entry.Response{}, false
	}
	return old, true
}

// keptOn304 are stored header fields a 304 does not replace: they
// describe the stored representation's bytes, which the 304 did not send.
var keptOn304 = []string{"Content-Length", "Content-Encoding", "Content-Md5", "Content-Range", "Etag"}

// freshen updates a stored response with the header fields of the 304
// that validated it (RFC 9111, section 4.3.4).
func freshen(old entry.Response, h http.Header) entry.Response {
	for k, v := range h {
		if !slices.Contains(keptOn304, k) && !slices.Contains(unstoredHeaders, k) {
			old.Header[k] = v
		}
	}
	return old
}

// notModified reports whether r's conditional headers match the stored
// response, so that a 304 may answer it (RFC 9110, section 13.2.2).
func notModified(r *http.Request, resp entry.Response) bool {
	if resp.Status != http.StatusOK {
		return false
	}
	if inm := r.Header["If-None-Match"]; len(inm) > 0 {
		etag := headerValue(resp.Header, "Etag")
		for _, v := range inm {
			for tag := range strings.SplitSeq(v, ",") {
				tag = strings.TrimSpace(tag)
				if tag == "*" || (etag != "" && weakEqual(tag, etag)) {
					return true
				}
			}
		}
		return false // If-Modified-Since is ignored when If-None-Match is sent
	}
	since := headerValue(r.Header, "If-Modified-Since")
	if since == "" {
		return false // most requests: no parse, no error value made
	}
	ims, err := http.ParseTime(since)
	if err != nil {
		return false
	}
	lm, err := http.ParseTime(headerValue(resp.Header, "Last-Modified"))
	if err != nil {
		return false
	}
	return !lm.After(ims)
}

func weakEqual(a, b string) bool {
	return strings.TrimPrefix(a, "W/") == strings.TrimPrefix(b, "W/")
}

// notModifiedHeaders are the stored header fields a 304 repeats
// (RFC 9110, section 15.4.5), in canonical form.
var notModifiedHeaders = []string{"Cache-Control", "Content-Location", "Date", "Etag", "Expires", "Last-Modified", "Vary"}

// conditionalHeaders are stripped from the request that fills the cache,
// so that it stores the full response every request may be served.
var conditionalHeaders = []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range"}

// headerValue is h.Get(name) for a name already in canonical form: the
// hit path reads request and stored headers this way, without
// canonicalising constant names again on every request.
func headerValue(h http.Header, name string) string {
	if vs := h[name]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}
