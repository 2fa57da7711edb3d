package lock

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// acquireReplicated acquires on one dedicated connection and runs WAIT on it right after, so WAIT
// counts the replicas that acknowledged this very write. When too few did, it releases the key.
func (c *Client) acquireReplicated(ctx context.Context, l *Lock, ttl time.Duration) (int64, time.Duration, error) {
	var node *redis.Client
	switch rdb := c.rdb.(type) {
	case *redis.Client:
		node = rdb
	case *redis.ClusterClient:
		var err error
		if node, err = rdb.MasterForKey(ctx, l.keys[0]); err != nil {
			return 0, 0, err
		}
	default:
		return 0, 0, fmt.Errorf("Options.WaitReplicas needs a *redis.Client or *redis.ClusterClient, not %T", c.rdb)
	}
	conn := node.Conn()
	defer conn.Close()
	fence, pttl, err := acquireOn(ctx, conn, l, ttl)
	if err != nil || fence == 0 {
		return fence, pttl, err
	}
	acked, err := conn.Wait(ctx, c.cfg.waitReplicas, c.cfg.waitTimeout).Result()
	if err == nil && acked >= int64(c.cfg.waitReplicas) {
		return fence, 0, nil
	}
	// Give the key back: on the same connection, bounded even when ctx already ended.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.waitTimeout)
	defer cancel()
	_, _ = l.run(rctx, conn, opRelease, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("WAIT %d: %w", c.cfg.waitReplicas, err)
	}
	return 0, 0, fmt.Errorf("%w: %d of %d replicas acknowledged within %v", ErrNotReplicated, acked, c.cfg.waitReplicas, c.cfg.waitTimeout)
}
