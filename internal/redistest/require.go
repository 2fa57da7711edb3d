package redistest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// RequireEnv is the environment variable that turns a missing server binary from a skip into a
// failure. CI sets it to 1.
const RequireEnv = "SURGE_REQUIRE_SERVERS"

// Required reports whether tests must fail rather than skip when a server binary is missing.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// LookPath returns the path of the named binary, or skips t (fails it when [Required]) with a
// message naming the package to install.
func LookPath(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s is not on PATH: this test needs a real server; install it "+
		"(Debian/Ubuntu: apt-get install -y %s, macOS: brew install redis) "+
		"or run only the unit tests", name, debianPackage)
	if Required() {
		t.Fatalf("%s (%s=1 makes this a failure)", msg, RequireEnv)
	}
	t.Skip(msg)
	return ""
}
