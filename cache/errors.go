package cache

import "errors"

// ErrNotFound means the record does not exist: the loader said so (by returning an error that
// wraps ErrNotFound, or by leaving the key out of a [BatchLoader] result), a negative entry cached
// earlier says so, or the [Guard] rules the key out. Test with errors.Is.
var ErrNotFound = errors.New("cache: not found")

// ErrMiss is returned by [Cache.Get] only: nothing is cached for the key.
var ErrMiss = errors.New("cache: miss")

// ErrClosed is returned by calls that need Redis or the loader after [Cache.Close].
var ErrClosed = errors.New("cache: closed")

// ErrLoaderPanic is wrapped by the error every waiter gets when the loader panicked; the panic
// value is part of the message.
var ErrLoaderPanic = errors.New("cache: loader panicked")

// errDecode marks an envelope that cannot be decoded (garbage, truncated, future version).
var errDecode = errors.New("cache: bad envelope")

// ErrEmptyKey is returned for the key "" by every call that takes keys: its hash tag would be
// empty, which Redis Cluster does not honour.
var ErrEmptyKey = errors.New("cache: empty key")
