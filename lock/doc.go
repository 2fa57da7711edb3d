// Package lock is a distributed lock on Redis that is safe to bet data on.
//
// A lock is a key set with SET NX PX to a random 128-bit token; release, refresh and TTL compare
// the whole token in Lua, so a handle that lost its lock can never delete or extend the next
// holder's. On top of that:
//
//   - a watchdog ([ObtainOptions.AutoRenew], always on in [Client.Do]) renews the lock every
//     ttl/3 while the holder works and closes [Lock.Lost] (cancelling Do's context) the moment
//     the lock is known lost;
//   - the holder's own clock bounds it: a timer at the validity the holder knows (last
//     successful acquisition or renewal, plus ttl, minus drift) closes Lost and ends Do's context
//     even while a renewal hangs on a stalled server or network, whatever the client's timeouts;
//     Do's context has that validity as its deadline;
//   - every acquisition draws a fencing token ([Lock.Fence]) from a counter in the same hash
//     slot, strictly increasing per key, for the protected resource to reject stale writers;
//   - waiters ([ObtainOptions.Wait]) queue in the lock's hash slot; a release hands the lock to
//     the first waiter still queued and tells it, so it holds the lock without another call: a
//     waiter of the releasing [Client] from the release's own reply, any other by a pub/sub
//     message naming it (sharded pub/sub on Redis Cluster); no polling, no herd; the waiters
//     of one [Client] take turns in process, one at a time in Redis, and a release hands the
//     lock to the Client's next waiter in the same script when no other Client waits;
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
// Prefix+"{k}:fence" (never expires), its waiter queue Prefix+"{k}:queue" (a list of tokens) and
// Prefix+"{k}:waiters" (a hash of each waiter's lease, ttl, Client and metadata; both expire with the last
// waiter's lease), its release channel Prefix+"{k}:released".
//
// Telemetry: a [Client] and a [Redlock] record through the OpenTelemetry API, with the
// instrumentation scope "github.com/surgekit/surge/lock", on [Options.MeterProvider] and
// [Options.TracerProvider] (nil: the global providers; with no SDK installed recording costs next
// to nothing and allocates nothing):
//
//   - surge.lock.acquisitions (counter): every Obtain, and the acquisition of every Do, with
//     surge.lock.result = "obtained", "not_obtained" (the error wraps [ErrNotObtained]: someone
//     else kept the lock, or ctx ended the wait) or "error" (Redis errors, [ErrNotReplicated],
//     invalid options or arguments);
//   - surge.lock.wait.duration (histogram, seconds): each Obtain or Do that waited
//     ([ObtainOptions.Wait] > 0 and the lock was not free at its first try), from its call to
//     its return, with surge.lock.result;
//   - surge.lock.lost (counter): each lock its holder came to know lost ([Lock.Lost] closed, Do's
//     context cancelled with [ErrLost]); a release is not a loss;
//   - a span "lock.wait", child of the caller's, for each such wait, over the same interval, with
//     surge.lock.key, surge.lock.result and, once obtained, surge.lock.fence; an "error" result
//     sets the span's status to Error. No other call opens a span.
//
// What survives a failover: Redis replicates asynchronously, so a primary that fails right after
// an acquisition may lose it, and the promoted replica may then grant the lock to a second holder
// while the first still believes it holds it. [Options.WaitReplicas] narrows that window: Obtain
// returns only once that many replicas acknowledged the lock and its fence counter. It does not
// close it (a replica that acknowledged may not be the one promoted, and the fence counter of a
// lost write can repeat on the new primary); fences are strictly increasing only as long as the
// counter's writes survive. A resource that must never accept two holders' writes keeps the
// highest fence it saw and, across failovers, also compares lock tokens or uses [Redlock].
package lock
