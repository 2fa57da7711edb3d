package events

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/keys"
	"github.com/surgekit/surge/internal/luascript"
)

// Deduper is a store shared by every consumer of a group that remembers which events were
// handled, so a redelivered event (after a crash or a rebalance) is handled once. The
// [Consumer] passes ids of the form "group:eventID" (with '%' and ':' in the group written
// %25 and %3A, so no two groups share an id), and "group:dlq:record" for the dead letters it
// writes. Implementations must be safe for concurrent use; one that also implements
// [DedupeRenewer] keeps the claims of slow handlers.
type Deduper interface {
	// Claim takes id for handling for lease and returns a token for Done or Release. It returns
	// [ErrDuplicate] when id is done and [ErrClaimed] while another unexpired claim holds it.
	Claim(ctx context.Context, id string, lease time.Duration) (token string, err error)
	// Done records id as handled (or dead-lettered), whoever holds the claim now; token may be
	// "" when the consumer holds no claim.
	Done(ctx context.Context, id, token string) error
	// Release gives up a claim after a failure, if token still holds it, so a retry or another
	// consumer can take id at once.
	Release(ctx context.Context, id, token string) error
}

// DedupeRenewer is implemented by a [Deduper] whose claims can be extended. While a handler
// runs, the [Consumer] renews its claim every DedupeLease/3 (the watchdog pattern), so a
// handler slower than the lease keeps it; when Renew reports the claim lost, the handler's
// context is cancelled. [NewRedisDeduper]'s Deduper implements it.
type DedupeRenewer interface {
	// Renew extends the claim token holds on id to lease from now. It returns [ErrClaimed]
	// when token no longer holds id (it expired, was released or is done).
	Renew(ctx context.Context, id, token string, lease time.Duration) error
}

var (
	//go:embed dedupe_claim.lua
	claimLua    string
	claimScript = luascript.New(claimLua)
	//go:embed dedupe_release.lua
	releaseLua    string
	releaseScript = luascript.New(releaseLua)
	//go:embed dedupe_renew.lua
	renewLua    string
	renewScript = luascript.New(renewLua)
)

// dedupeID is the Deduper id of event id in group: "group:id", with '%' and ':' in group
// escaped so that the first ':' ends the group ("a:b" + "c" and "a" + "b:c" differ). Groups
// without either character keep the plain form.
func dedupeID(group, id string) string {
	if strings.ContainsAny(group, "%:") {
		group = groupEscaper.Replace(group)
	}
	return group + ":" + id
}

var groupEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

// DedupePrefix starts every key [NewRedisDeduper] writes: DedupePrefix + "{" + id + "}".
const DedupePrefix = "surge:events:dedupe:"

type redisDeduper struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

// NewRedisDeduper returns a [Deduper] on Redis: one key per event holding the claim token
// (expiring with the lease) and then "done" for ttl ([DefaultDedupeTTL] when ttl <= 0), which should exceed
// how long a redelivery can take (the topic's retention is the safe bound). It does not block
// and never closes rdb. Safe for concurrent use; errors are the client's, wrapped.
func NewRedisDeduper(rdb redis.UniversalClient, ttl time.Duration) Deduper {
	if ttl <= 0 {
		ttl = DefaultDedupeTTL
	}
	return &redisDeduper{rdb: rdb, ttl: ttl}
}

// Claim runs dedupe_claim.lua: one round trip, atomic.
func (d *redisDeduper) Claim(ctx context.Context, id string, lease time.Duration) (string, error) {
	if lease <= 0 {
		return "", fmt.Errorf("events: dedupe claim %q: lease %v is not positive", id, lease)
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := "c:" + hex.EncodeToString(b[:])
	n, err := claimScript.Run(ctx, d.rdb, []string{keys.Tagged(DedupePrefix, id)}, token, max(lease.Milliseconds(), 1)).Int()
	switch {
	case err != nil:
		return "", fmt.Errorf("events: dedupe claim %q: %w", id, err)
	case n == 0:
		return "", ErrDuplicate
	case n < 0:
		return "", ErrClaimed
	}
	return token, nil
}

// Done overwrites the claim with "done" for the deduper's ttl.
func (d *redisDeduper) Done(ctx context.Context, id, _ string) error {
	if err := d.rdb.Set(ctx, keys.Tagged(DedupePrefix, id), "done", d.ttl).Err(); err != nil {
		return fmt.Errorf("events: dedupe done %q: %w", id, err)
	}
	return nil
}

// Renew runs dedupe_renew.lua: extends the claim only while it holds token.
func (d *redisDeduper) Renew(ctx context.Context, id, token string, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("events: dedupe renew %q: lease %v is not positive", id, lease)
	}
	n, err := renewScript.Run(ctx, d.rdb, []string{keys.Tagged(DedupePrefix, id)}, token, max(lease.Milliseconds(), 1)).Int()
	switch {
	case err != nil:
		return fmt.Errorf("events: dedupe renew %q: %w", id, err)
	case n == 0:
		return ErrClaimed
	}
	return nil
}

// Release runs dedupe_release.lua: deletes the key only while it holds token.
func (d *redisDeduper) Release(ctx context.Context, id, token string) error {
	err := releaseScript.Run(ctx, d.rdb, []string{keys.Tagged(DedupePrefix, id)}, token).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("events: dedupe release %q: %w", id, err)
	}
	return nil
}
