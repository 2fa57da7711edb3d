package keys

import (
	"testing"
)

// slotTag returns the part of key Redis Cluster hashes (the rules of CLUSTER KEYSLOT).
func slotTag(key string) string {
	for i := 0; i < len(key); i++ {
		if key[i] == '{' {
			for j := i + 1; j < len(key); j++ {
				if key[j] == '}' {
					if j == i+1 {
						return key
					}
					return key[i+1 : j]
				}
			}
			return key
		}
	}
	return key
}

func TestTaggedSharesSlotWhateverTheID(t *testing.T) {
	for _, id := range []string{"user:1", "}", "}}a", "{x}", "a}b{c", "%7D", "%", "ü{}"} {
		a, b := Tagged("rl:", id), Tagged("rl:", id)+":fence"
		if slotTag(a) != slotTag(b) {
			t.Errorf("id %q: %q and %q hash differently (%q vs %q)", id, a, b, slotTag(a), slotTag(b))
		}
		if slotTag(a) == a {
			t.Errorf("id %q: %q has no usable hash tag", id, a)
		}
	}
}

func TestTaggedIsOneToOne(t *testing.T) {
	ids := []string{"a}", "a%7D", "a%", "a%25", "a"}
	seen := map[string]string{}
	for _, id := range ids {
		k := Tagged("p:", id)
		if prev, ok := seen[k]; ok {
			t.Fatalf("ids %q and %q both map to %q", prev, id, k)
		}
		seen[k] = id
	}
}

func TestValidPrefix(t *testing.T) {
	if !ValidPrefix("surge:cache:") || ValidPrefix("a{b") || ValidPrefix("a}") {
		t.Fatal("ValidPrefix misjudged")
	}
}
