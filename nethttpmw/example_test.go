package nethttpmw_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/nethttpmw"
)

func Example() {
	store := core.NewMemoryStore(0) // core.NewRedisStore(rdb) to share across processes
	defer store.Close()
	c := core.New(store, core.TTL(time.Minute))

	mux := http.NewServeMux()
	mux.Handle("GET /products/{id}", nethttpmw.Middleware(c)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "product %s", r.PathValue("id"))
	})))

	for range 2 {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("GET", "/products/42", nil))
		fmt.Println(w.Header().Get("X-Cache"), w.Body.String())
	}
	// Output:
	// MISS product 42
	// HIT product 42
}
