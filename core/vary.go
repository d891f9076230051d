package core

import (
	"context"
	"crypto/rand"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/flightcache/flightcache/core/internal/entry"
)

// Responses that vary (RFC 9111, section 4.1). A response whose Vary
// names request headers the route's key leaves out is stored under a
// variant key: the URL's key plus the values this request sent for those
// headers. The URL's key then holds a variant index naming the headers,
// so that a lookup finds the index, computes its own variant key, and
// looks again: a hit on a varying URL costs two store round trips, one on
// any other URL one. Requests for different variants thus never share a
// stored response, nor a fill: they wait on different keys.
//
// The index carries a random generation that is part of every variant's
// key. Deleting the index (an unsafe request to the URL, see
// [Middleware.Serve]) therefore retires all its variants in every process at
// once; they are left to expire.

// VariantIndexTTL caps how long the index of a varying URL's variants
// stays in the store. An index lives as long as the first variant it was
// made for is kept (its freshness plus the time kept for revalidation or
// stale serving), at most this long: indexes are bounded by the entries
// they index, so junk queries cannot fill the store with long-lived
// indexes. Once an index is gone, the next request starts a new one,
// retiring the variants of the old.
const VariantIndexTTL = 24 * time.Hour

// variedOn returns the request header names in h's Vary that the route's
// key leaves out, canonical, sorted and without duplicates.
func (p *policy) variedOn(h http.Header) []string {
	var names []string
	for _, v := range h.Values("Vary") {
		for name := range strings.SplitSeq(v, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if name == "" || name == "*" || slices.Contains(p.headerKeys, name) || slices.Contains(keyedHeaders, name) {
				continue
			}
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// varyAll reports whether h says Vary: *, a response that depends on
// more than the request's header fields and that is never reused.
func varyAll(h http.Header) bool {
	for _, v := range h.Values("Vary") {
		for name := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(name) == "*" {
				return true
			}
		}
	}
	return false
}

// variantKey is the key of r's variant of the URL whose key is ukey: ukey
// followed by the index's generation and, framed like the rest of the key,
// each header the index names with every field line r sent for it, exactly
// as received, or a mark that it is absent: a header sent empty and one
// not sent are different variants.
//
// The lines are not normalised (no joining of lines, no dropping of empty
// list members or whitespace): a handler reads what it was sent, usually
// with Header.Get, which sees the first line alone. Two requests whose
// values differ only in ways a normaliser would remove ("fr" and ", fr",
// or the lines "", "fr" and the line "fr") may get different answers from
// the handler, and one must not be served the other's. Equivalent
// spellings ("gzip, br" and "gzip,br") thus get variants of their own:
// more fills, never a wrong answer.
func variantKey(ukey string, v entry.Variants, r *http.Request) string {
	return string(appendVariantKey(make([]byte, 0, len(ukey)+64), ukey, v, r))
}

// variantStoreKey is the store key of variantKey(ukey, v, r).
func (c *Cache) variantStoreKey(ukey string, v entry.Variants, r *http.Request) string {
	var buf [384]byte
	_, key := c.keys.keys(c.cfg.namespace, appendVariantKey(buf[:0], ukey, v, r))
	return key
}

// appendVariantKey is variantKey appending the key to b.
func appendVariantKey(b []byte, ukey string, v entry.Variants, r *http.Request) []byte {
	b = append(b, ukey...)
	b = appendField(b, "vary")
	b = appendField(b, v.Generation)
	for _, name := range v.Names {
		b = appendField(b, name)
		vs := r.Header[name] // names in canonical form, see variedOn
		if len(vs) == 0 {
			b = append(b, '-') // absent
			continue
		}
		b = appendCount(append(b, '+'), len(vs))
		for _, line := range vs {
			b = appendField(b, line)
		}
	}
	return b
}

// subset reports whether every name in a is in b; both are sorted.
func subset(a, b []string) bool {
	for _, name := range a {
		if _, found := slices.BinarySearch(b, name); !found {
			return false
		}
	}
	return true
}

// newGeneration returns a random variant index generation.
func newGeneration() string { return rand.Text()[:16] }

// variants decodes the variant index stored at key. An index it cannot
// read is reported and deleted, so that the next request starts a new one.
func (c *Cache) variants(ctx context.Context, key string, value []byte) (entry.Variants, bool) {
	v, err := entry.DecodeVariants(value)
	if err != nil {
		c.report(ctx, OpDecode, key, err)
		c.dropIndex(ctx, key)
		return entry.Variants{}, false
	}
	return v, true
}

// dropIndex invalidates the variant index at key, retiring its variants.
func (c *Cache) dropIndex(ctx context.Context, key string) {
	c.invalidated(ctx, InvalidatedByVaryChange, c.invalidate(ctx, key, false))
}
