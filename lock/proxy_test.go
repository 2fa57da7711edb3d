package lock

import (
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// proxy forwards TCP connections to a server. Freeze stops forwarding (in one or both directions)
// while keeping every connection open: the network holds the packets, nothing is answered and
// nothing fails. Thaw forwards again, including what was held.
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	up     chan struct{} // closed while client→server bytes flow
	down   chan struct{} // closed while server→client bytes flow
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, up: make(chan struct{}), down: make(chan struct{})}
	close(p.up)
	close(p.down)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

// Freeze holds the bytes of both directions; FreezeReplies only the server's answers.
func (p *proxy) Freeze()        { p.set(false, false) }
func (p *proxy) FreezeReplies() { p.set(true, false) }
func (p *proxy) Thaw()          { p.set(true, true) }

func (p *proxy) set(up, down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	flip := func(ch *chan struct{}, open bool) {
		select {
		case <-*ch: // flowing
			if !open {
				*ch = make(chan struct{})
			}
		default:
			if open {
				close(*ch)
			}
		}
	}
	flip(&p.up, up)
	flip(&p.down, down)
}

// gate blocks while the direction is frozen (close thaws it).
func (p *proxy) gate(up bool) {
	p.mu.Lock()
	ch := p.down
	if up {
		ch = p.up
	}
	p.mu.Unlock()
	<-ch
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = s.Close()
			return
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, s, true)
		go p.pipe(s, c, false)
	}
}

// pipe copies from → to, holding each chunk at the gate of its direction.
func (p *proxy) pipe(from, to net.Conn, up bool) {
	defer p.wg.Done()
	defer func() { _ = from.Close(); _ = to.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			p.gate(up)
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	p.Thaw()
	_ = p.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	p.wg.Wait()
}
