package ginmw

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

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

// misconfigured is the handler the non-error constructors return for invalid options: it answers
// every request 500 (problem+json, no detail: the config is no business of the client) and logs
// err once, through l or slog.Default() when l is nil; a misconfiguration must be seen.
func misconfigured(err error, l *slog.Logger) gin.HandlerFunc {
	if l == nil {
		l = slog.Default()
	}
	var once sync.Once
	return func(c *gin.Context) {
		once.Do(func() { l.Error("ginmw: middleware misconfigured; answering 500", slog.Any("error", err)) })
		abortProblem(c, http.StatusInternalServerError, "")
	}
}
