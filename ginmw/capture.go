package ginmw

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/gin-gonic/gin"
)

var errCaptureHijack = errors.New("ginmw: cannot hijack a response being cached")

// captureWriter is the gin.ResponseWriter [Cache] gives the handler: it keeps the status, its own
// header map (so only what the handler sets is stored) and the whole body in memory, and writes
// nothing to the client; the middleware writes the response out afterwards. Flush is a no-op:
// a cached route cannot stream.
type captureWriter struct {
	orig   gin.ResponseWriter // for CloseNotify only
	header http.Header
	status int
	size   int // -1 until the header is "written"
	body   []byte
}

// newCaptureWriter starts from orig's status: gin sets 404/405 on the writer before running the
// middleware of an unmatched route, and that status must not turn into a cached 200.
func newCaptureWriter(orig gin.ResponseWriter) *captureWriter {
	return &captureWriter{orig: orig, header: make(http.Header), status: orig.Status(), size: -1}
}

var _ gin.ResponseWriter = (*captureWriter)(nil)

func (w *captureWriter) Header() http.Header { return w.header }

func (w *captureWriter) WriteHeader(code int) {
	if code > 0 && !w.Written() {
		w.status = code
	}
}

func (w *captureWriter) WriteHeaderNow() {
	if !w.Written() {
		w.size = 0
	}
}

func (w *captureWriter) Write(b []byte) (int, error) {
	w.WriteHeaderNow()
	w.body = append(w.body, b...)
	w.size += len(b)
	return len(b), nil
}

func (w *captureWriter) WriteString(s string) (int, error) {
	w.WriteHeaderNow()
	w.body = append(w.body, s...)
	w.size += len(s)
	return len(s), nil
}

func (w *captureWriter) Status() int   { return w.status }
func (w *captureWriter) Size() int     { return w.size }
func (w *captureWriter) Written() bool { return w.size != -1 }
func (w *captureWriter) Flush()        { w.WriteHeaderNow() }

func (w *captureWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, errCaptureHijack
}

func (w *captureWriter) CloseNotify() <-chan bool { return w.orig.CloseNotify() } //nolint:staticcheck // part of gin.ResponseWriter
func (w *captureWriter) Pusher() http.Pusher      { return nil }

// teeWriter is the gin.ResponseWriter [Idempotency] gives the handler: everything goes to the
// client as usual, and the first max bytes of the body are kept for the stored record.
type teeWriter struct {
	gin.ResponseWriter
	body []byte
	max  int
	over bool // the body exceeded max
}

func (w *teeWriter) keep(n int, b []byte, s string) {
	if w.over {
		return
	}
	if len(w.body)+n > w.max {
		w.over, w.body = true, nil
		return
	}
	if b != nil {
		w.body = append(w.body, b...)
	} else {
		w.body = append(w.body, s...)
	}
}

func (w *teeWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.keep(n, b[:n], "")
	return n, err
}

func (w *teeWriter) WriteString(s string) (int, error) {
	n, err := io.WriteString(w.ResponseWriter, s)
	w.keep(n, nil, s[:n])
	return n, err
}
