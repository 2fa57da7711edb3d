package ginmw

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
)

const problemJSON = "application/problem+json"

// problem is an RFC 9457 problem details object.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// problemBodies holds the detail-less bodies of the statuses this package answers with.
var problemBodies = func() map[int][]byte {
	m := map[int][]byte{}
	for _, code := range []int{400, 401, 409, 413, 422, 429, 500, 503} {
		m[code] = problemBody(code, "")
	}
	return m
}()

func problemBody(status int, detail string) []byte {
	b, _ := json.Marshal(problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
	return b
}

// abortProblem aborts c with status and an application/problem+json body; detail may be "".
func abortProblem(c *gin.Context, status int, detail string) {
	body, ok := problemBodies[status]
	if !ok || detail != "" {
		body = problemBody(status, detail)
	}
	c.Abort()
	c.Data(status, problemJSON, body)
}

// retryAfter sets Retry-After to seconds (at least 1).
func retryAfter(h http.Header, seconds int64) {
	h["Retry-After"] = []string{strconv.FormatInt(max(seconds, 1), 10)}
}

// abortContextDone answers a request whose context ended while a middleware waited on Redis: 503
// (a deadline set by a timeout middleware must not turn into an empty 200; a client that went
// away never reads it).
func abortContextDone(c *gin.Context) {
	abortProblem(c, http.StatusServiceUnavailable, "")
}
