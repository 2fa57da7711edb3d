package ginmw

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
	"github.com/surgekit/surge/ratelimit"
)

// Issue 15 defect 1: two tenants behind one address whose verified tokens carry no "sub"
// (client-credentials tokens name the client in client_id/azp) must never share a record.
func TestIdempotencyNoCrossTenantReplayWithoutSubject(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	idem, err := NewIdempotency(rdb, nil)
	require.NoError(t, err)
	auth, err := NewJWT(JWTOptions{Key: hmacSecret, ValidMethods: []string{"HS256"}, now: func() time.Time { return jwtNow }})
	require.NoError(t, err)
	r := newEngine(t, auth, idem)
	runs := 0
	r.POST("/charges", func(c *gin.Context) {
		runs++
		claims, _ := Claims[jwt.MapClaims](c)
		c.String(http.StatusCreated, "charged for %v", claims["client_id"])
	})
	token := func(client string) string {
		return sign(t, jwt.SigningMethodHS256, hmacSecret, jwt.MapClaims{
			"client_id": client, "azp": client, "exp": jwtNow.Add(time.Hour).Unix(), "iat": jwtNow.Unix(),
		})
	}
	post := func(client string) *http.Response {
		w := do(r, req{method: http.MethodPost, target: "/charges", body: `{"amount":5}`, header: http.Header{
			"Authorization": {"Bearer " + token(client)}, "Idempotency-Key": {"k-1"},
		}})
		return w.Result()
	}
	a, b := post("tenant-a"), post("tenant-b")
	bodyB, _ := io.ReadAll(b.Body)
	assert.Equal(t, http.StatusCreated, a.StatusCode)
	assert.Empty(t, b.Header.Get(headerReplayed), "tenant B must not be replayed tenant A's response")
	assert.Equal(t, "charged for tenant-b", string(bodyB))
	assert.Equal(t, 2, runs)
	assert.Empty(t, mr.Keys(), "a caller the middleware cannot tell apart is not stored")
}

// Issue 15 defect 1, cookie/API-key half: session callers behind one address are not one principal.
func TestIdempotencyNoCrossSessionReplayWithCookies(t *testing.T) {
	for _, hdr := range []string{"Cookie", "Authorization", "X-Api-Key"} {
		t.Run(hdr, func(t *testing.T) {
			logger, logs := newJSONLogger(0)
			a := newOrderAPI(t, &IdempotencyOptions{Logger: logger})
			w1 := a.post("k", "same body", hdr, "session=alice")
			w2 := a.post("k", "same body", hdr, "session=bob")
			assert.Equal(t, http.StatusCreated, w1.Code)
			assert.Empty(t, w2.Header().Get(headerReplayed), "bob replayed alice's response")
			assert.EqualValues(t, 2, a.runs.Load())
			assert.Empty(t, a.mr.Keys())
			assert.Len(t, logs.lines(), 1, "warned once")
			assert.Contains(t, logs.String(), "IdempotencyOptions.Principal")
		})
	}
}

