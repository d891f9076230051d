package core

import (
	"crypto/sha256"
	"encoding/base64"
	"hash/maphash"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flightcache/flightcache/core/internal/entry"
)

// storeKey maps a caller's key to the key the store sees:
// "<namespace>:{<hash>}", where hash is the first 128 bits of the key's
// SHA-256 in unpadded base64url (22 characters). The store derives the
// key's lock and channel names from it by adding suffixes, and the braces
// make all of them one Redis Cluster hash tag, hence one slot. Hashing
// bounds the length and keeps raw user bytes out of Redis key names.
func storeKey(namespace, key string) string {
	sum := sha256.Sum256([]byte(key))
	var buf [128]byte // on the stack for namespaces up to 102 bytes
	b := append(buf[:0], namespace...)
	b = append(b, ':', '{')
	b = base64.RawURLEncoding.AppendEncode(b, sum[:16])
	b = append(b, '}')
	return string(b)
}

// keyMemo remembers the store keys of recently derived cache keys, so
// that a request for a hot URL costs neither a SHA-256 nor an allocation
// for its keys: a hit from the local tier is then a few map lookups. It
// is direct-mapped (a key's slot is a hash of it; a new key takes the
// slot over) and bounded by its slot count. The zero value is ready to
// use, and it is safe for concurrent use.
type keyMemo struct {
	once  sync.Once
	seed  maphash.Seed
	slots *[keyMemoSlots]atomic.Pointer[memoKeys]
}

// keyMemoSlots is the number of keys the memo holds at most.
const keyMemoSlots = 4096

// memoKeys is a cache key and its store key.
type memoKeys struct {
	ukey, skey string
	// local is the local tier's entry for skey as the last lookup
	// through the memo found it, served again without asking the tier
	// while it stands (see localTier.lookupMemo).
	local atomic.Pointer[memoEntry]
	// last is when the key was last requested in this process (Unix
	// ns, 0: never), gap the moving average of the time between its
	// requests (0: unknown), for early refresh (see arrived). Concurrent
	// requests may lose each other's updates: it is an estimate, and a
	// slot taken over by another key starts it afresh.
	last, gap atomic.Int64
}

// keys returns the cache key spelt by b and its store key under
// namespace (see storeKey). Neither aliases b.
func (m *keyMemo) keys(namespace string, b []byte) (ukey, skey string) {
	k := m.memoKeys(namespace, b)
	return k.ukey, k.skey
}

// memoKeys is keys returning the memo's record of them.
func (m *keyMemo) memoKeys(namespace string, b []byte) *memoKeys {
	m.once.Do(func() {
		m.seed = maphash.MakeSeed()
		m.slots = new([keyMemoSlots]atomic.Pointer[memoKeys])
	})
	slot := &m.slots[maphash.Bytes(m.seed, b)%keyMemoSlots]
	if k := slot.Load(); k != nil && k.ukey == string(b) {
		return k
	}
	ukey := string(b)
	k := &memoKeys{ukey: ukey, skey: storeKey(namespace, ukey)}
	slot.Store(k)
	return k
}

// arrivalWeight is the weight of the latest gap between two requests in
// memoKeys.gap's moving average, as a shift: 1/8.
const arrivalWeight = 3

// arrived notes a request for k at now, and returns the average time
// between its requests in this process so far (0: unknown yet). Early
// refresh sizes a sparse key's refresh window with it (see
// refreshWindow). It takes no lock and allocates nothing.
func (k *memoKeys) arrived(now time.Time) time.Duration {
	t := now.UnixNano()
	prev := k.last.Swap(t)
	if prev == 0 || t <= prev {
		return time.Duration(k.gap.Load())
	}
	d, g := t-prev, k.gap.Load()
	if g == 0 {
		g = d
	} else {
		g += (d - g) >> arrivalWeight
	}
	k.gap.Store(g)
	return time.Duration(g)
}

// requestKey returns r's cache key under p, or false when r must bypass
// the cache. The key frames every part with its length, so no choice of
// path, parameter or header bytes can make two different requests' keys
// equal.
func (p *policy) requestKey(r *http.Request) (string, bool) {
	b, ok := p.appendRequestKey(make([]byte, 0, 128), r, scanRequestHeaders(r.Header))
	return string(b), ok
}

