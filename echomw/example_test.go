package echomw_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/echomw"
)

func Example() {
	store := core.NewMemoryStore(0) // core.NewRedisStore(rdb) to share across processes
	defer store.Close()
	c := core.New(store, core.TTL(time.Minute))

	e := echo.New()
	e.Use(echomw.Cache(c))
	e.GET("/products/:id", func(ctx echo.Context) error {
		return ctx.String(http.StatusOK, "product "+ctx.Param("id"))
	})

	for range 2 {
		w := httptest.NewRecorder()
		e.ServeHTTP(w, httptest.NewRequest("GET", "/products/42", nil))
		fmt.Println(w.Header().Get("X-Cache"), w.Body.String())
	}
	// Output:
	// MISS product 42
	// HIT product 42
}
