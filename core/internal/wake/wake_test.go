package wake

import "testing"

func TestWakeAndCancel(t *testing.T) {
	var r Registry
	a, cancelA := r.Add("k")
	b, cancelB := r.Add("k")
	other, cancelOther := r.Add("other")
	r.Wake("k")
	r.Wake("k") // a second signal must not block on full channels
	for name, c := range map[string]<-chan struct{}{"a": a, "b": b} {
		select {
		case <-c:
		default:
			t.Errorf("waiter %s was not woken", name)
		}
	}
	select {
	case <-other:
		t.Error("waiter on another key was woken")
	default:
	}
	cancelA()
	cancelB()
	cancelOther()
	if n := r.Len(); n != 0 {
		t.Errorf("Len() after cancelling all = %d, want 0", n)
	}
}
