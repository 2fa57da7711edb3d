package ginmw_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/surgekit/surge/ginmw"
	"github.com/surgekit/surge/ratelimit"
)

// serve sends one request to h and returns the recorder.
func serve(h http.Handler, method, target, body string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.RemoteAddr = "198.51.100.7:4711"
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func Example() {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	_ = r.SetTrustedProxies(nil) // no proxy in front: RemoteAddr is the client

	lim, _ := ratelimit.NewLocal(nil, ratelimit.Limit{Rate: 2.0 / 60, Burst: 2, Name: "api"}) // 2 per minute
	defer lim.Close()
	r.Use(ginmw.RequestID(nil), ginmw.RateLimit(lim, &ginmw.RateLimitOptions{Engine: r}))
	r.GET("/hello", func(c *gin.Context) {
		t, _ := ginmw.TraceFrom(c)
		c.String(http.StatusOK, "request %s in trace %s", ginmw.RequestIDFrom(c), t.TraceID)
	})

	for range 3 {
		w := serve(r, "GET", "/hello", "", "X-Request-ID", "req-1",
			"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		fmt.Println(w.Code, w.Header().Get("RateLimit"), w.Body.String())
	}
	// Output:
	// 200 "api";r=1;t=30 request req-1 in trace 4bf92f3577b34da6a3ce929d0e0e4736
	// 200 "api";r=0;t=60 request req-1 in trace 4bf92f3577b34da6a3ce929d0e0e4736
	// 429 "api";r=0;t=60 {"type":"about:blank","title":"Too Many Requests","status":429}
}

func ExampleJWT() {
	gin.SetMode(gin.ReleaseMode)
	secret := []byte("an HS256 secret of at least 32 bytes!")
	r := gin.New()
	r.Use(ginmw.JWT(ginmw.JWTOptions{Key: secret, ValidMethods: []string{"HS256"}, Audience: "orders"}))
	r.GET("/me", func(c *gin.Context) {
		claims, _ := ginmw.Claims[jwt.MapClaims](c)
		principal, _ := ginmw.Principal(c)
		c.String(http.StatusOK, "%s of %s (%s)", claims["sub"], claims["tenant"], principal)
	})

	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "alice", "tenant": "acme", "aud": "orders", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(secret)
	w := serve(r, "GET", "/me", "", "Authorization", "Bearer "+tok)
	fmt.Println(w.Code, w.Body.String())
	w = serve(r, "GET", "/me", "")
	fmt.Println(w.Code, w.Header().Get("WWW-Authenticate"))
	w = serve(r, "GET", "/me", "", "Authorization", "Bearer "+tok+"x")
	fmt.Println(w.Code, w.Header().Get("WWW-Authenticate"))
	// Output:
	// 200 alice of acme (iss:"" sub:"alice")
	// 401 Bearer realm="api"
	// 401 Bearer realm="api", error="invalid_token"
}

func ExampleNewHTTPCache() {
	gin.SetMode(gin.ReleaseMode)
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	hc, _ := ginmw.NewHTTPCache(rdb, &ginmw.CacheOptions{TTL: time.Minute})
	defer hc.Close()
	r := gin.New()
	_ = r.SetTrustedProxies(nil)
	runs := 0
	r.GET("/products/:id", hc.Handler(), func(c *gin.Context) {
		runs++
		c.String(http.StatusOK, "product %s", c.Param("id"))
	})
	r.PUT("/products/:id", func(c *gin.Context) {
		_ = hc.Invalidate(c, "/products/:id", c.Params) // after updating the database
		c.Status(http.StatusNoContent)
	})

	for _, step := range []string{"GET", "GET", "PUT", "GET"} {
		w := serve(r, step, "/products/7", "")
		fmt.Printf("%s %d %q\n", step, w.Code, w.Header().Get("Cache-Status"))
	}
	fmt.Println("handler runs:", runs)
	// Output:
	// GET 200 "surge; fwd=miss; stored"
	// GET 200 "surge; hit"
	// PUT 204 ""
	// GET 200 "surge; fwd=miss; stored"
	// handler runs: 2
}

func ExampleIdempotency() {
	gin.SetMode(gin.ReleaseMode)
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	r := gin.New()
	_ = r.SetTrustedProxies(nil)
	orders := 0
	r.POST("/orders", ginmw.Idempotency(rdb, nil), func(c *gin.Context) {
		orders++
		c.String(http.StatusCreated, "order #%d", orders)
	})

	for _, body := range []string{`{"sku":"A"}`, `{"sku":"A"}`, `{"sku":"B"}`} {
		w := serve(r, "POST", "/orders", body, "Idempotency-Key", `"8e03978e-40d5-43e8-bc93-6894a57f9324"`)
		fmt.Println(w.Code, w.Header().Get("Idempotent-Replayed"), w.Body.String())
	}
	// Output:
	// 201  order #1
	// 201 true order #1
	// 422  {"type":"about:blank","title":"Unprocessable Entity","status":422,"detail":"this Idempotency-Key was used for a different request"}
}

func ExampleConcurrency() {
	gin.SetMode(gin.ReleaseMode)
	lim, _ := ratelimit.NewLocalConcurrency(1, nil) // ratelimit.NewConcurrency(rdb, 1, nil) across instances
	r := gin.New()
	_ = r.SetTrustedProxies(nil)
	var inner string
	r.GET("/export", ginmw.Concurrency(lim, nil), func(c *gin.Context) {
		if c.Query("nested") == "" { // while this export runs, the same client asks for another
			w := serve(r, "GET", "/export?nested=1", "")
			inner = fmt.Sprint(w.Code, " Retry-After: ", w.Header().Get("Retry-After"))
		}
		c.String(http.StatusOK, "export done")
	})

	w := serve(r, "GET", "/export", "")
	fmt.Println("second export:", inner)
	fmt.Println("first export:", w.Code, w.Body.String())
	w = serve(r, "GET", "/export", "")
	fmt.Println("afterwards:", w.Code)
	// Output:
	// second export: 429 Retry-After: 1
	// first export: 200 export done
	// afterwards: 200
}

// ExampleTelemetry puts Telemetry first: the server span continues the caller's trace, and
// RequestID, TraceFrom and LoggerFrom use the span's ids. The SDK here keeps spans and metrics in
// memory; a service exports them (or installs the providers globally and passes nil).
func ExampleTelemetry() {
	gin.SetMode(gin.ReleaseMode)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	r := gin.New()
	r.Use(ginmw.Telemetry(&ginmw.TelemetryOptions{TracerProvider: tp, MeterProvider: mp, Propagator: propagation.TraceContext{}}),
		ginmw.RequestID(nil))
	r.GET("/orders/:id", func(c *gin.Context) {
		t, _ := ginmw.TraceFrom(c)
		c.String(http.StatusOK, "trace %s, parent %s", t.TraceID, t.ParentID)
	})

	w := serve(r, "GET", "/orders/42", "", "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	fmt.Println(w.Code, w.Body.String())
	sp := spans.Ended()[0]
	fmt.Println("span:", sp.Name(), sp.SpanKind(), "in trace", sp.SpanContext().TraceID())
	fmt.Println("response names the span:", w.Header().Get("Traceparent") == "00-"+sp.SpanContext().TraceID().String()+"-"+sp.SpanContext().SpanID().String()+"-01")

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(context.Background(), &rm)
	m := rm.ScopeMetrics[0].Metrics[0]
	p := m.Data.(metricdata.Histogram[float64]).DataPoints[0]
	route, _ := p.Attributes.Value("http.route")
	status, _ := p.Attributes.Value("http.response.status_code")
	fmt.Println(m.Name, m.Unit, route.AsString(), status.AsInt64(), p.Count)
	// Output:
	// 200 trace 4bf92f3577b34da6a3ce929d0e0e4736, parent 00f067aa0ba902b7
	// span: GET /orders/:id server in trace 4bf92f3577b34da6a3ce929d0e0e4736
	// response names the span: true
	// http.server.request.duration s /orders/:id 200 1
}
