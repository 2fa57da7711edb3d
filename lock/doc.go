// Package lock is a distributed lock on Redis that is safe to bet data on.
//
// A lock is a key set with SET NX PX to a random 128-bit token; release, refresh and TTL compare
// the whole token in Lua, so a handle that lost its lock can never delete or extend the next
// holder's. On top of that:
//
//   - a watchdog ([ObtainOptions.AutoRenew], always on in [Client.Do]) renews the lock every
//     ttl/3 while the holder works and closes [Lock.Lost] (cancelling Do's context) the moment
//     the lock is known lost;
//   - every acquisition draws a fencing token ([Lock.Fence]) from a counter in the same hash
//     slot, strictly increasing per key, for the protected resource to reject stale writers;
//   - waiters ([ObtainOptions.Wait]) subscribe to the lock's release channel and retry as soon as
//     the holder releases, with a jittered backoff only as fallback;
//   - [Redlock] spreads a lock over several independent masters with a quorum;
//   - keys are hash-tagged, so it works on Redis Cluster; [Options.WaitReplicas] waits for
//     replicas to acknowledge an acquisition.
//
// Usage:
//
//	locks := lock.New(rdb, nil)
//	err := locks.Do(ctx, "invoice:42", 10*time.Second, &lock.ObtainOptions{Wait: 5 * time.Second},
//		func(ctx context.Context) error {
//			// ctx is cancelled if the lock is lost; pass the fence to the resource.
//			return store.Write(ctx, invoice, lock.FromContext(ctx).Fence())
//		})
//
// Or by hand:
//
//	l, err := locks.Obtain(ctx, "invoice:42", 10*time.Second, &lock.ObtainOptions{AutoRenew: true})
//	if errors.Is(err, lock.ErrNotObtained) { ... }
//	defer l.Release(context.WithoutCancel(ctx))
//	select { case <-l.Lost(): ...; default: }
//
// Keys: the lock of key k is Prefix+"{k}" (default prefix "surge:lock:"), its fence counter
// Prefix+"{k}:fence" (never expires), its release channel Prefix+"{k}:released".
package lock
