package lock

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// One real cluster (3 masters, 1 replica each) shared by every cluster subtest: it takes seconds
// to start.
func TestCluster(t *testing.T) {
	cl := redistest.Cluster(t, 3, 1)
	rdb := cl.Client()
	ctx := ctxT(t)

	t.Run("ObtainReleaseFenceAcrossSlots", func(t *testing.T) {
		c := New(rdb, nil)
		for i := range 20 { // keys spread over the three masters
			key := fmt.Sprint("order:", i)
			a, err := c.Obtain(ctx, key, time.Minute, &ObtainOptions{Metadata: "m"})
			require.NoError(t, err)
			_, err = c.Obtain(ctx, key, time.Minute, nil)
			require.ErrorIs(t, err, ErrNotObtained)
			require.NoError(t, a.Refresh(ctx, 2*time.Minute))
			d, err := a.TTL(ctx)
			require.NoError(t, err)
			assert.Greater(t, d, time.Minute)
			require.NoError(t, a.Release(ctx))
			b, err := c.Obtain(ctx, key, time.Minute, nil)
			require.NoError(t, err)
			assert.Greater(t, b.Fence(), a.Fence())
			require.NoError(t, b.Release(ctx))
		}
	})

	t.Run("WaiterWakesOnRelease", func(t *testing.T) {
		testWakeOnRelease(t, New(rdb, nil), rdb)
	})

	t.Run("DoWithWatchdog", func(t *testing.T) {
		c := New(rdb, nil)
		err := c.Do(ctx, "job", 300*time.Millisecond, nil, func(ctx context.Context) error {
			time.Sleep(700 * time.Millisecond) // longer than the ttl: the watchdog keeps it
			_, err := c.Obtain(ctx, "job", time.Second, nil)
			assert.ErrorIs(t, err, ErrNotObtained)
			return ctx.Err()
		})
		require.NoError(t, err)
	})

	// Last: it kills a master. With WaitReplicas the lock and its fence counter are on the
	// replica before Obtain returns, so they survive the failover.
	t.Run("FailoverKeepsReplicatedLockAndFence", func(t *testing.T) {
		c := New(rdb, &Options{WaitReplicas: 1})
		a, err := c.Obtain(ctx, "failover", time.Minute, nil)
		require.NoError(t, err)
		cl.KillMaster("surge:lock:{failover}")

		_, err = c.Obtain(ctx, "failover", time.Minute, &ObtainOptions{Wait: 100 * time.Millisecond})
		require.ErrorIs(t, err, ErrNotObtained, "the promoted replica still has the lock")
		require.NoError(t, a.Release(ctx))

		// The promoted master has no replica left: plain Obtain from here.
		b, err := New(rdb, nil).Obtain(ctx, "failover", time.Minute, &ObtainOptions{Wait: 10 * time.Second})
		require.NoError(t, err)
		assert.Greater(t, b.Fence(), a.Fence())
		require.NoError(t, b.Release(ctx))
	})
}