// Issue 15 defect 2: RateLimit-Policy's window is exact for every PerSecond/PerMinute/PerHour.
func TestRateLimitPolicyWindowExact(t *testing.T) {
	bad := 0
	for _, tc := range []struct {
		mk func(int) ratelimit.Limit
		w  int
	}{{ratelimit.PerSecond, 1}, {ratelimit.PerMinute, 60}, {ratelimit.PerHour, 3600}} {
		for n := 1; n <= 10000; n++ {
			lim := tc.mk(n)
			want := `"` + limitName(lim) + `";q=` + strconv.Itoa(n) + `;w=` + strconv.Itoa(tc.w)
			if got := policyValue(lim); got != want {
				if bad++; bad <= 5 {
					t.Errorf("%v: got %s, want %s", lim, got, want)
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of 30000 limits have an inexact window", bad)
	}
}

// Issue 15 defect 3: with gin.New() (which trusts every proxy) one client must not buy a new
// bucket per X-Forwarded-For value.
func TestRateLimitDefaultKeyNotSpoofableOnDefaultEngine(t *testing.T) {
	r := gin.New()
	r.Use(RateLimit(newLocal(t, ratelimit.PerHour(1)), nil))
	r.GET("/", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	allowed := 0
	for i := range 50 {
		w := do(r, req{target: "/", remote: "203.0.113.9:4000", header: http.Header{
			"X-Forwarded-For": {"198.51.100." + strconv.Itoa(i+1)},
		}})
		if w.Code == http.StatusOK {
			allowed++
		}
	}
	assert.Equal(t, 1, allowed, "requests allowed under a 1/h limit")
}

// Issue 15 defect 3: a TrustedPlatform header is believed from any peer, so CheckProxies says so.
func TestCheckProxiesSeesTrustedPlatform(t *testing.T) {
	r := gin.New()
	require.NoError(t, r.SetTrustedProxies(nil))
	r.TrustedPlatform = gin.PlatformCloudflare
	logger, logs := newJSONLogger(0)
	assert.True(t, CheckProxies(r, logger), "CF-Connecting-IP picks the address")
	assert.Contains(t, logs.String(), "CF-Connecting-IP")
}

// serveUnix serves h on a unix socket and returns a client for it.
func serveUnix(t *testing.T, h http.Handler) *http.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		_ = srv.Close()
		<-done
	})
	return &http.Client{Transport: tr}
}

func unixDo(t *testing.T, c *http.Client, method, target, body string, header http.Header) *http.Response {
	t.Helper()
	hr, err := http.NewRequestWithContext(context.Background(), method, "http://unix"+target, strings.NewReader(body))
	require.NoError(t, err)
	for k, vs := range header {
		hr.Header[k] = vs
	}
	resp, err := c.Do(hr)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp
}

// Issue 15 defect 4: on a unix socket there is no client address; requests are not let through
// uncharged under one shared "" key, and no two callers share the "ip:" principal.
func TestNoAddressIsNeitherUnlimitedNorShared(t *testing.T) {
	_, rdb := redistest.Mini(t)
	r := newEngine(t)
	r.GET("/limited", RateLimit(newLocal(t, ratelimit.PerHour(1)), nil), func(c *gin.Context) { c.Status(http.StatusOK) })
	r.POST("/orders", Idempotency(rdb, nil), func(c *gin.Context) {
		body, _ := io.ReadAll(c.Request.Body)
		c.String(http.StatusCreated, "order for %s", body)
	})
	client := serveUnix(t, r)
	ok := 0
	for range 5 {
		if unixDo(t, client, http.MethodGet, "/limited", "", nil).StatusCode == http.StatusOK {
			ok++
		}
	}
	assert.Zero(t, ok, "requests without a client address let through uncharged")

	h := http.Header{"Idempotency-Key": {"k"}}
	unixDo(t, client, http.MethodPost, "/orders", "x", h)
	w := unixDo(t, client, http.MethodPost, "/orders", "x", h)
	assert.Empty(t, w.Header.Get(headerReplayed), "two callers without an address shared a record")
}

// The default key follows configured proxies and platforms, and only the peer when Gin would
// believe any client's header; the warning about it comes once.
func TestRateLimitDefaultKeySources(t *testing.T) {
	xff := http.Header{"X-Forwarded-For": {"198.51.100.7"}}
	for _, tc := range []struct {
		name      string
		configure func(r *gin.Engine)
		header    http.Header
		want      string
		warnings  int
	}{
		{"trust-all", func(*gin.Engine) {}, xff, "203.0.113.5", 1},
		{"trust-all custom header", func(r *gin.Engine) { r.RemoteIPHeaders = []string{"X-Client-Ip"} },
			http.Header{"X-Client-Ip": {"198.51.100.7"}}, "203.0.113.5", 1},
		{"trusted proxy", func(r *gin.Engine) { require.NoError(t, r.SetTrustedProxies([]string{"203.0.113.0/24"})) }, xff, "198.51.100.7", 0},
		{"no proxies", func(r *gin.Engine) { require.NoError(t, r.SetTrustedProxies(nil)) }, xff, "203.0.113.5", 0},
		{"platform", func(r *gin.Engine) {
			require.NoError(t, r.SetTrustedProxies(nil))
			r.TrustedPlatform = gin.PlatformCloudflare
		}, http.Header{"Cf-Connecting-Ip": {"198.51.100.8"}}, "198.51.100.8", 0},
		{"platform on trust-all", func(r *gin.Engine) { r.TrustedPlatform = gin.PlatformCloudflare },
			http.Header{"Cf-Connecting-Ip": {"198.51.100.8"}, "X-Forwarded-For": {"198.51.100.7"}}, "198.51.100.8", 0},
		{"platform header missing on trust-all", func(r *gin.Engine) { r.TrustedPlatform = gin.PlatformCloudflare }, xff, "203.0.113.5", 1},
		{"no header", func(*gin.Engine) {}, nil, "203.0.113.5", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &keyRecorder{Limiter: newLocal(t, ratelimit.PerSecond(100))}
			logger, logs := newJSONLogger(0)
			r := gin.New()
			tc.configure(r)
			r.Use(RateLimit(rec, &RateLimitOptions{Logger: logger}))
			r.GET("/", func(c *gin.Context) { c.Status(http.StatusOK) })
			for range 2 {
				assert.Equal(t, http.StatusOK, do(r, req{target: "/", remote: "203.0.113.5:1", header: tc.header}).Code)
			}
			assert.Equal(t, []string{tc.want, tc.want}, rec.keys)
			assert.Len(t, logs.lines(), tc.warnings)
			if tc.warnings > 0 {
				assert.Contains(t, logs.String(), "SetTrustedProxies")
			}
		})
	}
}

