package utils

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
)

func TestFindSecrets(t *testing.T) {
	const tok = "ak_3kT9zQ0pWmX2vB7nR4sY8uL1cD6fH5jG0aE2iO9qZ7xVb1A3d"
	secrets := map[string]string{"key a": tok}
	// A protobuf Secret body as client-go logs it through zap: hex.Dump
	// output in a JSON field, its newlines escaped.
	body := append([]byte("k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x00\x1a\x05token\x12\x40"), tok...)
	field, err := json.Marshal(map[string]string{"body": hex.Dump(body)})
	if err != nil {
		t.Fatal(err)
	}
	for name, log := range map[string]string{
		"raw":             "Issued token " + tok + " to Secret a-token\n",
		"base64 in JSON":  `{"data":{"token":"` + base64.StdEncoding.EncodeToString([]byte(tok)) + `"}}`,
		"hex dump in zap": "2026-11-29T20:27:48Z\tLEVEL(-8)\tRequest Body\t" + string(field) + "\n",
		"hex dump lines":  hex.Dump(body),
	} {
		if got := FindSecrets(log, secrets); len(got) == 0 {
			t.Errorf("%s: the token was not found", name)
		} else if strings.Contains(strings.Join(got, " "), tok) {
			t.Errorf("%s: a finding repeats the token", name)
		}
	}
	clean := "Issued token ak_3kT9… to Secret a-token\n" + hex.Dump([]byte("k8s\x00 no token here"))
	if got := FindSecrets(clean, secrets); len(got) != 0 {
		t.Errorf("found %v in a log without the token", got)
	}
}
