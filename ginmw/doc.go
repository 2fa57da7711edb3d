// Package ginmw is the Gin middleware of surge: request ids and W3C trace context, a structured
// access log, rate limiting with the IETF RateLimit headers, bearer JWT authentication, a Redis
// response cache and the IETF Idempotency-Key header.
//
// Everything a middleware learns about a request lives on the request's context.Context under
// unexported keys and is read with typed accessors, never with c.Get strings: [RequestIDFrom],
// [TraceFrom], [LoggerFrom], [Claims], [Principal].
//
// Client addresses come only from Gin's trusted-proxy logic (c.ClientIP()). Gin trusts every
// proxy by default, which lets any client pick its address with X-Forwarded-For: configure
// engine.SetTrustedProxies and let [CheckProxies] (or [RateLimitOptions].Engine) warn otherwise.
//
// A typical chain, outermost first:
//
//	r := gin.New()
//	_ = r.SetTrustedProxies([]string{"10.0.0.0/8"})
//	lim, _ := ratelimit.NewRedis(rdb, nil, ratelimit.PerSecond(10), ratelimit.PerHour(1000))
//	r.Use(gin.Recovery(), ginmw.RequestID(nil), ginmw.Logger(logger),
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
// Constructors that can be misconfigured come in two forms: X(opt) returns a gin.HandlerFunc
// that answers 500 and logs the problem once (never a panic), NewX(opt) returns the error.
package ginmw
