package bloom

import (
	"math/rand/v2"
	"testing"

	bbloom "github.com/bits-and-blooms/bloom/v3"
)

// checkLocations fails t when the positions hashKey/location give for key differ from
// bits-and-blooms' Locations.
func checkLocations(t *testing.T, key string) {
	t.Helper()
	const k = 12
	want := bbloom.Locations([]byte(key), k)
	h := hashKey(key)
	for i := range uint64(k) {
		if got := location(&h, i); got != want[i] {
			t.Fatalf("key %q (len %d): location %d = %d, bits-and-blooms says %d", key, len(key), i, got, want[i])
		}
	}
}

func TestHashMatchesBitsAndBlooms(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 80; n++ { // every tail length, several block counts
		for range 20 {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rnd.UintN(256))
			}
			checkLocations(t, string(b))
		}
	}
	checkLocations(t, "")
	checkLocations(t, "user:42")
}

func FuzzHashMatchesBitsAndBlooms(f *testing.F) {
	for _, s := range []string{"", "a", "0123456789abcde", "0123456789abcdef", "0123456789abcdef0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) { checkLocations(t, key) })
}
