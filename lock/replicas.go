package lock

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// acquireReplicated acquires on one dedicated connection and runs WAIT on it right after, so WAIT
// counts the replicas that acknowledged this very write. When too few did, it releases the key.
// It never queues: a lock handed over by a release would skip the WAIT.
func (n *node) acquireReplicated(ctx context.Context, l *Lock, ttl time.Duration, cfg *config) (grant, error) {
	var master *redis.Client
	switch rdb := n.rdb.(type) {
	case *redis.Client:
		master = rdb
	case *redis.ClusterClient:
		var err error
		if master, err = rdb.MasterForKey(ctx, l.keys[keyLock]); err != nil {
			return grant{}, err
		}
	default:
		return grant{}, fmt.Errorf("Options.WaitReplicas needs a *redis.Client or *redis.ClusterClient, not %T", n.rdb)
	}
	conn := master.Conn()
	defer conn.Close()
	gr, err := l.runAcquire(ctx, conn, ttl, 0)
	if err != nil || gr.fence == 0 {
		return gr, err
	}
	acked, err := conn.Wait(ctx, cfg.waitReplicas, cfg.waitTimeout).Result()
	if err == nil && acked >= int64(cfg.waitReplicas) {
		return gr, nil
	}
	// Give the key back: on the same connection, bounded even when ctx already ended.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.waitTimeout)
	defer cancel()
	_, _ = l.run(rctx, conn, opRelease, 0)
	if err != nil {
		return grant{}, fmt.Errorf("WAIT %d: %w", cfg.waitReplicas, err)
	}
	return grant{}, fmt.Errorf("%w: %d of %d replicas acknowledged within %v", ErrNotReplicated, acked, cfg.waitReplicas, cfg.waitTimeout)
}
