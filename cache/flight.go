package cache

import "sync"

// flight is one load of one key in this process; waiters block on done.
type flight[V any] struct {
	done chan struct{}
	v    V
	err  error
}

// flights is a per-key singleflight that, unlike x/sync/singleflight, tells the caller whether it
// leads and lets one caller claim many keys at once: a caller leads the keys nobody loads and
// joins the loads already running (Fetch's or another FetchMany's).
type flights[V any] struct {
	mu sync.Mutex
	m  map[string]*flight[V]
}

func (g *flights[V]) joinLocked(key string) (*flight[V], bool) {
	if f, ok := g.m[key]; ok {
		return f, false
	}
	if g.m == nil {
		g.m = make(map[string]*flight[V])
	}
	f := &flight[V]{done: make(chan struct{})}
	g.m[key] = f
	return f, true
}

// join returns the flights of keys (distinct), starting one for each key nobody in this process
// loads: led[i] reports whether fl[i] is new, so the caller leads it and must finish it.
func (g *flights[V]) join(keys []string) (fl []*flight[V], led []bool) {
	fl, led = make([]*flight[V], len(keys)), make([]bool, len(keys))
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, k := range keys {
		fl[i], led[i] = g.joinLocked(k)
	}
	return fl, led
}

// finish publishes the result of a flight the caller leads and forgets it, so the next miss
// starts a new load.
func (g *flights[V]) finish(key string, f *flight[V], v V, err error) {
	g.mu.Lock()
	if g.m[key] == f {
		delete(g.m, key)
	}
	g.mu.Unlock()
	f.v, f.err = v, err
	close(f.done)
}
