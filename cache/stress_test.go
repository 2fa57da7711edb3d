package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// TestStressCoherence is a linearizability-style check of the coherence promise on a real
// redis-server: instances with local tiers read while writers change the same keys through
// Cache.Set/Delete and through raw go-redis SET/DEL. Each key has one writer, so its writes are
// totally ordered and carry increasing versions. A read that starts more than staleBound after a
// write completed must not return anything older than that write.
func TestStressCoherence(t *testing.T) {
	const (
		instances      = 4
		keys           = 8
		writesPerKey   = 150
		readersPerInst = 2
		staleBound     = 100 * time.Millisecond // generous: -race on two cores shared with other jobs can hold the listener back for tens of ms; the benchmark measures the real delay
		burst          = 10                     // writes per key between quiet gaps
		quietGap       = 150 * time.Millisecond // longer than staleBound: reads in it are checked against the burst's last write
	)
	s := redistest.Server(t)
	ctx := context.Background()
	caches := make([]*Cache[user], instances)
	for i := range caches {
		caches[i] = newLocal(t, s.NewClient(nil), Options{Prefix: "lin:"})
	}
	raw := s.Client()
	start := time.Now()
	since := func() time.Duration { return time.Since(start) }

	// write is one completed write; deleted when it removed the key.
	type write struct {
		version     int
		deleted     bool
		begin, done time.Duration
	}
	type read struct {
		version     int // -1 for a miss
		begin, done time.Duration
	}
	writes := make([][]write, keys)
	reads := make([][]read, keys)
	var readsMu sync.Mutex

	var wg sync.WaitGroup
	var writersLeft atomic.Int64
	writersLeft.Store(keys)
	for k := range keys {
		key := fmt.Sprint("k", k)
		wg.Go(func() {
			defer writersLeft.Add(-1)
			rng := rand.New(rand.NewPCG(uint64(k), 1))
			for v := 1; v <= writesPerKey; v++ {
				w := write{version: v, begin: since()}
				c := caches[rng.IntN(instances)]
				var err error
				switch rng.IntN(4) {
				case 0:
					err = c.Set(ctx, key, user{ID: key, Name: strconv.Itoa(v)})
				case 1:
					w.deleted = true
					err = c.Delete(ctx, key)
				case 2:
					env, _, _, eerr := c.encode(user{ID: key, Name: strconv.Itoa(v)}, 0)
					require.NoError(t, eerr)
					err = raw.Set(ctx, c.valueKey(key), env, time.Hour).Err()
				default:
					w.deleted = true
					err = raw.Del(ctx, c.valueKey(key)).Err()
				}
				require.NoError(t, err)
				w.done = since()
				writes[k] = append(writes[k], w)
				if v%burst == 0 {
					time.Sleep(quietGap) // a quiet period: reads fill the local tiers, and stale ones would show
				} else if rng.IntN(3) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	for _, c := range caches {
		for r := range readersPerInst {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(r), 2))
				var mine [keys][]read
				for writersLeft.Load() > 0 {
					k := rng.IntN(keys)
					rd := read{begin: since()}
					u, err := c.Get(ctx, fmt.Sprint("k", k))
					rd.done = since()
					switch {
					case errors.Is(err, ErrMiss):
						rd.version = -1
					case err != nil:
						t.Errorf("read: %v", err)
						return
					default:
						rd.version, _ = strconv.Atoi(u.Name)
					}
					mine[k] = append(mine[k], rd)
					// A request handler does more than read; a tight loop of local hits on every
					// core would starve the listener goroutine instead of measuring it.
					runtime.Gosched()
				}
				readsMu.Lock()
				for k := range mine {
					reads[k] = append(reads[k], mine[k]...)
				}
				readsMu.Unlock()
			})
		}
	}
	wg.Wait()

	checked, violations := 0, 0
	for k := range keys {
		ws := writes[k]
		for _, rd := range reads[k] {
			// The last write completed staleBound before the read began.
			last := -1
			for i, w := range ws {
				if w.done+staleBound <= rd.begin {
					last = i
				}
			}
			if last < 0 {
				continue
			}
			checked++
			ok := false
			// Acceptable: the state left by that write or by any later write that began before
			// the read ended.
			for _, w := range ws[last:] {
				if w.begin > rd.done {
					break
				}
				if (w.deleted && rd.version == -1) || (!w.deleted && rd.version == w.version) {
					ok = true
					break
				}
			}
			if !ok {
				violations++
				if violations <= 5 {
					t.Errorf("key k%d: read [%v, %v] returned version %d, but write %d (deleted %v) completed at %v",
						k, rd.begin, rd.done, rd.version, ws[last].version, ws[last].deleted, ws[last].done)
				}
			}
		}
	}
	require.Positive(t, checked)
	require.Zero(t, violations, "of %d reads checked", checked)
	var hits uint64
	for _, c := range caches {
		hits += c.Stats().LocalHits
	}
	require.Positive(t, hits, "the local tiers served reads")
	t.Logf("%d reads checked, %d local hits, 0 stale", checked, hits)
}
