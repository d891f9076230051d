package repotest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Herd sends n requests for one key, send(ctx, i) each, and returns when
// all have been answered. Request 0 goes alone first; once leading
// returns true (its fill has reached the handler, held there), requests 1
// to n-1 follow, and release is called once each of them waits on that
// fill, or after 10 s, failing t. So every request but the first is known
// to be queued behind the fill, without a sleep guessing how long that
// takes. It is the adapters' copy of cachetest's own herd.
func Herd(t *testing.T, n int, leading func() bool, release func(), send func(ctx context.Context, i int)) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() { send(context.Background(), 0) })
	deadline := time.Now().Add(10 * time.Second)
	for !leading() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	parked := make(chan struct{}, n)
	for i := 1; i < n; i++ {
		ctx := &parkedContext{Context: context.Background(), parked: parked}
		wg.Go(func() { send(ctx, i) })
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
wait:
	for range n - 1 {
		select {
		case <-parked:
		case <-timeout.C:
			t.Errorf("%d requests did not all queue behind the fill within 10s", n-1)
			break wait
		}
	}
	release()
	wg.Wait()
}

// parkedContext is a request context that reports on parked, once, when
// its request first waits on it: a request that finds its key's fill in
// flight selects on its context's Done while it waits for that fill, and
// nothing on its way there asks for Done earlier.
type parkedContext struct {
	context.Context
	once   sync.Once
	parked chan<- struct{} // room for every request's report
}

func (c *parkedContext) Done() <-chan struct{} {
	c.once.Do(func() { c.parked <- struct{}{} })
	return c.Context.Done()
}
