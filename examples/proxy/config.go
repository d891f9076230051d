package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
)

// config is what the command line and the environment decide.
type config struct {
	listen   string
	upstream *url.URL
	// publicHost is sent to the upstream as X-Forwarded-Host; "" sends
	// none. Never the client's Host: see newHandler.
	publicHost string
	// purgeToken enables the purge endpoint; "" disables it.
	purgeToken string
	// cacheErrors lets error responses with explicit freshness be
	// stored, as RFC 9111 allows and as this proxy did before.
	cacheErrors bool

	// redis is the shared store's client options: exactly one of single
	// and cluster is set, or neither for the in-process memory store.
	redis redisConfig
	// namespace prefixes every key the proxy writes to Redis.
	namespace string
	// localTier is the size in bytes of the in-process tier in front of
	// Redis; 0 means none.
	localTier int64
	// maxBody is the largest response body stored; larger ones are
	// passed through uncached.
	maxBody int64

	// dialTimeout bounds connecting to the upstream, headerTimeout waiting
	// for its response header once the request is sent, and timeout the
	// whole exchange, body included (and a fill, see core.WithFetchTimeout).
	dialTimeout, headerTimeout, timeout time.Duration

	// earlyRefresh is core.EarlyRefresh's factor, 0 for off; ttlJitter
	// core.TTLJitter's fraction, 0 for none.
	earlyRefresh, ttlJitter float64
}

// redisConfig is the Redis the proxy caches in.
type redisConfig struct {
	single  *redis.Options        // one server (or a redis:// / rediss:// URL)
	cluster *redis.ClusterOptions // a Redis Cluster, from its seed addresses
}

// describe names the store without its credentials.
func (r redisConfig) describe() string {
	tls := func(on bool) string {
		if on {
			return " (TLS)"
		}
		return ""
	}
	switch {
	case r.single != nil:
		return "Redis at " + r.single.Addr + tls(r.single.TLSConfig != nil)
	case r.cluster != nil:
		return "Redis Cluster at " + strings.Join(r.cluster.Addrs, ",") + tls(r.cluster.TLSConfig != nil)
	}
	return "in-process memory store (no -redis or -redis-cluster given)"
}

// client returns a client for r, nil for the memory store.
func (r redisConfig) client() redis.UniversalClient {
	switch {
	case r.single != nil:
		return redis.NewClient(r.single)
	case r.cluster != nil:
		return redis.NewClusterClient(r.cluster)
	}
	return nil
}

// Defaults of the flags that have one.
const (
	defaultListen        = "127.0.0.1:8090"
	defaultNamespace     = "flightcache-proxy"
	defaultDialTimeout   = 5 * time.Second
	defaultHeaderTimeout = 30 * time.Second
	defaultTimeout       = 30 * time.Second
)

// envOf maps each flag that can come from the environment to its variable.
// A flag given on the command line wins over its variable.
var envOf = map[string]string{
	"listen":                  "FLIGHTCACHE_LISTEN",
	"upstream":                "FLIGHTCACHE_UPSTREAM",
	"redis":                   "REDIS_URL",
	"redis-cluster":           "FLIGHTCACHE_REDIS_CLUSTER",
	"namespace":               "FLIGHTCACHE_NAMESPACE",
	"local-tier":              "FLIGHTCACHE_LOCAL_TIER",
	"max-body":                "FLIGHTCACHE_MAX_BODY",
	"upstream-dial-timeout":   "FLIGHTCACHE_UPSTREAM_DIAL_TIMEOUT",
	"upstream-header-timeout": "FLIGHTCACHE_UPSTREAM_HEADER_TIMEOUT",
	"upstream-timeout":        "FLIGHTCACHE_UPSTREAM_TIMEOUT",
	"early-refresh":           "FLIGHTCACHE_EARLY_REFRESH",
	"ttl-jitter":              "FLIGHTCACHE_TTL_JITTER",
	"public-host":             "FLIGHTCACHE_PUBLIC_HOST",
	"purge-token":             "FLIGHTCACHE_PURGE_TOKEN",
}

// passwordEnv holds the Redis password when the URL carries none, so that
// it need not appear on the command line (which other users of the machine
// can read in the process list).
const passwordEnv = "REDIS_PASSWORD"

const usageHeader = `Usage: proxy -upstream URL [flags]

A caching reverse proxy in front of one upstream, as a shared HTTP cache
that honours the upstream's Cache-Control. Several instances sharing one
Redis (or Redis Cluster) and namespace call the upstream once per URL
between them. Without -redis or -redis-cluster it caches in memory.

Flags (a flag given wins over its environment variable):
`

