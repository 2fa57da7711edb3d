package ginmw

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

var hmacSecret = []byte("0123456789abcdef0123456789abcdef") // 32 bytes: HS256's minimum

// jwtNow is the fixed clock of the JWT tests.
var jwtNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	require.NoError(t, err)
	return s
}

func validClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub": "user-1", "iss": "https://issuer.example", "aud": []string{"orders", "other"},
		"exp": jwtNow.Add(time.Hour).Unix(), "iat": jwtNow.Add(-time.Minute).Unix(),
		"scope": "read write", "tenant": "acme",
	}
}

func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// jwtEngine builds an engine whose /me handler reports the claims JWT verified.
func jwtEngine(t *testing.T, opt JWTOptions) *gin.Engine {
	t.Helper()
	opt.now = func() time.Time { return jwtNow }
	mw, err := NewJWT(opt)
	require.NoError(t, err)
	r := newEngine(t, mw)
	r.GET("/me", func(c *gin.Context) {
		rc, ok := Claims[*jwt.RegisteredClaims](c)
		if !ok {
			c.String(http.StatusOK, "anonymous "+principalOf(c))
			return
		}
		c.String(http.StatusOK, rc.Subject+" "+principalOf(c))
	})
	return r
}

func rsOpt() JWTOptions {
	return JWTOptions{Key: &rsaKey().PublicKey, ValidMethods: []string{"RS256"}, Issuer: "https://issuer.example", Audience: "orders"}
}

func bearer(r *gin.Engine, tok string) *httptest.ResponseRecorder {
	return get(r, "/me", "Authorization", "Bearer "+tok)
}

func assertInvalidToken(t *testing.T, w *httptest.ResponseRecorder, why string) {
	t.Helper()
	assert.Equal(t, http.StatusUnauthorized, w.Code, why)
	assert.Equal(t, `Bearer realm="api", error="invalid_token"`, w.Header().Get("WWW-Authenticate"), why)
	assert.Equal(t, problemJSON, w.Header().Get("Content-Type"))
	body := strings.ToLower(w.Body.String())
	for _, leak := range []string{"expired", "signature", "audience", "issuer", "required", "method", "malformed"} {
		assert.NotContains(t, body, leak, "parser error echoed for %s", why)
	}
}

func TestJWTValidTokenAndClaims(t *testing.T) {
	opt := rsOpt()
	opt.now = func() time.Time { return jwtNow }
	mw, err := NewJWT(opt)
	require.NoError(t, err)
	r := newEngine(t, mw)
	type myClaims struct {
		jwt.RegisteredClaims
		Scope  string `json:"scope"`
		Tenant string `json:"tenant"`
	}
	var got struct {
		reg    *jwt.RegisteredClaims
		mc     jwt.MapClaims
		mine   *myClaims
		iface  jwt.Claims
		ok     [4]bool
		princ  string
		mutate string
	}
	r.GET("/me", func(c *gin.Context) {
		got.reg, got.ok[0] = Claims[*jwt.RegisteredClaims](c)
		got.mc, got.ok[1] = Claims[jwt.MapClaims](c)
		got.mine, got.ok[2] = Claims[*myClaims](c)
		got.iface, got.ok[3] = Claims[jwt.Claims](c)
		got.princ = principalOf(c)
		got.mine.Tenant = "changed" // each call decodes anew
		again, _ := Claims[*myClaims](c)
		got.mutate = again.Tenant
		c.Status(http.StatusOK)
	})
	w := get(r, "/me", "Authorization", "bearer "+sign(t, jwt.SigningMethodRS256, rsaKey(), validClaims()))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	assert.Equal(t, [4]bool{true, true, true, true}, got.ok)
	assert.Equal(t, "user-1", got.reg.Subject)
	assert.Equal(t, jwt.ClaimStrings{"orders", "other"}, got.reg.Audience)
	assert.Equal(t, "acme", got.mc["tenant"])
	assert.Equal(t, "read write", got.mine.Scope)
	assert.Equal(t, "user-1", got.mine.Subject)
	sub, err := got.iface.GetSubject()
	require.NoError(t, err)
	assert.Equal(t, "user-1", sub)
	assert.Equal(t, "iss:\"https://issuer.example\" sub:\"user-1\"", got.princ)
	assert.Equal(t, "acme", got.mutate)
}

