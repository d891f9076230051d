package core

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// PurgeOption configures [Cache.Purge] and [Cache.PurgeURL].
type PurgeOption interface {
	applyPurge(*purgeConfig)
}

type purgeConfig struct {
	soft   bool
	keying []PolicyOption
}

type purgeOptionFunc func(*purgeConfig)

func (f purgeOptionFunc) applyPurge(c *purgeConfig) { f(c) }

// Soft makes a purge mark the stored entry stale instead of removing it:
// requests that may be served stale ([StaleWhileRevalidate], or the
// response's own stale-while-revalidate) are, while one refresh per fleet
// fetches the new version; every other request waits for that refresh. A
// soft-purged entry is kept at most an hour past its freshness. Where
// there is no entry to keep, or the URL's responses vary (its variants are
// keyed by a generation the refresh replaces), or the entry carries tags
// (see [Cache.PurgeTags]), a soft purge is a hard one.
func Soft() PurgeOption { return purgeOptionFunc(func(c *purgeConfig) { c.soft = true }) }

// KeyedAs tells [Cache.PurgeURL] the key options of the route that serves
// the URL ([KeyQuery], [IgnoreQuery], [KeyFunc], ...), when its
// middleware was given any beyond the cache's defaults: the purge derives
// the URL's key the same way the route does.
func KeyedAs(opts ...PolicyOption) PurgeOption {
	return purgeOptionFunc(func(c *purgeConfig) { c.keying = append(c.keying, opts...) })
}

// Purge invalidates the value [Cache.Do] stores for key, in every process
// sharing the store: once Purge returns nil, no call that starts
// afterwards, anywhere, is served the old value, nor a value whose fetch
// began before the purge (such a fill's commit is refused; its own
// callers, who asked before, still get it). Purging a key that holds
// nothing is not an error: it still fences off fills in flight.
//
// Purge returns an error when the store cannot be reached: then nothing
// is promised, and the caller should retry or report it. It runs on a
// context detached from ctx, bounded by [WithStoreTimeout].
func (c *Cache) Purge(ctx context.Context, key string, opts ...PurgeOption) error {
	var pc purgeConfig
	for _, o := range opts {
		o.applyPurge(&pc)
	}
	err := c.invalidate(ctx, storeKey(c.cfg.namespace, key), pc.soft)
	c.invalidated(ctx, InvalidatedByPurge, err)
	if err != nil {
		return fmt.Errorf("flightcache: purge: %w", err)
	}
	return nil
}

// PurgeURL invalidates the stored response of a GET for rawURL (an
// absolute URL, with the host clients use) and every variant of it
// stored for a Vary header, in every process sharing the store, with
// [Cache.Purge]'s guarantee. Call it after changing what the URL shows.
//
// The URL's key is derived as the middleware derives it, under the
// cache's default policy and the options given with [KeyedAs]. Entries
// keyed on request headers ([KeyHeaders], or the X-Forwarded-Proto family
// a proxy sets) are other keys: purge those with tags or unsafe requests.
func (c *Cache) PurgeURL(ctx context.Context, rawURL string, opts ...PurgeOption) error {
	var pc purgeConfig
	for _, o := range opts {
		o.applyPurge(&pc)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("flightcache: purge url: %w", err)
	}
	if !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("flightcache: purge url: %q is not an absolute URL", rawURL)
	}
	p := c.cfg.policy
	for _, o := range pc.keying {
		o.route(&p)
	}
	r := &http.Request{Method: http.MethodGet, URL: u, Host: u.Host, Header: http.Header{}}
	if u.Scheme == "https" {
		r.TLS = &tls.ConnectionState{}
	}
	key, ok := p.urlKey(r)
	if !ok {
		return fmt.Errorf("flightcache: purge url: the query of %q cannot be keyed", rawURL)
	}
	err = c.invalidate(ctx, storeKey(c.cfg.namespace, key), pc.soft)
	c.invalidated(ctx, InvalidatedByPurgeURL, err)
	if err != nil {
		return fmt.Errorf("flightcache: purge url: %w", err)
	}
	return nil
}

// PurgeTags invalidates every value and response carrying any of tags
// (see [WithTagHeader], [Tags] and [Cache.DoTagged]), in every process
// sharing the store: once PurgeTags returns nil, no request or call that
// starts afterwards, anywhere, is served a value carrying one of the tags
// whose fill began before the purge. Fills in flight that produce such a
// value have their commit refused; their own callers, who asked before,
// still get it.
//
// A tag purge is hard: there is no [Soft] tag purge, and purged entries
// are never served stale. It costs a constant number of store commands
// per tag whatever the number of entries carrying it: it raises the tag's
// purge version, and each later hit on a tagged entry compares its tags'
// versions with those recorded in the entry. Each tag ever purged leaves
// one small counter in the store, which does not expire. Purging a tag
// that nothing carries is not an error.
//
// PurgeTags returns an error wrapping [ErrInvalidTag] when a tag is
// invalid (empty, longer than [MaxTagLength] bytes, or not printable ASCII
// without spaces: no entry can carry it), before any store call, or when the store cannot be reached: then nothing is
// promised, and the caller should retry or report it. A store failure is
// also reported to the [Observer] as [OpInvalidate]. It runs on a context
// detached from ctx, bounded by [WithStoreTimeout].
func (c *Cache) PurgeTags(ctx context.Context, tags ...string) error {
	return c.purgeTags(ctx, tags)
}

// ErrInvalidTag is wrapped by the error [Cache.PurgeTags] returns for a
// tag no entry can carry: the caller's mistake, not the store's.
var ErrInvalidTag = errors.New("flightcache: invalid tag")

func (c *Cache) purgeTags(ctx context.Context, tags []string) error {
	keys := make([]string, 0, len(tags))
	for i, t := range tags {
		if !validTag(t) {
			return fmt.Errorf("flightcache: purge tags: tag %d: %w: want 1 to %d bytes of printable ASCII without spaces", i, ErrInvalidTag, MaxTagLength)
		}
		keys = append(keys, tagKey(c.cfg.namespace, tagID(t)))
	}
	if len(keys) == 0 {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
	defer cancel()
	err := c.store.PurgeTags(sctx, c.epochKey, keys)
	c.invalidated(ctx, InvalidatedByPurgeTags, err)
	if err != nil {
		c.report(ctx, OpInvalidate, c.epochKey, err)
		return fmt.Errorf("flightcache: purge tags: %w", err)
	}
	return nil
}
