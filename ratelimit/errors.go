package ratelimit

import "errors"

// ErrInvalidOptions is wrapped by the constructors ([NewLocal], [NewRedis], [NewConcurrency],
// [NewLocalConcurrency]) when a [Limit], an argument or an option is unusable; the message names
// the bad field.
var ErrInvalidOptions = errors.New("ratelimit: invalid options")

// ErrInvalidArgument is wrapped when a call gets an empty key or a negative n.
var ErrInvalidArgument = errors.New("ratelimit: invalid argument")

// ErrExceedsBurst is wrapped when n is larger than a limit's Burst: such a request can never be
// allowed, however long the caller waits.
var ErrExceedsBurst = errors.New("ratelimit: n exceeds burst and can never be allowed")

// ErrWaitDeadline is wrapped by Wait and WaitN when the next token would arrive after the
// context's deadline, so waiting would be pointless. It is returned before sleeping.
var ErrWaitDeadline = errors.New("ratelimit: wait would exceed context deadline")

// ErrConcurrencyLimited is wrapped (by a *[ConcurrencyError]) when Acquire finds every slot of
// the key held.
var ErrConcurrencyLimited = errors.New("ratelimit: too many in flight")

// ErrPermitLost is wrapped by [Permit.Renew] when the permit's lease had already ended (or it was
// released): its slot may now belong to someone else.
var ErrPermitLost = errors.New("ratelimit: permit lost")
