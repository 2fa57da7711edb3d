package bloom

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"
)

// Live is a [Filter] whose backing filter can be replaced while it serves, for rebuilding a
// filter that has grown past its size (or changing its fp) without a window of false negatives.
//
// The rebuild path, which [Live.Rebuild] runs inside one process:
//
//  1. Create the new filter under a new name (e.g. "users:v2" with a larger n).
//  2. Dual-write: from now on every Add goes to the current and the new filter.
//  3. Warm the new filter from the source of truth ([Warm]).
//  4. Switch atomically: MightContain answers from the new filter; dual-writing stops.
//  5. Drop the old filter ([Redis.Delete]).
//
// Keys written to the source of truth before their Add are never missed: an Add that did not
// see the new filter started before step 2, so the warm-up's scan (step 3, which starts after)
// finds its key. This assumes the application writes the source before calling Add.
//
// For a [Redis] filter shared by several processes the switch must happen in all of them: ship
// step 2 everywhere first (each process wraps the old filter in a Live and calls
// [Live.BeginRebuild] with the new one, or simply Adds to both), run step 3 once (one process
// calling [Warm]), then switch every process ([Live.Switch], or a deploy that reads the new
// name), and delete the old filter last.
//
// All methods are safe for concurrent use.
type Live struct {
	cur  atomic.Pointer[holder]
	next atomic.Pointer[holder]
	mu   sync.Mutex // serialises BeginRebuild, Switch and AbortRebuild
}

// holder boxes a Filter for atomic.Pointer.
type holder struct{ f Filter }

var _ Filter = (*Live)(nil)

// NewLive returns a Live serving f. It fails when f is nil.
func NewLive(f Filter) (*Live, error) {
	if f == nil {
		return nil, errors.New("bloom: NewLive: nil filter")
	}
	l := &Live{}
	l.cur.Store(&holder{f})
	return l, nil
}

// Current returns the filter MightContain answers from.
func (l *Live) Current() Filter { return l.cur.Load().f }

// Add inserts keys into the current filter and, during a rebuild, into the new one too. It blocks
// as those filters' Add do and returns their errors joined.
func (l *Live) Add(ctx context.Context, keys ...string) error {
	// Load next before cur: Switch stores cur before clearing next, so an Add that sees no next
	// after a switch sees the new cur.
	next := l.next.Load()
	cur := l.cur.Load()
	err := cur.f.Add(ctx, keys...)
	if next != nil && next.f != cur.f {
		err = errors.Join(err, next.f.Add(ctx, keys...))
	}
	return err
}

// MightContain asks the current filter; it blocks and fails as that filter's MightContain does.
func (l *Live) MightContain(ctx context.Context, key string) (bool, error) {
	return l.cur.Load().f.MightContain(ctx, key)
}

// BeginRebuild starts dual-writing: from now on Add also goes to next. It fails when next is nil
// or a rebuild is already running ([ErrRebuilding]). End it with [Live.Switch] or
// [Live.AbortRebuild].
func (l *Live) BeginRebuild(next Filter) error {
	if next == nil {
		return errors.New("bloom: BeginRebuild: nil filter")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next.Load() != nil {
		return ErrRebuilding
	}
	l.next.Store(&holder{next})
	return nil
}

// Switch ends a rebuild begun with [Live.BeginRebuild]: MightContain answers from the new
// filter and dual-writing stops. It returns the previous filter (to delete) or nil when no
// rebuild was running.
func (l *Live) Switch() Filter {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.next.Load()
	if next == nil {
		return nil
	}
	old := l.cur.Swap(next) // before clearing next: see Add
	l.next.Store(nil)
	return old.f
}

// AbortRebuild stops dual-writing and keeps the current filter; a no-op when no rebuild runs.
func (l *Live) AbortRebuild() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next.Store(nil)
}

// Rebuild runs the whole rebuild path: [Live.BeginRebuild] with next, [Warm] next from keys,
// then [Live.Switch]. It returns the number of keys warmed and the replaced filter (to delete,
// e.g. with [Redis.Delete]). It blocks until keys is exhausted or ctx ends. When ctx ends or
// next's Add fails the current filter stays and dual-writing stops; when another rebuild is
// running it returns [ErrRebuilding] and leaves that rebuild alone.
func (l *Live) Rebuild(ctx context.Context, next Filter, keys iter.Seq[string]) (int, Filter, error) {
	if err := l.BeginRebuild(next); err != nil {
		return 0, nil, err
	}
	n, err := Warm(ctx, next, keys)
	if err != nil {
		l.AbortRebuild()
		return n, nil, fmt.Errorf("bloom: rebuild: %w", err)
	}
	return n, l.Switch(), nil
}
