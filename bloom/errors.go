package bloom

import "errors"

// ErrInvalidOptions is wrapped by the errors of [NewLocal] and [NewRedis] for a bad argument or
// option; the message names it (n, fp, the name, RedisOptions.Shards).
var ErrInvalidOptions = errors.New("bloom: invalid options")

// ErrConfigMismatch is returned by [Redis] methods when the filter stored under the name was
// created with another size (bits per shard, hash count or shard count) or another format
// version, or when its bitmap exists without its config key. Using such a filter would give
// false negatives, so every call refuses it; pick another name or rebuild (see [Live]).
var ErrConfigMismatch = errors.New("bloom: config mismatch")

// ErrNoFilter is returned by the methods of a zero [Local] (one not made by [NewLocal] and not
// loaded with [Local.ReadFrom]).
var ErrNoFilter = errors.New("bloom: local filter not initialised (use NewLocal or ReadFrom)")

// ErrRebuilding is returned by [Live.BeginRebuild] and [Live.Rebuild] when another rebuild of
// the same Live is running.
var ErrRebuilding = errors.New("bloom: rebuild already running")