// A request without any address is charged to NoAddressKey when set, else refused (logged once);
// a custom Key's "" still means uncharged.
func TestRateLimitNoAddress(t *testing.T) {
	rec := &keyRecorder{Limiter: newLocal(t, ratelimit.PerHour(2))}
	logger, logs := newJSONLogger(0)
	r := newEngine(t, RateLimit(rec, &RateLimitOptions{Logger: logger}))
	r.GET("/", func(c *gin.Context) { c.Status(http.StatusOK) })
	for range 2 {
		assert.Equal(t, http.StatusInternalServerError, do(r, req{target: "/", remote: "pipe"}).Code)
	}
	assert.Len(t, logs.lines(), 1)
	assert.Contains(t, logs.String(), "NoAddressKey")
	assert.Empty(t, rec.keys)

	r = newEngine(t, RateLimit(rec, &RateLimitOptions{NoAddressKey: "no-address"}))
	r.GET("/", func(c *gin.Context) { c.Status(http.StatusOK) })
	codes := []int{}
	for range 3 {
		codes = append(codes, do(r, req{target: "/", remote: "pipe"}).Code)
	}
	assert.Equal(t, []int{200, 200, 429}, codes, "one shared bucket")
	assert.Equal(t, []string{"no-address", "no-address", "no-address"}, rec.keys)

	// Nor is there a principal: no "ip:" shared by every such caller.
	r = newEngine(t)
	ok := true
	r.GET("/", func(c *gin.Context) { _, ok = Principal(c) })
	do(r, req{target: "/", remote: "pipe"})
	assert.False(t, ok)
}

// Cache bypasses callers it cannot tell apart: a verified token without a subject.
func TestCacheBypassesTokenWithoutSubject(t *testing.T) {
	_, rdb := redistest.Mini(t)
	h := newHTTPCache(t, rdb, nil)
	auth := JWT(JWTOptions{Key: hmacSecret, ValidMethods: []string{"HS256"}, now: func() time.Time { return jwtNow }})
	r := newEngine(t, auth, h.Handler())
	r.GET("/me", func(c *gin.Context) {
		claims, _ := Claims[jwt.MapClaims](c)
		c.String(http.StatusOK, "%v", claims["client_id"])
	})
	tok := func(client string) string {
		return sign(t, jwt.SigningMethodHS256, hmacSecret, with(validClaims(), "sub", nil, "client_id", client))
	}
	a, b := bearer(r, tok("a")), bearer(r, tok("b"))
	assert.Equal(t, cacheStatusBypass, a.Header().Get("Cache-Status"))
	assert.Equal(t, "b", b.Body.String())
}

// Subjects are unique per issuer only: the same "sub" from two issuers is two principals.
func TestPrincipalIncludesIssuer(t *testing.T) {
	auth := JWT(JWTOptions{Key: hmacSecret, ValidMethods: []string{"HS256"}, now: func() time.Time { return jwtNow }})
	r := newEngine(t, auth)
	var got []string
	r.GET("/", func(c *gin.Context) { got = append(got, principalOf(c)) })
	for _, iss := range []string{"https://a.example", "https://b.example"} {
		tok := sign(t, jwt.SigningMethodHS256, hmacSecret, with(validClaims(), "iss", iss))
		get(r, "/", "Authorization", "Bearer "+tok)
	}
	require.Len(t, got, 2)
	assert.NotEqual(t, got[0], got[1])
}

// ClientIPKey may be called while other goroutines read the request: its probes change nothing
// the caller holds (run with -race).
func TestClientIPKeyLeavesTheRequestAlone(t *testing.T) {
	r := gin.New() // trusts every proxy, so the probes run
	var odd []string
	r.GET("/", func(c *gin.Context) {
		done := make(chan []string)
		go func() {
			var seen []string
			for range 200 {
				if a := c.Request.RemoteAddr; a != "203.0.113.5:1" {
					seen = append(seen, a)
				}
			}
			done <- seen
		}()
		for range 200 {
			ClientIPKey(c)
		}
		odd = <-done
		c.Status(http.StatusOK)
	})
	do(r, req{target: "/", remote: "203.0.113.5:1", header: http.Header{"X-Forwarded-For": {"198.51.100.7"}}})
	assert.Empty(t, odd)
}

// A Principal for the service's own scheme restores idempotency for API-key callers.
func TestIdempotencyCustomPrincipal(t *testing.T) {
	a := newOrderAPI(t, &IdempotencyOptions{Principal: func(c *gin.Context) (string, bool) {
		k := c.GetHeader("X-Api-Key") // verified by an earlier middleware in a real service
		return "key:" + k, k != ""
	}})
	w1 := a.post("k", "body", "X-Api-Key", "alice")
	w2 := a.post("k", "body", "X-Api-Key", "alice")
	w3 := a.post("k", "body", "X-Api-Key", "bob")
	assert.Empty(t, w1.Header().Get(headerReplayed))
	assert.Equal(t, "true", w2.Header().Get(headerReplayed), "alice's retry is replayed")
	assert.Empty(t, w3.Header().Get(headerReplayed), "bob is not alice")
	assert.EqualValues(t, 2, a.runs.Load())
}