func TestJWTRejectsBadTokens(t *testing.T) {
	r := jwtEngine(t, rsOpt())
	pub := &rsaKey().PublicKey
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	other, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, validClaims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)
	valid := sign(t, jwt.SigningMethodRS256, rsaKey(), validClaims())
	parts := strings.Split(valid, ".")

	cases := map[string]string{
		"alg none":                  none,
		"alg none, empty signature": strings.TrimSuffix(none, ".") + ".",
		"HS256 with RSA public key": sign(t, jwt.SigningMethodHS256, pubPEM, validClaims()),
		"HS256 with RSA key DER":    sign(t, jwt.SigningMethodHS256, der, validClaims()),
		"other RSA key":             sign(t, jwt.SigningMethodRS256, other, validClaims()),
		"RS512 not in ValidMethods": sign(t, jwt.SigningMethodRS512, rsaKey(), validClaims()),
		"expired":                   sign(t, jwt.SigningMethodRS256, rsaKey(), with(validClaims(), "exp", jwtNow.Add(-time.Second).Unix())),
		"missing exp":               sign(t, jwt.SigningMethodRS256, rsaKey(), with(validClaims(), "exp", nil)),
		"exp as string":             sign(t, jwt.SigningMethodRS256, rsaKey(), with(validClaims(), "exp", "tomorrow")),
		"wrong audience":            sign(t, jwt.SigningMethodRS256, rsaKey(), with(validClaims(), "aud", "billing")),
		"missing audience":          sign(t, jwt.SigningMethodRS256, rsaKey(), with(validClaims(), "aud", nil)),
		"wrong issuer":              sign(t, jwt.SigningMethodRS256, rsaKey(), with(validClaims(), "iss", "https://evil.example")),
		"not yet valid":             sign(t, jwt.SigningMethodRS256, rsaKey(), with(validClaims(), "nbf", jwtNow.Add(time.Minute).Unix())),
		"issued in the future":      sign(t, jwt.SigningMethodRS256, rsaKey(), with(validClaims(), "iat", jwtNow.Add(time.Minute).Unix())),
		"tampered payload":          parts[0] + "." + strings.TrimRight(parts[1], "A") + "B." + parts[2],
		"garbage":                   "not.a.jwt",
		"two segments":              parts[0] + "." + parts[1],
	}
	for why, tok := range cases {
		assertInvalidToken(t, bearer(r, tok), why)
	}
}

func TestJWTLeeway(t *testing.T) {
	opt := rsOpt()
	expired := sign(t, jwt.SigningMethodRS256, rsaKey(), with(validClaims(), "exp", jwtNow.Add(-10*time.Second).Unix()))
	assertInvalidToken(t, bearer(jwtEngine(t, opt), expired), "no leeway")
	opt.Leeway = 30 * time.Second
	assert.Equal(t, http.StatusOK, bearer(jwtEngine(t, opt), expired).Code, "within leeway")
}

func TestJWTMissingOrMalformedHeader(t *testing.T) {
	r := jwtEngine(t, rsOpt())
	valid := sign(t, jwt.SigningMethodRS256, rsaKey(), validClaims())
	for why, h := range map[string]http.Header{
		"none":                {},
		"basic scheme":        {"Authorization": {"Basic dXNlcjpwYXNz"}},
		"token in query only": {},
	} {
		target := "/me"
		if why == "token in query only" {
			target += "?access_token=" + valid
		}
		w := do(r, req{target: target, header: h})
		assert.Equal(t, http.StatusUnauthorized, w.Code, why)
		assert.Equal(t, `Bearer realm="api"`, w.Header().Get("WWW-Authenticate"), why)
	}
	for why, h := range map[string]http.Header{
		"two headers": {"Authorization": {"Bearer " + valid, "Bearer " + valid}},
		"empty token": {"Authorization": {"Bearer "}},
		"scheme only": {"Authorization": {"Bearer"}},
		"bad chars":   {"Authorization": {"Bearer a b"}},
	} {
		w := do(r, req{target: "/me", header: h})
		assert.Equal(t, http.StatusBadRequest, w.Code, why)
		assert.Equal(t, `Bearer realm="api", error="invalid_request"`, w.Header().Get("WWW-Authenticate"), why)
	}
	assert.Equal(t, http.StatusOK, get(r, "/me", "Authorization", "BEARER   "+valid).Code, "scheme case-insensitive, extra spaces")
}

func TestJWTOptional(t *testing.T) {
	opt := rsOpt()
	opt.Optional = true
	opt.Realm = "orders"
	r := jwtEngine(t, opt)
	w := do(r, req{target: "/me", remote: "198.51.100.9:1"})
	assert.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, "anonymous ip:198.51.100.9", w.Body.String())
	w = bearer(r, "garbage.token.here")
	assert.Equal(t, http.StatusUnauthorized, w.Code, "a bad token is still refused")
	assert.Equal(t, `Bearer realm="orders", error="invalid_token"`, w.Header().Get("WWW-Authenticate"))
}

