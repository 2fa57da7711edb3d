package pgtest_test

import (
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
