package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"go.opentelemetry.io/otel/propagation"

	"github.com/surgekit/surge/cache"
	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/events/outbox"
	"github.com/surgekit/surge/ginmw"
)

// demoKey signs the demo's JWTs (HS256). A real service verifies tokens from its identity
// provider, with a key it does not print in its source.
var demoKey = []byte("surge-orderservice-demo-key-not-for-production!")

const demoIssuer = "orderservice-demo"

// apiKeyHeader names the caller for the per-client rate limit of GET /orders/:id; callers
// without it are limited per client IP.
const apiKeyHeader = "X-API-Key"

// router returns the HTTP API. With bypassCache, GET /orders/:id reads the database directly
// (the "no cache" baseline of the demo); everything else is identical.
func (s *service) router(access *slog.Logger, bypassCache bool) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	_ = r.SetTrustedProxies(nil) // no proxy in front: the client IP is the peer address
	// Telemetry first: it times the whole request, continues an incoming traceparent, and
	// RequestID and Logger after it carry its trace id (the traceparent response header, the
	// access log).
	r.Use(ginmw.Telemetry(&ginmw.TelemetryOptions{
		TracerProvider: s.tel.Tracers, MeterProvider: s.tel.Meters, Propagator: s.tel.Propagator,
		Skip: func(c *gin.Context) bool { return c.Request.URL.Path == "/metrics" },
	}), gin.Recovery(), ginmw.RequestID(nil), ginmw.Logger(&ginmw.LoggerOptions{Logger: access}))

	get := s.getOrder
	if bypassCache {
		get = s.getOrderUncached
	}
	r.GET("/orders/:id", startTimer, ginmw.RateLimit(s.limiter, &ginmw.RateLimitOptions{Key: rateLimitKey, Logger: s.log}), get)

	auth := ginmw.JWT(ginmw.JWTOptions{Key: demoKey, ValidMethods: []string{"HS256"}, Issuer: demoIssuer, Logger: s.log})
	w := r.Group("/orders", auth)
	w.POST("", ginmw.Idempotency(s.redis.Client, &ginmw.IdempotencyOptions{Prefix: s.prefix + "idem:", Logger: s.log}), s.createOrder)
	w.PUT("/:id/pay", s.payOrder)

	r.GET("/token", s.issueToken)
	r.GET("/stats", func(c *gin.Context) { c.JSON(http.StatusOK, s.stats()) })
	if s.tel.Metrics != nil {
		r.GET("/metrics", gin.WrapH(s.tel.Metrics))
	}
	return r
}

// rateLimitKey charges a request to its API key, else to its client IP. (A real service would
// check the API key before trusting it as an identity.)
func rateLimitKey(c *gin.Context) string {
	if k := strings.TrimSpace(c.GetHeader(apiKeyHeader)); k != "" && len(k) <= 64 {
		return "key:" + k
	}
	return "ip:" + ginmw.ClientIPKey(c)
}

// load is the cache's loader: one database query, "not found" reported as cache.ErrNotFound
// so that it is cached as a negative entry.
func (s *service) load(ctx context.Context, id string) (Order, error) {
	o, err := s.db.Get(ctx, id)
	s.loads.done(id)
	if errors.Is(err, errNoSuchOrder) {
		return Order{}, fmt.Errorf("order %s: %w", id, cache.ErrNotFound)
	}
	return o, err
}

// loadMany is the cache's batch loader (the start-up warm-up): one query for many ids; ids it
// leaves out do not exist.
func (s *service) loadMany(ctx context.Context, ids []string) (map[string]Order, error) {
	return s.db.GetMany(ctx, ids)
}

// cacheHeader says how GET /orders/:id was answered: "hit" when the request did not wait for
// the database (local tier, Redis, a negative entry, the Bloom guard), "miss" when it did,
// whether it ran the load itself or joined one already running. The demo's load generator
// reads it to time hits and misses apart.
const cacheHeader = "X-Cache"

