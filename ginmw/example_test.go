package ginmw_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/ginmw"
)

func Example() {
	store := core.NewMemoryStore(0) // core.NewRedisStore(rdb) to share across processes
	defer store.Close()
	c := core.New(store, core.TTL(time.Minute))

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(ginmw.Cache(c))
	r.GET("/products/:id", func(gc *gin.Context) {
		gc.String(http.StatusOK, "product %s", gc.Param("id"))
	})

	for range 2 {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest("GET", "/products/42", nil))
		fmt.Println(w.Header().Get("X-Cache"), w.Body.String())
	}
	// Output:
	// MISS product 42
	// HIT product 42
}
