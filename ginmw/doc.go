// Package ginmw is the Gin middleware of surge: OpenTelemetry server spans and request-duration
// metrics, request ids and W3C trace context, a structured access log, rate limiting with the
// IETF RateLimit headers, a per-client bound on requests in flight, bearer JWT authentication, a
// Redis response cache and the IETF Idempotency-Key header.
//
// [Telemetry] records through the OpenTelemetry API only (no SDK is imported): with none installed
// it costs a few allocations per request and records nothing. When it runs first, [RequestID],
// [Logger] and [LoggerFrom] carry its span's trace and span ids.
//
// Everything a middleware learns about a request lives on the request's context.Context under
// unexported keys and is read with typed accessors, never with c.Get strings: [RequestIDFrom],
// [TraceFrom], [LoggerFrom], [Claims], [Principal].
//
// Client addresses come from Gin's trusted-proxy logic (c.ClientIP()) when it is configured:
// engine.SetTrustedProxies, or a TrustedPlatform. Gin trusts every proxy by default, which lets
// any client pick its address with X-Forwarded-For; on such an engine [ClientIPKey] (the default
// rate-limit key) and [Principal] use the connection's peer address instead, and [RateLimit]
// logs once how to configure proxies. [CheckProxies] reports how an engine resolves addresses.
//
// Responses stored by [Cache] and [Idempotency] are never served to another principal: by
// default a caller is the verified JWT's issuer and subject, else the client address, and a
// request whose caller cannot be told apart (a token without a subject, unverified credentials,
// no address) is neither stored nor replayed.
//
// A typical chain, outermost first:
//
//	r := gin.New()
//	_ = r.SetTrustedProxies([]string{"10.0.0.0/8"})
//	lim, _ := ratelimit.NewRedis(rdb, nil, ratelimit.PerSecond(10), ratelimit.PerHour(1000))
//	r.Use(gin.Recovery(), ginmw.Telemetry(nil), ginmw.RequestID(nil),
//		ginmw.Logger(&ginmw.LoggerOptions{Logger: logger}),
//		ginmw.RateLimit(lim, &ginmw.RateLimitOptions{Engine: r, Logger: logger}))
//	api := r.Group("/api", ginmw.JWT(ginmw.JWTOptions{Key: pub, ValidMethods: []string{"RS256"}}))
//	api.GET("/orders/:id", ginmw.Cache(rdb, &ginmw.CacheOptions{TTL: 30 * time.Second}), getOrder)
//	api.POST("/orders", ginmw.Idempotency(rdb, nil), createOrder)
//
//	func getOrder(c *gin.Context) {
//		claims, _ := ginmw.Claims[*jwt.RegisteredClaims](c)
//		ginmw.LoggerFrom(c).Info("order read", "user", claims.Subject) // carries request/trace ids
//		...
//	}
//
// Every middleware comes in two forms: NewX(...) returns (gin.HandlerFunc, error), the error
// wrapping [ErrInvalidOptions] and naming the bad field; X(...) panics with that error at wiring
// time, as regexp.MustCompile does, so a misconfiguration never reaches a request. When Redis
// fails, each Redis-backed middleware follows its OnRedisError [ErrorPolicy].
package ginmw