// appendRequestKey is requestKey appending the key to b; hs are r's
// headers as scanRequestHeaders found them.
func (p *policy) appendRequestKey(b []byte, r *http.Request, hs requestHeaders) ([]byte, bool) {
	if p.noCache || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return b, false
	}
	if p.skip != nil && p.skip(r) {
		return b, false
	}
	if hs&hasUpgrade != 0 && headerValue(r.Header, "Upgrade") != "" {
		return b, false
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return b, false // a "fat GET": its body is not in the key
	}
	if hs&hasBypass != 0 {
		for _, name := range bypassHeaders {
			if _, ok := r.Header[name]; ok && !slices.Contains(p.headerKeys, name) {
				return b, false
			}
		}
	}
	return p.appendURLKey(b, r, hs)
}

// requestHeaders records which request headers that the key and the hit
// path look at are present: one pass over a request's few headers
// instead of a map lookup for each of the names below on every request.
type requestHeaders uint8

const (
	hasUpgrade       requestHeaders = 1 << iota
	hasBypass                       // one of bypassHeaders
	hasKeyed                        // one of keyedHeaders
	hasAuthorization                // see credentialed
	hasRange
)

// headerClasses maps each header name scanRequestHeaders looks for to its
// flag, built from the lists themselves so that they cannot drift apart.
var headerClasses = func() map[string]requestHeaders {
	m := map[string]requestHeaders{"Upgrade": hasUpgrade, "Authorization": hasAuthorization, "Range": hasRange}
	for _, name := range bypassHeaders {
		m[name] = hasBypass
	}
	for _, name := range keyedHeaders {
		m[name] = hasKeyed
	}
	return m
}()

// scanRequestHeaders returns the flags of the names in h (canonical, as
// the server parsed them; the lookups it replaces were canonical too).
func scanRequestHeaders(h http.Header) requestHeaders {
	var hs requestHeaders
	if len(h) <= len(headerClasses) {
		for name := range h {
			hs |= headerClasses[name]
		}
		return hs
	}
	for name, class := range headerClasses { // many headers: look the few up
		if _, ok := h[name]; ok {
			hs |= class
		}
	}
	return hs
}

// bypassHeaders are request headers that make a request bypass the cache
// unless the route keys on them (KeyHeaders): cookies, whose responses are
// personal, and headers that override the host, URL or method a handler
// sees, which an attacker would send to get a response built from them
// stored for everyone (cache poisoning). Forwarded is among them because
// it can carry host= and proto=. Authorization is not: see credentialed.
// The list is documented to users on KeyHeaders and in doc.go; keep those
// in step with it.
var bypassHeaders = []string{
	"Cookie",
	"Forwarded", "X-Forwarded-Host", "X-Host", "X-Forwarded-Server", "X-Original-Url", "X-Rewrite-Url",
	"X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
}

// credentialed reports whether r carries credentials the route's key
// leaves out: then only responses that say they may be shared with such
// requests are served to it or stored from it (RFC 9111, section 3.5).
func (p *policy) credentialed(r *http.Request, hs requestHeaders) bool {
	if hs&hasAuthorization != 0 && !slices.Contains(p.headerKeys, "Authorization") {
		return true
	}
	for _, name := range p.credentialHeaders {
		if _, ok := r.Header[name]; ok && !slices.Contains(p.headerKeys, name) {
			return true
		}
	}
	return false
}

// keyedHeaders are request headers that are always part of the key: a
// proxy in front sets them the same way for every client, so clean
// requests still share entries, while a client that forges one gets an
// entry of its own instead of poisoning the shared one. Documented on
// KeyHeaders and in doc.go.
var keyedHeaders = []string{"X-Forwarded-Proto", "X-Forwarded-Scheme", "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Ssl"}

// urlKey is the key of a GET for r's URL, whatever r's method: the entry
// a request for that URL would be served.
func (p *policy) urlKey(r *http.Request) (string, bool) {
	b, ok := p.appendURLKey(make([]byte, 0, 128), r, scanRequestHeaders(r.Header))
	return string(b), ok
}

