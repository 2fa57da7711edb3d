package ginmw

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
)

// ClientIPKey returns the client address to key per-client state on, or "" when the request has
// none (a unix-socket listener whose requests carry no forwarding header, say). It is
// c.ClientIP(), Gin's trusted-proxy logic (engine.SetTrustedProxies, or a TrustedPlatform set to
// one of gin's Platform* headers), except when Gin took the address from a forwarding header
// only because the engine trusts every proxy (gin.New's default): any client can write that
// header, so the peer address of the connection (Request.RemoteAddr) is used instead. Requests on
// a unix socket keep Gin's answer (Gin trusts the local peer, normally your proxy).
//
// IPv4-mapped IPv6 addresses are unmapped and IPv6 addresses grouped by /64
// ("2001:db8:1:2::/64"), since one subscriber usually holds a whole /64; a header value that is
// not an IP address counts as no address. Safe for concurrent use; it does not block.
//
// As a [RateLimitOptions].Key, "" lets a request through uncharged: the default Key (nil) refuses
// such requests instead. See [CheckProxies] to find out how an engine resolves addresses.
func ClientIPKey(c *gin.Context) string {
	addr, _ := clientAddr(c)
	return addr
}

// clientAddr returns ClientIPKey's answer and whether it replaced a forwarding header's address
// that any peer may set (the engine trusts every proxy) by the peer address.
func clientAddr(c *gin.Context) (string, bool) {
	ip := c.ClientIP()
	spoofable := false
	if peer := c.RemoteIP(); ip != peer && peer != "" && anyPeerGets(c, peer, ip) {
		ip, spoofable = peer, true
	}
	addr, err := netip.ParseAddr(ip)
	switch {
	case err != nil:
		return "", spoofable // no address, or a header value that is not one ("<nil>" on unix sockets)
	case addr.Is4():
		return ip, spoofable // as Gin gave it: no new string
	case addr.Is4In6():
		return addr.Unmap().String(), spoofable
	}
	p, _ := addr.WithZone("").Prefix(64)
	return p.String(), spoofable
}

// platformHeaders are gin's Platform* headers: with engine.TrustedPlatform set to one of them Gin
// reads the client address from it whoever the peer is, by the caller's explicit choice.
var platformHeaders = [...]string{
	http.CanonicalHeaderKey(gin.PlatformCloudflare),
	http.CanonicalHeaderKey(gin.PlatformGoogleAppEngine),
	http.CanonicalHeaderKey(gin.PlatformFlyIO),
}

// anyPeerGets reports whether Gin gave ip (not the peer's address) to c's request only because it
// believes forwarding headers from every peer. It asks ClientIP again, on a copy of c (Gin's
// engine is reachable only through a context) holding a copy of the request that comes from the
// unspecified address, which only a trust-all engine trusts: a different answer means the real
// peer is a configured trusted proxy. The same answer comes from trusting every peer, or from a
// TrustedPlatform header, which a third question without gin's Platform* headers tells apart.
// Nothing the caller holds is modified, so other goroutines may read c meanwhile. The probes run
// only for requests whose address came from a header.
func anyPeerGets(c *gin.Context, peer, ip string) bool {
	probe := *c.Request
	probe.RemoteAddr = "0.0.0.0:1"
	if strings.IndexByte(peer, ':') >= 0 {
		probe.RemoteAddr = "[::]:1"
	}
	cp := c.Copy()
	cp.Request = &probe
	if cp.ClientIP() != ip {
		return false // the peer is a configured trusted proxy
	}
	platform := false
	for _, h := range platformHeaders {
		_, ok := probe.Header[h]
		platform = platform || ok
	}
	if !platform {
		return true // trust-all: the address came from a forwarding header
	}
	probe.Header = probe.Header.Clone()
	for _, h := range platformHeaders {
		delete(probe.Header, h)
	}
	return cp.ClientIP() == ip
}

// principalCredentials are request headers that carry a caller's credentials: a request with one
// of them and no verified JWT subject has a caller [Principal] cannot tell apart.
var principalCredentials = [...]string{"Authorization", "Cookie", "X-Api-Key"}

