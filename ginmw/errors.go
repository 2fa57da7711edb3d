package ginmw

import (
	"errors"
	"fmt"

	"github.com/gin-gonic/gin"
)

// ErrInvalidOptions is wrapped by every error the New* constructors return for a bad option; the
// message names the field and what is wrong with it.
var ErrInvalidOptions = errors.New("ginmw: invalid options")

// errNotCacheable is what the [Cache] loader returns for a response it must not store.
var errNotCacheable = errors.New("ginmw: response not cacheable")

// optionError returns an error naming the bad field, wrapping ErrInvalidOptions.
func optionError(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidOptions, field, fmt.Sprintf(format, args...))
}

// must returns h, or panics with err: the X constructors refuse invalid options at wiring time,
// as regexp.MustCompile does, instead of answering every request 500.
func must(h gin.HandlerFunc, err error) gin.HandlerFunc {
	if err != nil {
		panic(err)
	}
	return h
}
