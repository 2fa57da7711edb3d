package ginmw

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"

	"github.com/gin-gonic/gin"
)

// ClientIPKey returns the client address to key per-client state on: c.ClientIP() (Gin's
// trusted-proxy logic, the only source of client addresses in this package), with IPv4-mapped
// IPv6 addresses unmapped and IPv6 addresses grouped by /64 ("2001:db8:1:2::/64"), since one
// subscriber usually holds a whole /64. Returns "" when Gin finds no address. Safe for concurrent
// use.
//
// Gin trusts every proxy by default, so any client can then pick its address with
// X-Forwarded-For: call engine.SetTrustedProxies with your proxies (or nil) and see
// [CheckProxies].
func ClientIPKey(c *gin.Context) string {
	ip := c.ClientIP()
	if ip == "" {
		return ""
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip // a platform header (TrustedPlatform) may hold anything; use it as is
	}
	switch {
	case addr.Is4():
		return ip // as Gin gave it: no new string
	case addr.Is4In6():
		return addr.Unmap().String()
	}
	p, _ := addr.WithZone("").Prefix(64)
	return p.String()
}

// Principal returns who a request acts for, used by [Cache] and [Idempotency] by default:
// "sub:" + the subject of the token [JWT] verified for the request, else "ip:" + [ClientIPKey].
// The prefixes keep a subject from ever equalling an address. Safe for concurrent use.
func Principal(c *gin.Context) string {
	if s := stateFrom(c); s != nil && s.authed && s.subject != "" {
		return "sub:" + s.subject
	}
	return "ip:" + ClientIPKey(c)
}

// CheckProxies reports whether engine trusts every proxy (Gin's default, which lets any client
// set its own address with X-Forwarded-For and so its rate-limit key) and, when it does, logs a
// warning through l (nil discards). It probes the engine through a gin.Context exactly as a
// request would, so it sees SetTrustedProxies, ForwardedByClientIP and RemoteIPHeaders. Call it
// once at start-up after configuring the engine; [RateLimit] calls it when
// [RateLimitOptions].Engine is set. Does not block; not safe to call concurrently with changes
// to the engine's configuration.
func CheckProxies(engine *gin.Engine, l *slog.Logger) bool {
	if engine == nil || !engine.ForwardedByClientIP || len(engine.RemoteIPHeaders) == 0 {
		return false
	}
	const forged = "192.0.2.1" // TEST-NET-1: what a spoofing client would claim
	unsafe := false
	for _, peer := range []string{"0.0.0.0:1", "[::]:1"} { // Gin's own test for "trusts all"
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "/", nil)
		req.RemoteAddr = peer
		req.Header.Set(engine.RemoteIPHeaders[0], forged)
		c := gin.CreateTestContextOnly(nopWriter{}, engine)
		c.Request = req
		if c.ClientIP() == forged {
			unsafe = true
			break
		}
	}
	if unsafe {
		discard(l).Warn("ginmw: the gin engine trusts every proxy, so clients choose their own IP " +
			"(and rate-limit key) with " + engine.RemoteIPHeaders[0] + "; call engine.SetTrustedProxies " +
			"with your proxies' addresses, or nil when there are none")
	}
	return unsafe
}

// nopWriter is the ResponseWriter of CheckProxies' probe context; nothing is written to it.
type nopWriter struct{}

func (nopWriter) Header() http.Header         { return http.Header{} }
func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nopWriter) WriteHeader(int)             {}