// getOrder serves GET /orders/:id through the cache: local tier, Redis, then one load per key
// however many requests wait for it; ids the Bloom guard rules out never reach Redis or the
// database.
func (s *service) getOrder(c *gin.Context) {
	id := c.Param("id")
	before := s.loads.count(id)
	o, err := s.orders.Fetch(c.Request.Context(), id, s.load)
	if s.loads.count(id) != before {
		c.Header(cacheHeader, "miss") // a load of this id finished while the request waited
	} else {
		c.Header(cacheHeader, "hit")
	}
	s.replyOrder(c, o, err)
}

// getOrderUncached serves GET /orders/:id from the database only.
func (s *service) getOrderUncached(c *gin.Context) {
	c.Header(cacheHeader, "miss")
	o, err := s.load(c.Request.Context(), c.Param("id"))
	s.replyOrder(c, o, err)
}

// startKey holds, in the gin context, when the handling of GET /orders/:id started.
const startKey = "orderservice.start"

// startTimer notes when the service started handling the request, for serverTiming.
func startTimer(c *gin.Context) { c.Set(startKey, time.Now()) }

// serverTiming adds a Server-Timing header with the time the service spent on the request so
// far (rate limit, cache or database; not the network, not writing the body): the demo reads
// it to tell what the service costs from what the loopback HTTP and a busy CPU add.
func serverTiming(c *gin.Context) {
	if v, ok := c.Get(startKey); ok {
		d := time.Since(v.(time.Time))
		c.Header("Server-Timing", "app;dur="+strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64))
	}
}

// loadCounts counts the finished database loads of each order id. A request that sees the
// count of its id move while it waited for the cache waited for a load: a miss. Safe for
// concurrent use; the zero value is ready.
type loadCounts struct {
	m sync.Map // id -> *atomic.Uint64
}

// count returns how many loads of id have finished.
func (l *loadCounts) count(id string) uint64 {
	if n, ok := l.m.Load(id); ok {
		return n.(*atomic.Uint64).Load()
	}
	return 0
}

// done records one finished load of id.
func (l *loadCounts) done(id string) {
	n, ok := l.m.Load(id)
	if !ok {
		n, _ = l.m.LoadOrStore(id, new(atomic.Uint64))
	}
	n.(*atomic.Uint64).Add(1)
}

func (s *service) replyOrder(c *gin.Context, o Order, err error) {
	serverTiming(c)
	switch {
	case err == nil:
		c.JSON(http.StatusOK, o)
	case errors.Is(err, cache.ErrNotFound):
		problem(c, http.StatusNotFound, "no such order")
	case c.Request.Context().Err() != nil:
		c.Abort() // the client went away
	default:
		ginmw.LoggerFrom(c).Error("get order", "id", c.Param("id"), "err", err)
		problem(c, http.StatusInternalServerError, "could not read the order")
	}
}

// newOrder is the body of POST /orders.
type newOrder struct {
	Item        string `json:"item" binding:"required"`
	Quantity    int    `json:"quantity" binding:"required,min=1,max=100"`
	AmountCents int64  `json:"amount_cents" binding:"required,min=1"`
}

