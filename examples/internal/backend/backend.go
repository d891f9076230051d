// Package backend picks the store the example programs cache in: Redis
// when one is given, the in-process memory store otherwise.
package backend

import (
	"fmt"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
)

// Open returns a store on the Redis at addr ("host:port" or a redis:// URL;
// "" reads REDIS_URL), or the embedded memory store when neither is set,
// together with a description and a function releasing it.
func Open(addr string) (core.Store, string, func(), error) {
	if addr == "" {
		addr = os.Getenv("REDIS_URL")
	}
	if addr == "" {
		s := core.NewMemoryStore(0)
		return s, "in-process memory store (no -redis or REDIS_URL given)", func() { s.Close() }, nil
	}
	opt := &redis.Options{Addr: addr}
	if strings.Contains(addr, "://") {
		var err error
		if opt, err = redis.ParseURL(addr); err != nil {
			return nil, "", nil, fmt.Errorf("parse Redis URL: %w", err)
		}
	}
	// The cache bounds every Redis call with a short context timeout;
	// go-redis honours it only with this option.
	opt.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opt)
	s := core.NewRedisStore(rdb)
	return s, "Redis at " + opt.Addr, func() { s.Close(); rdb.Close() }, nil
}