// appendURLKey is urlKey appending the key to b; hs are r's headers as
// scanRequestHeaders found them.
func (p *policy) appendURLKey(b []byte, r *http.Request, hs requestHeaders) ([]byte, bool) {
	// appendField(appendField(b, "http1"), "GET"): HEAD shares GET's entry.
	b = append(b, "#5:http1#3:GET"...)
	if p.keyFunc != nil {
		b = appendField(b, "func")
		b = appendField(b, p.keyFunc(r))
	} else {
		if r.TLS != nil {
			b = append(b, "#5:https"...) // appendField(b, "https")
		} else {
			b = append(b, "#4:http"...)
		}
		if p.fixedHost {
			b = appendField(b, p.host)
		} else {
			b = appendField(b, strings.ToLower(r.Host))
		}
		b = appendField(b, r.URL.EscapedPath())
		var q url.Values // most hits: no query, nothing parsed
		if r.URL.RawQuery != "" {
			var err error
			if q, err = url.ParseQuery(r.URL.RawQuery); err != nil {
				return b, false // a query the handler may read differently than we do
			}
		}
		var names []string
		if len(q) > 0 {
			names = make([]string, 0, len(q))
			for name := range q {
				if (p.queryKeys == nil || slices.Contains(p.queryKeys, name)) && !slices.Contains(p.ignoreQuery, name) {
					names = append(names, name)
				}
			}
			slices.Sort(names)
		}
		b = appendCount(b, len(names))
		for _, name := range names {
			b = appendField(b, name)
			b = appendCount(b, len(q[name]))
			for _, v := range q[name] {
				b = appendField(b, v)
			}
		}
	}
	for _, name := range keyedHeaders {
		if hs&hasKeyed == 0 {
			break
		}
		if vs := r.Header[name]; len(vs) > 0 { // names in canonical form
			b = appendField(b, name)
			b = appendCount(b, len(vs))
			for _, v := range vs {
				b = appendField(b, v)
			}
		}
	}
	for _, name := range p.headerKeys {
		vs := r.Header[name] // canonical, see KeyHeaders
		b = appendField(b, name)
		b = appendCount(b, len(vs))
		for _, v := range vs {
			b = appendField(b, v)
		}
	}
	return b, true
}

func appendCount(b []byte, n int) []byte {
	if n >= 0 && n < 100 { // most counts: no strconv on the hit path
		if n >= 10 {
			return append(b, '#', byte('0'+n/10), byte('0'+n%10))
		}
		return append(b, '#', byte('0'+n))
	}
	return strconv.AppendInt(append(b, '#'), int64(n), 10)
}

func appendField(b []byte, s string) []byte {
	b = appendCount(b, len(s))
	return append(append(b, ':'), s...)
}

// Tag keys: a tag's purge counter lives at "<namespace>:#{<hash>}", hash
// being the tag's ID (the first 128 bits of its SHA-256) in unpadded
// base64url, and the namespace's purge epoch at "<namespace>:#epoch". No
// namespace contains '#', so neither can be another cache's key.
func tagID(tag string) [entry.TagIDSize]byte {
	sum := sha256.Sum256([]byte(tag))
	return [entry.TagIDSize]byte(sum[:entry.TagIDSize])
}

func tagKey(namespace string, id [entry.TagIDSize]byte) string {
	var buf [128]byte
	b := append(buf[:0], namespace...)
	b = append(b, ":#{"...)
	b = base64.RawURLEncoding.AppendEncode(b, id[:])
	b = append(b, '}')
	return string(b)
}

func epochKey(namespace string) string { return namespace + ":#epoch" }

// Bounds on tags: a response or value with more tags, or a longer one, is
// not stored, because a purge could not be relied on to reach it.
const (
	MaxTags      = entry.MaxTags // tags one response or value may carry
	MaxTagLength = 128           // bytes in one tag
)

// validTag reports whether tag is 1 to MaxTagLength bytes of printable
// ASCII without spaces.
func validTag(tag string) bool {
	if tag == "" || len(tag) > MaxTagLength {
		return false
	}
	for i := 0; i < len(tag); i++ {
		if tag[i] <= ' ' || tag[i] > '~' {
			return false
		}
	}
	return true
}

// tagSet turns tags into entry tags, without duplicates and in the order
// given. It returns false when a tag is invalid or there are more than
// MaxTags distinct ones.
func tagSet(tags []string) ([]entry.Tag, bool) {
	var b tagBuilder
	for _, t := range tags {
		b.add(t)
	}
	return b.set, !b.bad
}

// tagBuilder collects tags without duplicates, bounded: it notes the
// first invalid tag, or the first distinct one past MaxTags, and takes
// nothing more.
type tagBuilder struct {
	set []entry.Tag
	bad bool
}

func (b *tagBuilder) add(tag string) {
	if b.bad {
		return
	}
	if !validTag(tag) {
		b.bad = true
		return
	}
	id := tagID(tag)
	if slices.ContainsFunc(b.set, func(e entry.Tag) bool { return e.ID == id }) {
		return
	}
	if len(b.set) == MaxTags {
		b.bad = true
		return
	}
	b.set = append(b.set, entry.Tag{ID: id})
}