// createOrder serves POST /orders: write the order and its OrderCreated event (into the outbox)
// in one transaction, add the id to the Bloom guard, drop any cached "not found" for it, wake
// the relay that publishes the event. Idempotency (in front) replays the first
// response to a retry carrying the same Idempotency-Key.
func (s *service) createOrder(c *gin.Context) {
	var req newOrder
	if err := c.ShouldBindJSON(&req); err != nil {
		problem(c, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	claims, ok := ginmw.Claims[*jwt.RegisteredClaims](c)
	if !ok || claims.Subject == "" {
		problem(c, http.StatusUnauthorized, "the token names no subject")
		return
	}
	ctx := c.Request.Context()
	o, err := s.db.Create(ctx, Order{Customer: claims.Subject, Item: req.Item, Quantity: req.Quantity, AmountCents: req.AmountCents},
		s.addEvent(ctx, OrderCreated))
	if err != nil {
		s.writeFailed(c, "create order", err)
		return
	}
	_ = s.guard.Add(ctx, o.ID) // bloom.Local.Add cannot fail once built
	if err := s.afterWrite(ctx, OrderCreated, o); err != nil {
		s.writeFailed(c, "create order", err)
		return
	}
	c.Header("Location", "/orders/"+o.ID)
	c.JSON(http.StatusCreated, o)
}

// payOrder serves PUT /orders/:id/pay. (A real service would also check that the token's
// subject may pay this order.)
func (s *service) payOrder(c *gin.Context) {
	ctx := c.Request.Context()
	o, err := s.db.Pay(ctx, c.Param("id"), s.addEvent(ctx, OrderPaid))
	switch {
	case errors.Is(err, errNoSuchOrder):
		problem(c, http.StatusNotFound, "no such order")
		return
	case errors.Is(err, errNotPending):
		problem(c, http.StatusConflict, "order is "+o.Status)
		return
	case err != nil:
		s.writeFailed(c, "pay order", err)
		return
	}
	if err := s.afterWrite(ctx, OrderPaid, o); err != nil {
		s.writeFailed(c, "pay order", err)
		return
	}
	c.JSON(http.StatusOK, o)
}

// addEvent returns the function a store write runs inside its transaction: it adds the
// event typ about the order to the outbox, keyed by order id so that the events of one order
// are published in order. The event is published if and only if the transaction commits.
// The request's trace context travels in the event's headers (traceparent), so the relay's
// record carries it and the consumers' spans continue the request's trace.
func (s *service) addEvent(ctx context.Context, typ string) func(*sql.Tx, Order) error {
	return func(tx *sql.Tx, o Order) error {
		ev, err := events.NewEvent(typ, o.ID, orderEvent{OrderID: o.ID, Item: o.Item, Quantity: o.Quantity})
		if err != nil {
			return err
		}
		ev.Headers = map[string]string{}
		s.tel.Propagator.Inject(ctx, propagation.MapCarrier(ev.Headers))
		return s.outbox.Add(ctx, tx, ordersTopic, ev)
	}
}

// afterWrite is what follows every committed write: wake the relay, so that it publishes the
// event now rather than at its next poll, and delete the cached copy (in Redis and in every
// instance's local tier). Should the process die before the delete, the event still reaches
// the cache-invalidation consumer, which deletes it then.
func (s *service) afterWrite(ctx context.Context, _ string, o Order) error {
	s.relay.Notify()
	if err := s.orders.Delete(ctx, o.ID); err != nil {
		return fmt.Errorf("invalidate order %s: %w", o.ID, err)
	}
	return nil
}

func (s *service) writeFailed(c *gin.Context, what string, err error) {
	ginmw.LoggerFrom(c).Error(what, "err", err)
	problem(c, http.StatusInternalServerError, what+" failed")
}

// issueToken serves GET /token?sub=alice: a one-hour demo token for the write routes, as
// plain text so that a shell can capture it.
func (s *service) issueToken(c *gin.Context) {
	sub := c.DefaultQuery("sub", "demo-user")
	tok, err := signToken(sub, time.Hour)
	if err != nil {
		problem(c, http.StatusInternalServerError, "sign token")
		return
	}
	c.String(http.StatusOK, tok)
}

// signToken returns an HS256 JWT for sub signed with the demo key.
func signToken(sub string, ttl time.Duration) (string, error) {
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: sub, Issuer: demoIssuer, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}).SignedString(demoKey)
}

// problem answers with an RFC 9457 problem document.
func problem(c *gin.Context, status int, detail string) {
	body, _ := json.Marshal(gin.H{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail})
	c.Data(status, "application/problem+json", body)
	c.Abort()
}

// stats is what GET /stats reports.
func (s *service) stats() gin.H {
	return gin.H{
		"db_queries":          s.db.Queries(),
		"cache":               s.orders.Stats(),
		"consumers":           gin.H{"inventory": s.cons[0].Stats(), "cache_invalidation": s.cons[1].Stats()},
		"inventory_applied":   s.inv.applied.Load(),
		"cache_invalidations": s.invals.Load(),
		"producer":            s.pub.Stats(),
		"outbox_relay":        relayStats(s.relay.Stats()),
	}
}

// relayStats is the relay's Stats as JSON (its LastError is an error value).
func relayStats(st outbox.Stats) gin.H {
	h := gin.H{"leader": st.Leader, "published": st.Published, "batches": st.Batches, "failures": st.Failures}
	if st.LastError != nil {
		h["last_error"], h["last_error_at"] = st.LastError.Error(), st.LastErrorAt
	}
	return h
}