func TestJWTKeyTypes(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	for _, tc := range []struct {
		m        jwt.SigningMethod
		sign, vk any
	}{
		{jwt.SigningMethodHS256, hmacSecret, hmacSecret},
		{jwt.SigningMethodES256, ec, &ec.PublicKey},
		{jwt.SigningMethodEdDSA, edPriv, edPub},
		{jwt.SigningMethodPS256, rsaKey(), &rsaKey().PublicKey},
	} {
		r := jwtEngine(t, JWTOptions{Key: tc.vk, ValidMethods: []string{tc.m.Alg()}})
		w := bearer(r, sign(t, tc.m, tc.sign, validClaims()))
		assert.Equal(t, http.StatusOK, w.Code, tc.m.Alg())
		assert.Equal(t, "user-1 iss:\"https://issuer.example\" sub:\"user-1\"", w.Body.String())
	}
}

func TestJWTKeyfuncRotation(t *testing.T) {
	keys := map[string][]byte{"k1": hmacSecret, "k2": []byte(strings.Repeat("z", 32))}
	r := jwtEngine(t, JWTOptions{ValidMethods: []string{"HS256"}, Keyfunc: func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		k, ok := keys[kid]
		if !ok {
			return nil, jwt.ErrTokenUnverifiable
		}
		return k, nil
	}})
	for kid, k := range keys {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, validClaims())
		tok.Header["kid"] = kid
		s, err := tok.SignedString(k)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, bearer(r, s).Code, kid)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, validClaims())
	tok.Header["kid"] = "k3"
	s, err := tok.SignedString(hmacSecret)
	require.NoError(t, err)
	assertInvalidToken(t, bearer(r, s), "unknown kid")

	// The Keyfunc hands out HMAC secrets whatever the alg: only the pinned methods refuse HS384.
	tok = jwt.NewWithClaims(jwt.SigningMethodHS384, validClaims())
	tok.Header["kid"] = "k1"
	s, err = tok.SignedString(hmacSecret)
	require.NoError(t, err)
	assertInvalidToken(t, bearer(r, s), "HS384 not in ValidMethods")
}

func TestNewJWTRejectsBadConfig(t *testing.T) {
	pub := &rsaKey().PublicKey
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	kf := func(*jwt.Token) (any, error) { return hmacSecret, nil }
	for field, opt := range map[string]JWTOptions{
		"ValidMethods: required":  {Key: pub},
		"ValidMethods: none":      {Key: pub, ValidMethods: []string{"RS256", "none"}},
		"ValidMethods: unknown":   {Key: pub, ValidMethods: []string{"RS257"}},
		"Key: neither":            {ValidMethods: []string{"RS256"}},
		"Key: both":               {Key: pub, Keyfunc: kf, ValidMethods: []string{"RS256"}},
		"Key: HMAC and RSA":       {Key: pub, ValidMethods: []string{"RS256", "HS256"}},
		"Key: PEM as HMAC secret": {Key: pubPEM, ValidMethods: []string{"HS256"}},
		"Key: short HMAC secret":  {Key: []byte("short"), ValidMethods: []string{"HS256"}},
		"Key: HS512 needs 64":     {Key: hmacSecret, ValidMethods: []string{"HS512"}},
		"Key: private key":        {Key: rsaKey(), ValidMethods: []string{"RS256"}},
		"Key: wrong curve type":   {Key: pub, ValidMethods: []string{"ES256"}},
		"Leeway: negative":        {Key: pub, ValidMethods: []string{"RS256"}, Leeway: -time.Second},
		"Leeway: too large":       {Key: pub, ValidMethods: []string{"RS256"}, Leeway: time.Hour},
		"Realm: quote":            {Key: pub, ValidMethods: []string{"RS256"}, Realm: `a"b`},
	} {
		_, err := NewJWT(opt)
		require.ErrorIs(t, err, ErrInvalidOptions, field)
		name, _, _ := strings.Cut(field, ":")
		assert.Contains(t, err.Error(), "JWTOptions."+name, field)
	}
}

func TestJWTMisconfiguredPanicsAtWiring(t *testing.T) {
	defer func() {
		err, _ := recover().(error)
		require.ErrorIs(t, err, ErrInvalidOptions)
		assert.Contains(t, err.Error(), "JWTOptions.ValidMethods")
	}()
	JWT(JWTOptions{Key: hmacSecret}) // no ValidMethods
	t.Error("JWT did not panic")
}

func TestClaimsWithoutJWT(t *testing.T) {
	r := newEngine(t)
	var ok bool
	r.GET("/", func(c *gin.Context) {
		_, ok = Claims[*jwt.RegisteredClaims](c)
		c.String(http.StatusOK, principalOf(c))
	})
	w := do(r, req{target: "/", remote: "[2001:db8::5]:1"})
	assert.False(t, ok)
	assert.Equal(t, "ip:2001:db8::/64", w.Body.String())
}
