package core_test

import (
	"context"
	"fmt"
	"time"

	"github.com/flightcache/flightcache/core"
)

func ExampleNew() {
	// In production: core.NewRedisStore(redis.NewUniversalClient(...)),
	// shared by every process of the service.
	store := core.NewMemoryStore(0)
	defer store.Close()
	c := core.New(store, core.TTL(5*time.Minute), core.WithObserver(func(err error) {
		fmt.Println("cache degraded:", err) // Redis trouble; requests still succeed
	}))
	fmt.Println(c.Stats().Hits.Load())
	// Output: 0
}

func ExampleCache_Do() {
	store := core.NewMemoryStore(0)
	defer store.Close()
	c := core.New(store)

	calls := 0
	render := func(ctx context.Context) ([]byte, time.Duration, error) {
		calls++
		return []byte("rendered report"), time.Minute, nil
	}
	for range 3 {
		v, err := c.Do(context.Background(), "report:2026-11", render)
		fmt.Println(string(v), err)
	}
	fmt.Println("origin calls:", calls)
	// Output:
	// rendered report <nil>
	// rendered report <nil>
	// rendered report <nil>
	// origin calls: 1
}
