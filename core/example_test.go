package core_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
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

func ExampleKeyHost() {
	store := core.NewMemoryStore(0)
	defer store.Close()
	// Instances are reached under the public name and under their own
	// addresses; the page does not depend on the Host, so they share it.
	mw := core.New(store).Middleware(core.KeyHost("www.example.com"))
	page := func(w http.ResponseWriter, r *http.Request) error {
		fmt.Fprint(w, "home page")
		return nil
	}
	for _, host := range []string{"www.example.com", "10.0.0.7:8080"} {
		w := httptest.NewRecorder()
		mw.Serve(w, httptest.NewRequest("GET", "http://"+host+"/", nil), "", page)
		fmt.Println(host, w.Header().Get("X-Cache"), w.Body.String())
	}
	// Output:
	// www.example.com MISS home page
	// 10.0.0.7:8080 HIT home page
}

func ExampleDoNotStore() {
	// A handler that serves a fallback when its data source fails: its
	// client gets the fallback, but the cache must not keep it for others.
	show := func(w http.ResponseWriter, r *http.Request) {
		prices, err := loadPrices(r.Context())
		if err != nil {
			core.DoNotStore(w)
			prices = "prices unavailable"
		}
		fmt.Fprint(w, prices)
	}
	_ = show // behind any adapter, such as nethttpmw.Wrap(http.HandlerFunc(show), c)
}

func loadPrices(context.Context) (string, error) {
	return "", errors.New("price service down")
}

func ExampleCache_PurgeURL() {
	store := core.NewMemoryStore(0)
	defer store.Close()
	c := core.New(store)
	mw := c.Middleware()

	price := "10 EUR" // the database
	product := func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=3600")
		fmt.Fprint(w, price)
		return nil
	}
	get := func() string {
		w := httptest.NewRecorder()
		mw.Serve(w, httptest.NewRequest("GET", "https://shop.example/products/42", nil), "", product)
		return w.Body.String() + " " + w.Header().Get("X-Cache")
	}
	fmt.Println(get())
	fmt.Println(get())

	price = "12 EUR" // a write to the database, then the purge
	if err := c.PurgeURL(context.Background(), "https://shop.example/products/42"); err != nil {
		fmt.Println("purge failed:", err) // Redis down: retry or report
	}
	fmt.Println(get())
	// Output:
	// 10 EUR MISS
	// 10 EUR HIT
	// 12 EUR MISS
}

func ExampleCache_Purge() {
	store := core.NewMemoryStore(0)
	defer store.Close()
	c := core.New(store)
	version := 1
	render := func(ctx context.Context) ([]byte, time.Duration, error) {
		return []byte(fmt.Sprintf("report v%d", version)), time.Hour, nil
	}
	v, _ := c.Do(context.Background(), "report:2026-11", render)
	fmt.Println(string(v))

	version = 2
	c.Purge(context.Background(), "report:2026-11")
	v, _ = c.Do(context.Background(), "report:2026-11", render)
	fmt.Println(string(v))
	// Output:
	// report v1
	// report v2
}

func ExampleCache_PurgeTags() {
	store := core.NewMemoryStore(0)
	defer store.Close()
	c := core.New(store)
	mw := c.Middleware()
	version := 1
	product := func(w http.ResponseWriter, r *http.Request) error {
		// Tag the page with what it shows; clients never see the header.
		w.Header().Set("Surrogate-Key", "product-42 catalog")
		fmt.Fprintf(w, "product 42, version %d", version)
		return nil
	}
	get := func() {
		w := httptest.NewRecorder()
		mw.Serve(w, httptest.NewRequest("GET", "http://shop.example/p/42", nil), "", product)
		fmt.Println(w.Header().Get("X-Cache"), w.Body.String(), w.Header().Values("Surrogate-Key"))
	}
	get()
	get()
	version = 2 // the product changes; every page tagged with it goes
	if err := c.PurgeTags(context.Background(), "product-42"); err != nil {
		fmt.Println("purge failed, retry:", err)
	}
	get()
	// Output:
	// MISS product 42, version 1 []
	// HIT product 42, version 1 []
	// MISS product 42, version 2 []
}
