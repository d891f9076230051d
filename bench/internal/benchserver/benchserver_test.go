package benchserver

import (
	"strings"
	"testing"
	"time"
)

func TestBody(t *testing.T) {
	b := Body(42, "run1", "item-7")
	if len(b) != BodySize {
		t.Errorf("len(Body) = %d, want %d", len(b), BodySize)
	}
	if want := "call 42 run run1 item item-7\n"; !strings.HasPrefix(string(b), want) {
		t.Errorf("Body starts %.40q, want %q", b, want)
	}
	if n, ok := CallOf(b); !ok || n != 42 {
		t.Errorf("CallOf(Body(42)) = %d, %v, want 42, true", n, ok)
	}
	if string(Body(1, "r", "i")) == string(Body(2, "r", "i")) {
		t.Error("two origin calls rendered the same body")
	}
	if _, ok := CallOf([]byte("hello\n")); ok {
		t.Error("CallOf(hello) ok, want false")
	}
}

func TestConfigCheck(t *testing.T) {
	good := Config{Listen: "127.0.0.1:1", Redis: "127.0.0.1:6379", Run: "r-1.a_b", OriginDelay: time.Second}
	if err := good.Check(); err != nil {
		t.Errorf("Check(%+v) = %v, want nil", good, err)
	}
	for _, bad := range []Config{
		{Run: "r"},                 // no Redis
		{Redis: "x:1"},             // no run
		{Redis: "x:1", Run: "a b"}, // space
		{Redis: "x:1", Run: strings.Repeat("a", 49)},
		{Redis: "x:1", Run: "r", OriginDelay: -1},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("Check(%+v) = nil, want an error", bad)
		}
	}
	args := strings.Join(good.Args(), " ")
	if want := "-listen 127.0.0.1:1 -redis 127.0.0.1:6379 -run r-1.a_b -origin-delay 1s"; args != want {
		t.Errorf("Args = %q, want %q", args, want)
	}
}

func TestCallsKey(t *testing.T) {
	if got, want := CallsKey("r1"), "flightcache-bench:{r1}:calls"; got != want {
		t.Errorf("CallsKey(r1) = %q, want %q", got, want)
	}
}