// Principal returns who a request acts for and whether that can be told at all; [Cache] and
// [Idempotency] use it by default, and their stored responses are never served across
// principals:
//   - when [JWT] verified a token with a subject: the token's issuer and subject (subjects are
//     unique per issuer only);
//   - when JWT verified a token without a subject (client-credentials tokens name the client in
//     client_id or azp, claims no standard makes unique): ok is false;
//   - when the request carries credentials nobody verified (Authorization, Cookie, X-API-Key:
//     sessions and API keys behind one address are different callers): ok is false;
//   - otherwise "ip:" + [ClientIPKey], and ok is false when the request has no client address.
//
// Set [CacheOptions].Principal or [IdempotencyOptions].Principal for other authentication
// schemes (a session lookup, a verified API key's tenant, [Claims] fields). The forms cannot
// collide: a subject never equals an address. Safe for concurrent use; it does not block.
func Principal(c *gin.Context) (string, bool) {
	if s := stateFrom(c); s != nil && s.authed {
		if s.subject == "" {
			return "", false
		}
		return "iss:" + strconv.Quote(s.issuer) + " sub:" + strconv.Quote(s.subject), true
	}
	h := c.Request.Header
	for _, k := range principalCredentials {
		if len(h[k]) > 0 {
			return "", false
		}
	}
	if addr := ClientIPKey(c); addr != "" {
		return "ip:" + addr, true
	}
	return "", false
}

// CheckProxies reports whether a client of engine can choose the address gin.Context.ClientIP
// returns for it, logging each reason as a warning through l (nil discards):
//   - the engine trusts every proxy (Gin's default until engine.SetTrustedProxies is called), so
//     X-Forwarded-For (or another of RemoteIPHeaders) from any client is believed;
//   - engine.TrustedPlatform is set, so its header is believed from any peer: safe only when
//     every request reaches the server through that platform, which overwrites the header.
//
// This package's middleware do not follow the first: [ClientIPKey] and [Principal] then use the
// peer address. Your handlers and access logs that call c.ClientIP() do. The check probes the
// engine through a gin.Context exactly as a request would, so it sees SetTrustedProxies,
// ForwardedByClientIP, RemoteIPHeaders and TrustedPlatform. Call it once at start-up after
// configuring the engine; [RateLimit] calls it when [RateLimitOptions].Engine is set. Does not
// block; not safe to call concurrently with changes to the engine's configuration.
func CheckProxies(engine *gin.Engine, l *slog.Logger) bool {
	if engine == nil {
		return false
	}
	log := discard(l)
	unsafe := false
	if engine.TrustedPlatform != "" {
		unsafe = true
		log.Warn("ginmw: the gin engine takes client addresses from the " + engine.TrustedPlatform +
			" header of any peer (engine.TrustedPlatform); that is safe only when every request reaches " +
			"this server through that platform, which overwrites the header; otherwise clients choose their own address")
	}
	if !engine.ForwardedByClientIP || len(engine.RemoteIPHeaders) == 0 {
		return unsafe
	}
	const forged = "192.0.2.1"                             // TEST-NET-1: what a spoofing client would claim
	for _, peer := range []string{"0.0.0.0:1", "[::]:1"} { // Gin's own test for "trusts all"
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "/", nil)
		req.RemoteAddr = peer
		req.Header.Set(engine.RemoteIPHeaders[0], forged)
		c := gin.CreateTestContextOnly(nopWriter{}, engine)
		c.Request = req
		if c.ClientIP() == forged {
			log.Warn("ginmw: the gin engine trusts every proxy, so c.ClientIP() returns whatever " +
				engine.RemoteIPHeaders[0] + " a client sends (ginmw's rate-limit keys and principals use the " +
				"peer address instead); call engine.SetTrustedProxies with your proxies' addresses, or nil when there are none")
			return true
		}
	}
	return unsafe
}

// nopWriter is the ResponseWriter of CheckProxies' probe context; nothing is written to it.
type nopWriter struct{}

func (nopWriter) Header() http.Header         { return http.Header{} }
func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nopWriter) WriteHeader(int)             {}