const usageFooter = `
Redis:
  -redis takes host:port or a URL: redis://[user:password@]host:port[/db]
  for plain TCP, rediss://… for TLS (the server's certificate is checked
  against the system roots). -redis-cluster takes comma-separated seed
  addresses (host:port,host:port) or one URL with the others as
  ?addr=host:port parameters (rediss:// for TLS). $REDIS_PASSWORD sets the
  password when the URL has none, keeping it off the command line.

Sizes take a plain byte count or a KiB, MiB or GiB suffix (64MiB).
`

// parseConfig reads the command line args (without the program name) and
// the environment through getenv. Help output and flag errors go to out.
// It returns flag.ErrHelp for -h.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (config, error) {
	cfg := config{maxBody: core.DefaultMaxBodySize}
	var upstream, redisURL, cluster string
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.listen, "listen", defaultListen, "address to serve on")
	fs.StringVar(&upstream, "upstream", "", "URL of the origin server (required)")
	fs.StringVar(&redisURL, "redis", "", "Redis host:port or redis:// or rediss:// URL (none: the in-process memory store)")
	fs.StringVar(&cluster, "redis-cluster", "", "Redis Cluster seed addresses, comma-separated, or a cluster URL")
	fs.StringVar(&cfg.namespace, "namespace", defaultNamespace, "prefix of every key in Redis: 1 to 64 of [A-Za-z0-9_.:-]; give each upstream its own")
	fs.Var((*byteSize)(&cfg.localTier), "local-tier", "size of the in-process tier in front of Redis, 0 for none (needs -redis or -redis-cluster)")
	fs.Var((*byteSize)(&cfg.maxBody), "max-body", "largest response body stored; a larger one is passed through uncached")
	fs.DurationVar(&cfg.dialTimeout, "upstream-dial-timeout", defaultDialTimeout, "bound on connecting to the upstream")
	fs.DurationVar(&cfg.headerTimeout, "upstream-header-timeout", defaultHeaderTimeout, "bound on waiting for the upstream's response header")
	fs.DurationVar(&cfg.timeout, "upstream-timeout", defaultTimeout, "bound on a whole upstream exchange, body included; past it the client gets 504")
	fs.Float64Var(&cfg.earlyRefresh, "early-refresh", 0, "refresh hot entries in the background before they expire, within this many times their measured fetch time plus 100 ms (core.EarlyRefresh; 0: off, 2 is a good start)")
	fs.Float64Var(&cfg.ttlJitter, "ttl-jitter", 0, "shorten each stored response's lifetime by a random part of up to this fraction, below 1 (core.TTLJitter; 0: none)")
	fs.StringVar(&cfg.publicHost, "public-host", "", "host[:port] to send upstream as X-Forwarded-Host (default: send none; never the client's Host)")
	fs.StringVar(&cfg.purgeToken, "purge-token", "", "bearer token that enables PURGE (none: purging is disabled)")
	fs.BoolVar(&cfg.cacheErrors, "cache-errors", false, "store error responses (4xx but 404 and 410, and 5xx) that state their freshness")
	fs.Usage = func() {
		fmt.Fprint(out, usageHeader)
		fs.VisitAll(func(f *flag.Flag) {
			if env := envOf[f.Name]; env != "" {
				f.Usage += " [$" + env + "]"
			}
		})
		fs.PrintDefaults()
		fmt.Fprint(out, usageFooter)
	}
	for name, env := range envOf {
		if v := getenv(env); v != "" {
			if err := fs.Set(name, v); err != nil {
				return config{}, fmt.Errorf("$%s: %v", env, err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q: every setting is a flag", fs.Arg(0))
	}

	u, err := url.Parse(upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return config{}, errors.New("-upstream must be an absolute http or https URL such as http://127.0.0.1:8000")
	}
	cfg.upstream = u
	if cfg.redis, err = parseRedis(redisURL, cluster, getenv(passwordEnv)); err != nil {
		return config{}, err
	}
	if err := checkNamespace(cfg.namespace); err != nil {
		return config{}, err
	}
	switch {
	case cfg.localTier > 0 && cfg.redis.single == nil && cfg.redis.cluster == nil:
		return config{}, errors.New("-local-tier needs -redis or -redis-cluster: the memory store is local already")
	case cfg.maxBody <= 0:
		return config{}, errors.New("-max-body must be positive")
	case cfg.maxBody > maxMaxBody:
		return config{}, fmt.Errorf("-max-body %d: at most %d (512 MiB); larger responses pass through uncached anyway", cfg.maxBody, maxMaxBody)
	case cfg.earlyRefresh < 0 || cfg.ttlJitter < 0 || cfg.ttlJitter >= 1:
		return config{}, errors.New("-early-refresh must be at least 0, -ttl-jitter at least 0 and below 1")
	case cfg.dialTimeout <= 0 || cfg.headerTimeout <= 0 || cfg.timeout <= 0:
		return config{}, errors.New("-upstream-dial-timeout, -upstream-header-timeout and -upstream-timeout must be positive")
	case strings.ContainsAny(cfg.purgeToken, " \t\r\n"):
		return config{}, errors.New("the purge token must not contain white space")
	case strings.ContainsAny(cfg.publicHost, "/ \t\r\n"):
		return config{}, errors.New("-public-host must be a host name with an optional port, such as www.example.com")
	}
	return cfg, nil
}

// maxMaxBody bounds -max-body: every stored body is held in memory whole,
// by each request that fills or reads it.
const maxMaxBody = 512 << 20

// parseRedis reads -redis and -redis-cluster (at most one of them) into
// client options, with password as the password when they carry none.
func parseRedis(single, cluster, password string) (redisConfig, error) {
	var r redisConfig
	switch {
	case single != "" && cluster != "":
		return r, errors.New("give -redis or -redis-cluster, not both")
	case single != "":
		opt := &redis.Options{Addr: single}
		if strings.Contains(single, "://") {
			var err error
			if opt, err = redis.ParseURL(single); err != nil {
				return r, fmt.Errorf("-redis: %v (want host:port, redis://[user:password@]host:port[/db] or rediss://…)", redactErr(err, single))
			}
		} else if err := checkHostPort(single); err != nil {
			return r, fmt.Errorf("-redis %q: %v", single, err)
		}
		if opt.Password == "" {
			opt.Password = password
		}
		// The cache bounds every Redis call with a short context timeout;
		// go-redis honours it only with this option.
		opt.ContextTimeoutEnabled = true
		r.single = opt
	case cluster != "":
		opt := &redis.ClusterOptions{}
		if strings.Contains(cluster, "://") {
			var err error
			if opt, err = redis.ParseClusterURL(cluster); err != nil {
				return r, fmt.Errorf("-redis-cluster: %v (want host:port,host:port or redis://[user:password@]host:port?addr=host:port)", redactErr(err, cluster))
			}
		} else {
			for a := range strings.SplitSeq(cluster, ",") {
				a = strings.TrimSpace(a)
				if err := checkHostPort(a); err != nil {
					return r, fmt.Errorf("-redis-cluster: address %q: %v", a, err)
				}
				opt.Addrs = append(opt.Addrs, a)
			}
		}
		if opt.Password == "" {
			opt.Password = password
		}
		opt.ContextTimeoutEnabled = true
		r.cluster = opt
	}
	return r, nil
}

// redactErr returns err's text with the password in rawURL, if any,
// replaced, as go-redis quotes the URL in some of its errors. It reads
// the user information by hand: the URL may be too broken to parse.
func redactErr(err error, rawURL string) string {
	msg := err.Error()
	_, rest, ok := strings.Cut(rawURL, "://")
	if at := strings.LastIndexByte(rest, '@'); ok && at >= 0 {
		if _, pw, ok := strings.Cut(rest[:at], ":"); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

// checkHostPort reports an address that is not host:port.
func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return errors.New("want host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return errors.New("want a port from 1 to 65535")
	}
	return nil
}

// checkNamespace applies core's rule for namespaces, which core enforces
// with a panic (a programmer's error there, a user's here).
func checkNamespace(ns string) (err error) {
	defer func() {
		if recover() != nil {
			err = fmt.Errorf("-namespace %q: want 1 to 64 characters from [A-Za-z0-9_.:-] (no braces: they would move keys between Redis Cluster slots)", ns)
		}
	}()
	core.WithNamespace(ns)
	return nil
}

// byteSize is a flag.Value for a size in bytes: a plain count or one with
// a KiB, MiB or GiB suffix.
type byteSize int64

func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(s string) error {
	num, shift := s, uint(0)
	for suffix, sh := range map[string]uint{"KiB": 10, "MiB": 20, "GiB": 30} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			num, shift = n, sh
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > (1<<40)>>shift {
		return fmt.Errorf("want a size such as 1048576, 512KiB or 64MiB")
	}
	*b = byteSize(n << shift)
	return nil
}
