package ginmw

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// credentialHeaders are never logged, whatever LoggerOptions.Headers says.
var credentialHeaders = map[string]bool{
	"Authorization": true, "Proxy-Authorization": true, "Cookie": true, "Set-Cookie": true,
}

type loggedHeader struct{ name, attr string }

// Logger returns middleware that writes one structured line per request to opt.Logger
// (slog.Default() when nil: an access log that discards would be pointless): method, route,
// path (without the query, which may carry secrets), status, latency, bytes, client_ip, request_id
// when [RequestID] ran before, and trace_id and span_id when RequestID or [Telemetry] did (the
// span's ids when Telemetry opened one). The level follows the status: Error
// for 5xx (and for a panic passing through, logged as status 500 with panic=true), Warn for 4xx,
// Info otherwise. Only the headers named in opt.Headers are logged, and never Authorization,
// Cookie or Set-Cookie. Handlers get a logger carrying the ids from [LoggerFrom].
//
// opt may be nil. The handler blocks only for the logger's handler; it is safe for concurrent
// use. Logger panics at wiring time when [NewLogger] would return an error.
func Logger(opt *LoggerOptions) gin.HandlerFunc {
	return must(NewLogger(opt))
}

// NewLogger is [Logger] returning an error wrapping [ErrInvalidOptions] instead of panicking when
// opt.Headers names a credential header or an invalid name.
func NewLogger(opt *LoggerOptions) (gin.HandlerFunc, error) {
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	l, skip, headers := cfg.log, cfg.skip, cfg.headers
	return func(c *gin.Context) {
		start := time.Now()
		s := stateOf(c)
		s.base = l
		if skip != nil && skip(c) {
			c.Next()
			return
		}
		finished := false
		defer func() {
			if !finished { // a panic is passing through; log it, do not stop it
				logRequest(c, l, s, start, headers, true)
			}
		}()
		c.Next()
		finished = true
		logRequest(c, l, s, start, headers, false)
	}, nil
}

func logRequest(c *gin.Context, l *slog.Logger, s *state, start time.Time, headers []loggedHeader, panicked bool) {
	status := c.Writer.Status()
	if panicked {
		status = http.StatusInternalServerError
	}
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelWarn
	}
	ctx := c.Request.Context()
	if !l.Enabled(ctx, level) {
		return
	}
	var buf [16]slog.Attr // on the stack unless many headers are logged
	attrs := append(buf[:0],
		slog.String("method", c.Request.Method),
		slog.String("route", c.FullPath()),
		slog.String("path", c.Request.URL.Path),
		slog.Int("status", status),
		slog.Duration("latency", time.Since(start)),
		slog.Int("bytes", max(c.Writer.Size(), 0)),
		slog.String("client_ip", c.ClientIP()),
	)
	if s.requestID != "" {
		attrs = append(attrs, slog.String("request_id", s.requestID))
	}
	if s.hasTrace {
		attrs = append(attrs, slog.String("trace_id", s.trace.TraceID), slog.String("span_id", s.trace.SpanID))
	}
	for _, h := range headers {
		if v := c.Request.Header[h.name]; len(v) > 0 {
			attrs = append(attrs, slog.String(h.attr, strings.Join(v, ", ")))
		}
	}
	if len(c.Errors) > 0 {
		attrs = append(attrs, slog.String("errors", c.Errors.String()))
	}
	if panicked {
		attrs = append(attrs, slog.Bool("panic", true))
	}
	l.LogAttrs(ctx, level, "request", attrs...)
}
