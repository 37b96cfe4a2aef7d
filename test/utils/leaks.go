package utils

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
)

// SecretForms are the ways a secret can show up in a log: as itself, and
// base64-encoded as Secret data is in JSON (padded, unpadded, URL-safe).
func SecretForms(secret string) map[string]string {
	b := []byte(secret)
	return map[string]string{
		"raw":             secret,
		"base64":          base64.StdEncoding.EncodeToString(b),
		"unpadded base64": base64.RawStdEncoding.EncodeToString(b),
		"URL-safe base64": base64.RawURLEncoding.EncodeToString(b),
	}
}

// FindSecrets reports which secrets appear in log, and how, without
// repeating them: each finding names the secret by its key in secrets. It
// looks for every SecretForms form in the text, and in the bytes of every
// hex dump in it (client-go logs a protobuf body, such as a Secret's, as
// hex.Dump output, which splits the secret across lines). It reads a log of
// hundreds of megabytes in seconds: only runs of token and base64
// characters long enough to hold a secret are searched.
func FindSecrets(log string, secrets map[string]string) []string {
	type form struct{ owner, name, value string }
	var forms []form
	minLen := 0
	for owner, secret := range secrets {
		if secret == "" {
			continue
		}
		for name, value := range SecretForms(secret) {
			forms = append(forms, form{owner, name, value})
			if minLen == 0 || len(value) < minLen {
				minLen = len(value)
			}
		}
	}
	found := map[string]bool{}
	for _, run := range longRuns(log, minLen) {
		for _, f := range forms {
			if strings.Contains(run, f.value) {
				found[fmt.Sprintf("the %s secret of %s", f.name, f.owner)] = true
			}
		}
	}
	dumped := hexDumpBytes(log)
	for _, f := range forms {
		if bytes.Contains(dumped, []byte(f.value)) {
			found[fmt.Sprintf("the %s secret of %s, in a hex dump", f.name, f.owner)] = true
		}
	}
	findings := make([]string, 0, len(found))
	for f := range found {
		findings = append(findings, f)
	}
	sort.Strings(findings)
	return findings
}

// longRuns splits log into maximal runs of the characters tokens and
// base64 are made of, keeping those at least minLen long.
func longRuns(log string, minLen int) []string {
	var runs []string
	start := -1
	for i := 0; i <= len(log); i++ {
		if i < len(log) && isSecretChar(log[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 && i-start >= minLen {
			runs = append(runs, log[start:i])
		}
		start = -1
	}
	return runs
}

func isSecretChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '-' || c == '+' || c == '/' || c == '='
}

// hexDumpBytes decodes every hex dump in log into one byte stream, dumps
// one after the other in log order. A hex.Dump line is an 8-digit offset,
// two spaces, then up to 16 bytes as "hh " with an extra space after the
// eighth; lines are separated by newlines or, inside a structured log
// field, by an escaped \n, which this does not need to tell apart.
func hexDumpBytes(log string) []byte {
	var out []byte
	for i := 0; i+10 <= len(log); i++ {
		if !isDumpOffset(log, i) {
			continue
		}
		j := i + 10
		for n := 0; n < 16; n++ {
			if n == 8 && j < len(log) && log[j] == ' ' {
				j++
			}
			if j+3 > len(log) || log[j+2] != ' ' {
				break
			}
			hi, ok1 := hexDigit(log[j])
			lo, ok2 := hexDigit(log[j+1])
			if !ok1 || !ok2 {
				break
			}
			out = append(out, hi<<4|lo)
			j += 3
		}
		i = j - 1
	}
	return out
}

// isDumpOffset reports whether log[i:] starts with a hex.Dump offset: eight
// lowercase hex digits, not preceded by another, then two spaces.
func isDumpOffset(log string, i int) bool {
	if log[i+8] != ' ' || log[i+9] != ' ' {
		return false
	}
	if i > 0 {
		if _, ok := hexDigit(log[i-1]); ok {
			return false
		}
	}
	for k := i; k < i+8; k++ {
		if _, ok := hexDigit(log[k]); !ok {
			return false
		}
	}
	return true
}

// hexDigit decodes one lowercase hex digit, as hex.Dump writes them.
func hexDigit(c byte) (byte, bool) {
	i := strings.IndexByte("0123456789abcdef", c)
	return byte(i), i >= 0
}
