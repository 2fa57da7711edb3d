// Package keys builds Redis keys whose related parts share one Redis Cluster hash slot.
package keys

import "strings"

// escaper makes user ids safe inside a {hash tag}: Redis ends a tag at the first '}', so a '}'
// in the id is escaped (and '%' with it, keeping the mapping one-to-one).
var escaper = strings.NewReplacer("%", "%25", "}", "%7D")

// Tagged returns prefix + "{" + id + "}" with id escaped so the tag is exactly id: every key built
// from the same id, whatever suffix is appended after the returned string, hashes to one slot.
// Distinct ids give distinct keys. prefix must not contain '{' (see [ValidPrefix]).
func Tagged(prefix, id string) string {
	if strings.ContainsAny(id, "%}") {
		id = escaper.Replace(id)
	}
	var b strings.Builder
	b.Grow(len(prefix) + len(id) + 2)
	b.WriteString(prefix)
	b.WriteByte('{')
	b.WriteString(id)
	b.WriteByte('}')
	return b.String()
}

// ValidPrefix reports whether prefix can precede a tag built by [Tagged]: it must not contain '{'
// or '}', which would move the hash tag Redis Cluster uses.
func ValidPrefix(prefix string) bool {
	return !strings.ContainsAny(prefix, "{}")
}
