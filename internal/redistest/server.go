package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long a redis-server may take to answer PING after it is started.
const startTimeout = 15 * time.Second

// Option configures [Server].
type Option func(*serverConfig)

type serverConfig struct {
	args []string
}

// WithArgs passes extra arguments to redis-server, e.g. WithArgs("--maxmemory", "10mb").
func WithArgs(args ...string) Option {
	return func(c *serverConfig) { c.args = append(c.args, args...) }
}

// RedisServer is a real redis-server process owned by one test. Its methods are safe for
// concurrent use; they fail the test (t.Fatal) when the process cannot be controlled.
type RedisServer struct {
	t    testing.TB
	bin  string
	dir  string
	args []string

	mu      sync.Mutex
	port    int
	proc    *process
	resume  *time.Timer
	client  *redis.Client
	started []*process // every process ever started, for the leak check at cleanup
}

// process is one run of redis-server; done is closed when it has exited and been reaped.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Server starts a real redis-server on a free 127.0.0.1 port with its own temporary directory
// and persistence off (--save "" --appendonly no), waits until it answers PING, and kills it
// by its PID when t ends. It skips t when redis-server is not installed (fails when
// SURGE_REQUIRE_SERVERS=1).
func Server(t testing.TB, opts ...Option) *RedisServer {
	t.Helper()
	bin := LookPath(t, "redis-server", "redis-server")
	var cfg serverConfig
	for _, o := range opts {
		o(&cfg)
	}
	s := &RedisServer{t: t, bin: bin, dir: t.TempDir(), args: cfg.args}
	t.Cleanup(s.cleanup)
	s.startOnFreePort(false)
	return s
}

// Addr returns the server's host:port.
func (s *RedisServer) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Port returns the server's TCP port.
func (s *RedisServer) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// PID returns the process id of the running server, or 0 after [RedisServer.Kill].
func (s *RedisServer) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// PIDs returns the process ids of every process this server has run, including killed ones.
func (s *RedisServer) PIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	pids := make([]int, len(s.started))
	for i, p := range s.started {
		pids[i] = p.cmd.Process.Pid
	}
	return pids
}

// Client returns a client for the server, shared by every caller and closed when t ends. It
// reconnects by itself after [RedisServer.Restart].
func (s *RedisServer) Client() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = redis.NewClient(&redis.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))})
	}
	return s.client
}

// NewClient returns a new client for the server with o's settings (nil for defaults) and the
// server's address filled in. It is closed when t ends.
func (s *RedisServer) NewClient(o *redis.Options) *redis.Client {
	var opt redis.Options
	if o != nil {
		opt = *o
	}
	opt.Addr = s.Addr()
	c := redis.NewClient(&opt)
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill sends SIGKILL and waits until the process is gone. Commands then fail with connection
// errors until [RedisServer.Restart].
func (s *RedisServer) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

// Restart starts the server again on the same port, with empty data (persistence is off). It
// kills the running process first if there is one.
func (s *RedisServer) Restart() {
	s.mu.Lock()
	s.killLocked()
	s.mu.Unlock()
	s.startOnFreePort(true)
}

// Pause stops the process with SIGSTOP and resumes it with SIGCONT after d; it returns at once.
// Meanwhile connections stay open but nothing is answered, so commands time out.
func (s *RedisServer) Pause(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		s.t.Fatalf("redistest: Pause: server on port %d is not running", s.port)
	}
	if err := s.proc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("redistest: SIGSTOP: %v", err)
	}
	if s.resume != nil {
		s.resume.Stop()
	}
	p := s.proc
	s.resume = time.AfterFunc(d, func() { _ = p.cmd.Process.Signal(syscall.SIGCONT) })
}

// Resume sends SIGCONT at once, ending a [RedisServer.Pause] early.
func (s *RedisServer) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resumeLocked()
}

func (s *RedisServer) resumeLocked() {
	if s.resume != nil {
		s.resume.Stop()
		s.resume = nil
	}
	if s.proc != nil && !s.proc.exited() {
		_ = s.proc.cmd.Process.Signal(syscall.SIGCONT)
	}
}

func (s *RedisServer) killLocked() {
	if s.proc == nil {
		return
	}
	s.resumeLocked()
	_ = s.proc.cmd.Process.Kill()
	<-s.proc.done
	s.proc = nil
}

// cleanup kills the server and checks that no process it started is still alive.
func (s *RedisServer) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
	for _, p := range s.started {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			s.t.Errorf("redistest: redis-server pid %d still running after cleanup", p.cmd.Process.Pid)
		}
	}
}

// startOnFreePort starts the server. With samePort it reuses the current port (Restart);
// otherwise it picks a free port and retries with another when the server fails to bind, since
// tests in other packages pick ports at the same time.
func (s *RedisServer) startOnFreePort(samePort bool) {
	s.t.Helper()
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		port := s.Port()
		if !samePort {
			var err error
			if port, err = FreePort(); err != nil {
				s.t.Fatalf("redistest: %v", err)
			}
		}
		err := s.start(port)
		if err == nil {
			return
		}
		lastErr = err
		if samePort && attempt >= 3 {
			break
		}
		if samePort {
			time.Sleep(200 * time.Millisecond) // the old socket may linger briefly in the kernel
		}
	}
	s.t.Fatalf("redistest: could not start redis-server: %v", lastErr)
}

func (s *RedisServer) start(port int) error {
	logPath := filepath.Join(s.dir, fmt.Sprintf("redis-%d.log", port))
	args := append([]string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--logfile", logPath,
	}, s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	// Its own process group: a Ctrl-C to `go test` does not reach it before cleanup does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()

	s.mu.Lock()
	s.started = append(s.started, p)
	s.mu.Unlock()

	if err := waitReady(p, port); err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("port %d: %w; log: %s", port, err, LogTail(logPath, 5))
	}
	s.mu.Lock()
	s.proc, s.port = p, port
	s.mu.Unlock()
	return nil
}

// waitReady waits until the server on port answers PING and is our process (a server of another
// test that won the race for the port would answer too).
func waitReady(p *process, port int) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{
		Addr:        net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		DialTimeout: time.Second, MaxRetries: -1,
	})
	defer c.Close()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if p.exited() {
			return errors.New("redis-server exited during start-up")
		}
		info, err := c.Info(ctx, "server").Result()
		if err == nil {
			if pid := infoField(info, "process_id"); pid != strconv.Itoa(p.cmd.Process.Pid) {
				return fmt.Errorf("port taken by another redis-server (pid %s)", pid)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no answer to PING within %v: %v", startTimeout, err)
		case <-p.done:
		case <-tick.C:
		}
	}
}

// infoField returns a field of an INFO reply.
func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// LogTail returns the last n lines of a server's log file joined by " | ", for error messages
// of test harnesses (this one and internal/pgtest); "(no log)" when it cannot be read.
func LogTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log)"
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, " | ")
}

// FreePort returns a TCP port on 127.0.0.1 that is free now, and whose cluster bus port
// (port+10000) is free too, so it suits cluster nodes. Another process may still take it before
// it is used: callers retry on a failed bind.
func FreePort() (int, error) {
	for range 100 {
		port := 20000 + rand.IntN(55535-20000)
		if listenable(port) && listenable(port+10000) {
			return port, nil
		}
	}
	return 0, errors.New("no free loopback port pair found in [20000, 55535)")
}

func listenable(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
