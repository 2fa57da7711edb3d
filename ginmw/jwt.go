package ginmw

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"log/slog"
	"net/http"
	"reflect"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
)

// NewJWT is [JWT] returning an error wrapping [ErrInvalidOptions] instead of panicking when opt
// is invalid: no ValidMethods, "none" or an unknown method, neither or both of Key and Keyfunc, a
// Key whose type does not fit every method (which also refuses one static key for HMAC and
// public-key methods, the classic algorithm confusion), an HMAC key shorter than its hash or
// holding a PEM block, a Leeway outside [0, [MaxJWTLeeway]], or a Realm that cannot be quoted.
func NewJWT(opt JWTOptions) (gin.HandlerFunc, error) {
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	realm := cfg.realm
	v := &jwtVerifier{
		parser:   jwt.NewParser(cfg.popts...),
		keyfunc:  cfg.keyfunc,
		optional: cfg.optional,
		log:      cfg.log,
		missing:  []string{`Bearer realm="` + realm + `"`},
		invalid:  []string{`Bearer realm="` + realm + `", error="invalid_token"`},
		badReq:   []string{`Bearer realm="` + realm + `", error="invalid_request"`},
	}
	return v.handle, nil
}

// JWT returns middleware that authenticates requests with a bearer JWT (RFC 6750) taken from the
// Authorization header only (scheme case-insensitive; never a query parameter or cookie).
//
// Tokens are verified with golang-jwt v5 pinned to opt.ValidMethods, with "exp" required, "iat"
// not in the future, Issuer and Audience checked when set, and opt.Leeway of clock skew. A
// request without a bearer token gets 401 with WWW-Authenticate: Bearer realm="..." (no error
// attribute, per RFC 6750 section 3.1) unless opt.Optional; a bad token gets 401 with
// error="invalid_token"; a malformed header (repeated, empty token) gets 400 with
// error="invalid_request". Bodies are application/problem+json and never carry the parser's
// reason, which goes to opt.Logger at debug level.
//
// The verified claims are read with [Claims]; [Principal] names the caller by the token's issuer
// and subject (and cannot tell callers apart whose tokens have no subject).
//
// JWT panics at wiring time on an invalid opt (see [NewJWT]). A Keyfunc may block (a JWKS
// fetch); the handler is otherwise non-blocking and safe for concurrent use.
func JWT(opt JWTOptions) gin.HandlerFunc {
	return must(NewJWT(opt))
}

type jwtVerifier struct {
	parser                   *jwt.Parser
	keyfunc                  jwt.Keyfunc
	optional                 bool
	log                      *slog.Logger
	missing, invalid, badReq []string // WWW-Authenticate values
}

func (v *jwtVerifier) handle(c *gin.Context) {
	raw, ok := bearerToken(c.Request.Header["Authorization"])
	switch {
	case !ok:
		v.reject(c, http.StatusBadRequest, v.badReq, "malformed Authorization header", nil)
		return
	case raw == "" && v.optional:
		c.Next()
		return
	case raw == "":
		v.reject(c, http.StatusUnauthorized, v.missing, "", nil)
		return
	}
	var claims jwt.RegisteredClaims
	_, err := v.parser.ParseWithClaims(raw, &claims, v.keyfunc)
	var payload []byte
	if err == nil {
		// ParseWithClaims checked there are three segments; keep the claims JSON for Claims[T].
		first := strings.IndexByte(raw, '.')
		second := first + 1 + strings.IndexByte(raw[first+1:], '.')
		payload, err = v.parser.DecodeSegment(raw[first+1 : second])
	}
	if err != nil {
		v.reject(c, http.StatusUnauthorized, v.invalid, "invalid token", err)
		return
	}
	s := stateOf(c)
	s.authed, s.issuer, s.subject, s.payload = true, claims.Issuer, claims.Subject, payload
	c.Next()
}

