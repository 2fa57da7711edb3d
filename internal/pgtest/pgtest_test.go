package pgtest_test

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/surgekit/surge/internal/pgtest"
)

func TestServer(t *testing.T) {
	var pid int
	t.Run("run", func(t *testing.T) {
		pg := pgtest.Server(t)
		pid = pg.PID()
		a, b := pg.DB(t), pg.DB(t)
		if _, err := a.Exec("CREATE TABLE x (v int)"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Exec("INSERT INTO x VALUES (42)"); err != nil {
			t.Fatal(err)
		}
		var v int
		if err := a.QueryRow("SELECT v FROM x").Scan(&v); err != nil || v != 42 {
			t.Fatalf("got %d, %v; want 42", v, err)
		}
		// Each DB is its own database.
		if _, err := b.Exec("SELECT v FROM x"); err == nil {
			t.Fatal("table x is visible from a second database")
		}
	})
	if pid == 0 {
		t.Skip("no server was started")
	}
	if err := syscall.Kill(-pid, 0); err == nil {
		t.Fatalf("process group %d still alive after the test ended", pid)
	}
}

func TestKill(t *testing.T) {
	pg := pgtest.Server(t)
	db := pg.DB(t)
	pg.Kill()
	if err := db.Ping(); err == nil {
		t.Fatal("ping succeeded after Kill")
	}
	pg.Kill() // idempotent
}

// Without the binaries a test skips, or fails under SURGE_REQUIRE_SERVERS=1; run in a child
// process with an empty PATH so that both outcomes are checked here.
func TestMissingBinaries(t *testing.T) {
	if os.Getenv("PGTEST_CHILD") == "1" {
		pgtest.Server(t)
		return
	}
	for _, required := range []string{"0", "1"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissingBinaries$", "-test.v")
		cmd.Env = []string{"PATH=", "PGTEST_CHILD=1", "SURGE_REQUIRE_SERVERS=" + required,
			"SURGE_PGTEST_LIBDIR=" + t.TempDir(), "HOME=" + os.Getenv("HOME")}
		out, err := cmd.CombinedOutput()
		if required == "1" {
			if err == nil || !strings.Contains(string(out), "apt-get install -y postgresql") {
				t.Fatalf("want a failure naming the package, got %v:\n%s", err, out)
			}
		} else if err != nil || !strings.Contains(string(out), "SKIP") {
			t.Fatalf("want a skip, got %v:\n%s", err, out)
		}
	}
}

// Cleanup kills the server, which then cannot remove its dynamic shared memory: POSIX or System
// V segments would outlive it (a file in /dev/shm per server, for good). They must live in the
// data directory, which cleanup removes.
func TestKilledServerLeavesNoSharedMemory(t *testing.T) {
	pg := pgtest.Server(t)
	var typ string
	if err := pg.DB(t).QueryRow("SHOW dynamic_shared_memory_type").Scan(&typ); err != nil {
		t.Fatal(err)
	}
	if typ != "mmap" {
		t.Fatalf("dynamic_shared_memory_type = %s: a killed server leaves its segments outside its data directory", typ)
	}
}
