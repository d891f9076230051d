package core_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
)

// TestPipelinedReadsReturnEachKeysBytes reads many keys from many
// goroutines at once, so that reads share pipelines, and checks that every
// read got the bytes of its own key (values of different lengths, and keys
// that are missing), on one Redis and on a cluster.
func TestPipelinedReadsReturnEachKeysBytes(t *testing.T) {
	clients := map[string]func(t *testing.T) redis.UniversalClient{
		"redis":   func(t *testing.T) redis.UniversalClient { return newClient(t, realRedisAddr(t)) },
		"cluster": func(t *testing.T) redis.UniversalClient { return newClusterClient(t, clusterAddrs(t)) },
	}
	for name, open := range clients {
		t.Run(name, func(t *testing.T) {
			rdb := open(t)
			s := core.NewRedisStore(rdb)
			t.Cleanup(func() { s.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			prefix := fmt.Sprintf("pipelined-%d:", time.Now().UnixNano())
			const nkeys = 300
			value := func(i int) string {
				return fmt.Sprintf("%d=", i) + strings.Repeat(string(rune('a'+i%26)), i*7%2000)
			}
			for i := 0; i < nkeys; i++ {
				if i%10 == 9 {
					continue // missing
				}
				if err := rdb.Set(ctx, fmt.Sprint(prefix, i), value(i), time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
			}

			const readers, reads = 64, 200
			var wg sync.WaitGroup
			errs := make(chan error, readers)
			for r := 0; r < readers; r++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; j < reads; j++ {
						i := (r*31 + j*17) % nkeys
						b, err := s.Get(ctx, fmt.Sprint(prefix, i))
						if i%10 == 9 {
							if !errors.Is(err, core.ErrNotFound) {
								errs <- fmt.Errorf("key %d is missing: got %q, %v", i, b, err)
								return
							}
							continue
						}
						if err != nil || string(b) != value(i) {
							errs <- fmt.Errorf("key %d: got %.20q (%d bytes), %v; want %.20q (%d bytes)", i, b, len(b), err, value(i), len(value(i)))
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := core.PipelinedReads(s); n == 0 {
				t.Errorf("no read of %d went through the shared pipeline", readers*reads)
			} else {
				t.Logf("%d of %d reads pipelined", n, readers*reads)
			}
		})
	}
}

// TestPipelinedReadsKeepTheirDeadline points a store at a server that
// accepts connections and never answers. Pipelined commands run on the
// pipeliner's own context, bounded only by the client's read timeout
// (here 5 s); every read must still give up at its own deadline.
func TestPipelinedReadsKeepTheirDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		accepted []net.Conn
		served   sync.WaitGroup
	)
	hangUp := func() { // ends the silent server and every connection it holds
		ln.Close()
		mu.Lock()
		for _, c := range accepted {
			c.Close()
		}
		mu.Unlock()
		served.Wait()
	}
	defer hangUp()
	served.Add(1)
	go func() {
		defer served.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
			served.Add(1)
			go func() { // read and never answer
				defer served.Done()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	rdb := redis.NewClient(&redis.Options{
		Addr: ln.Addr().String(), Protocol: 2, DisableIdentity: true,
		ReadTimeout: 5 * time.Second, MaxRetries: -1, ContextTimeoutEnabled: true,
	})
	s := core.NewRedisStore(rdb)

	const readers, deadline = 32, 200 * time.Millisecond
	var wg sync.WaitGroup
	took := make(chan time.Duration, readers)
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			if b, err := s.Get(ctx, fmt.Sprint("k", r)); err == nil {
				t.Errorf("read from a server that never answers returned %q", b)
			}
			took <- time.Since(start)
		}()
	}
	wg.Wait()
	close(took)
	for d := range took {
		// Well below the 5 s read timeout: the read gave up at its
		// deadline, not when the pipeline's batch failed.
		if d > 3*time.Second {
			t.Errorf("a read with a %v deadline returned after %v", deadline, d)
		}
	}
	if core.PipelinedReads(s) == 0 {
		t.Error("no read went through the shared pipeline: the test did not exercise it")
	}
	s.Close()
	hangUp() // the stuck batch fails now, and closing the client need not wait for it
	rdb.Close()
}