func (v *jwtVerifier) reject(c *gin.Context, status int, challenge []string, why string, err error) {
	if why != "" && v.log.Enabled(c.Request.Context(), slog.LevelDebug) {
		v.log.LogAttrs(c.Request.Context(), slog.LevelDebug, "ginmw: jwt rejected",
			slog.String("reason", why), slog.Any("error", err), slog.String("request_id", RequestIDFrom(c)))
	}
	c.Writer.Header()["Www-Authenticate"] = challenge
	abortProblem(c, status, "")
}

// bearerToken extracts the token of an RFC 6750 "Bearer" Authorization header. It returns
// ("", true) when there is no bearer credential (no header, or another scheme) and ok false when
// the header is malformed: repeated, or a Bearer scheme without a valid b64token.
func bearerToken(vals []string) (token string, ok bool) {
	if len(vals) == 0 {
		return "", true
	}
	if len(vals) > 1 {
		return "", false
	}
	h := vals[0]
	if len(h) < 6 || !strings.EqualFold(h[:6], "bearer") {
		return "", true
	}
	if len(h) == 6 {
		return "", false
	}
	if h[6] != ' ' {
		return "", true // e.g. "Bearerx": another scheme
	}
	token = strings.TrimLeft(h[7:], " ")
	if token == "" || !b64token(token) {
		return "", false
	}
	return token, true
}

// b64token reports whether s matches RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" /
// "~" / "+" / "/" ) *"=".
func b64token(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// checkKey reports whether key can verify method, as an error naming the problem.
func checkKey(method string, key any) error {
	field := "JWTOptions.Key"
	switch m := jwt.GetSigningMethod(method).(type) {
	case *jwt.SigningMethodHMAC:
		b, ok := key.([]byte)
		if !ok {
			return optionError(field, "%s needs a []byte secret, not %T (one static key cannot serve HMAC and public-key methods)", method, key)
		}
		if n := m.Hash.Size(); len(b) < n {
			return optionError(field, "%s needs a secret of at least %d bytes (RFC 7518 3.2), got %d", method, n, len(b))
		}
		if bytes.Contains(b, []byte("-----BEGIN")) {
			return optionError(field, "the %s secret holds a PEM block; a public key used as an HMAC secret lets anyone sign tokens", method)
		}
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		if _, ok := key.(*rsa.PublicKey); !ok {
			return optionError(field, "%s needs an *rsa.PublicKey, not %T", method, key)
		}
	case *jwt.SigningMethodECDSA:
		if _, ok := key.(*ecdsa.PublicKey); !ok {
			return optionError(field, "%s needs an *ecdsa.PublicKey, not %T", method, key)
		}
	case *jwt.SigningMethodEd25519:
		if _, ok := key.(ed25519.PublicKey); !ok {
			return optionError(field, "%s needs an ed25519.PublicKey, not %T", method, key)
		}
	default:
		return optionError("JWTOptions.ValidMethods", "method %q is not supported with a static Key; use Keyfunc", method)
	}
	return nil
}

// Claims returns the claims of the token [JWT] verified for c's request, decoded into a fresh T:
// *jwt.RegisteredClaims, jwt.MapClaims, a pointer to the caller's own struct (embedding
// jwt.RegisteredClaims) or the jwt.Claims interface itself (a jwt.MapClaims). ok is false when no
// token was verified or the claims do not decode into T. Every call decodes anew, so the result
// is the caller's to modify. Safe for concurrent use.
func Claims[T jwt.Claims](c *gin.Context) (claims T, ok bool) {
	var zero T
	s := stateFrom(c)
	if s == nil || !s.authed {
		return zero, false
	}
	switch t := reflect.TypeFor[T](); t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		if json.Unmarshal(s.payload, p.Interface()) != nil {
			return zero, false
		}
		return p.Interface().(T), true
	case reflect.Interface:
		var m jwt.MapClaims
		if json.Unmarshal(s.payload, &m) != nil {
			return zero, false
		}
		claims, ok = any(m).(T)
		return claims, ok
	default:
		if json.Unmarshal(s.payload, &claims) != nil {
			return zero, false
		}
		return claims, true
	}
}
