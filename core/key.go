package core

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

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

// requestKey returns r's cache key under p, or false when r must bypass
// the cache. The key frames every part with its length, so no choice of
// path, parameter or header bytes can make two different requests' keys
// equal.
func (p *policy) requestKey(r *http.Request) (string, bool) {
	if p.noCache || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return "", false
	}
	if p.skip != nil && p.skip(r) {
		return "", false
	}
	if headerValue(r.Header, "Upgrade") != "" {
		return "", false
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return "", false // a "fat GET": its body is not in the key
	}
	for _, name := range bypassHeaders {
		if _, ok := r.Header[name]; ok && !slices.Contains(p.headerKeys, name) {
			return "", false
		}
	}
	return p.urlKey(r)
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
func (p *policy) credentialed(r *http.Request) bool {
	if _, ok := r.Header["Authorization"]; ok && !slices.Contains(p.headerKeys, "Authorization") {
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
	b := make([]byte, 0, 128)
	b = appendField(b, "http1")
	b = appendField(b, http.MethodGet) // HEAD shares GET's entry
	if p.keyFunc != nil {
		b = appendField(b, "func")
		b = appendField(b, p.keyFunc(r))
	} else {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		b = appendField(b, scheme)
		if p.fixedHost {
			b = appendField(b, p.host)
		} else {
			b = appendField(b, strings.ToLower(r.Host))
		}
		b = appendField(b, r.URL.EscapedPath())
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return "", false // a query the handler may read differently than we do
		}
		names := make([]string, 0, len(q))
		for name := range q {
			if (p.queryKeys == nil || slices.Contains(p.queryKeys, name)) && !slices.Contains(p.ignoreQuery, name) {
				names = append(names, name)
			}
		}
		slices.Sort(names)
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
	return string(b), true
}

func appendCount(b []byte, n int) []byte {
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
