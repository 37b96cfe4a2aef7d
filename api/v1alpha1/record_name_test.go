package v1alpha1

import (
	"crypto/sha256"
	"strings"
	"testing"
)

func TestRecordHashAcceptsOnlyTheCanonicalName(t *testing.T) {
	sum := sha256.Sum256([]byte("ak_example"))
	name := RecordName(sum)
	digits := name[len(RecordNamePrefix):]
	for name, ok := range map[string]bool{
		name:                  true,
		strings.ToUpper(name): false,
		RecordNamePrefix + strings.ToUpper(digits): false,
		name[:len(name)-1]:                         false,
		TokenHashScheme + digits:                   false,
		"":                                         false,
	} {
		if got, parsed := RecordHash(name); parsed != ok || (ok && got != sum) {
			t.Errorf("RecordHash(%q) = %v", name, parsed)
		}
	}
}
