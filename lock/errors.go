package lock

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrNotObtained means someone else holds the lock and the wait, if any, ran out. When the
	// caller's context ended the wait, the error also matches ctx.Err() with [errors.Is].
	ErrNotObtained = errors.New("lock: not obtained")

	// ErrNotHeld is returned by [Lock.Release], [Lock.Refresh] and [Lock.TTL] when the handle no
	// longer owns the lock: it expired, another holder has it now, or it was released already.
	ErrNotHeld = errors.New("lock: not held")

	// ErrLost is the cause ([context.Cause]) of the cancellation of the context that [Client.Do]
	// gives its function when the watchdog finds the lock lost.
	ErrLost = errors.New("lock: lost")

	// ErrNotReplicated is returned by Obtain when [Options.WaitReplicas] is set and fewer replicas
	// acknowledged the acquisition within [Options.WaitTimeout]; the lock has been released.
	ErrNotReplicated = errors.New("lock: not replicated")

	// ErrInvalidOptions is wrapped by the error of every Obtain and Do of a [Client] or [Redlock]
	// built with invalid [Options] (New never fails), and of an Obtain or Do given invalid
	// [ObtainOptions]; the message names the field.
	ErrInvalidOptions = errors.New("lock: invalid options")
)

// checkArgs validates what every Obtain and Do is given, before any Redis call.
func checkArgs(op, key string, ttl time.Duration, opt *ObtainOptions) error {
	if key == "" {
		return fmt.Errorf("lock: %s: empty key", op)
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("lock: %s %q: ttl %v is below 1ms", op, key, ttl)
	}
	if opt != nil {
		if opt.Wait < 0 {
			return fmt.Errorf("lock: %s %q: %w: ObtainOptions.Wait must not be negative, got %v", op, key, ErrInvalidOptions, opt.Wait)
		}
		if opt.AutoRenew && ttl < 3*time.Millisecond {
			return fmt.Errorf("lock: %s %q: %w: ttl %v is too short for ObtainOptions.AutoRenew (min 3ms)", op, key, ErrInvalidOptions, ttl)
		}
	}
	return nil
}

// errNilLock is returned by every method called on a nil *Lock.
var errNilLock = errors.New("lock: nil *Lock")

// notObtained builds the error of a failed Obtain: it wraps ErrNotObtained, the context's error
// when the context ended the wait, and the last Redis errors seen (Redlock).
func notObtained(key string, ctxErr error, errs []error) error {
	all := make([]error, 0, 2+len(errs))
	all = append(all, ErrNotObtained)
	if ctxErr != nil {
		all = append(all, ctxErr)
	}
	all = append(all, errs...)
	if len(all) == 1 {
		return fmt.Errorf("lock: obtain %q: %w", key, ErrNotObtained)
	}
	return fmt.Errorf("lock: obtain %q: %w", key, errors.Join(all...))
}
