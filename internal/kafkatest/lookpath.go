package kafkatest

import "os/exec"

// lookKcat finds kcat under either of its names (older distributions ship kafkacat).
func lookKcat() (string, bool) {
	for _, name := range []string{"kcat", "kafkacat"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, true
		}
	}
	return "", false
}
