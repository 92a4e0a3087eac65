package apitoken

import (
	"bytes"
	"testing"
)

func TestNewTokensAreUniqueWellFormedAndHashed(t *testing.T) {
	a, hashA, prefixA, err := New()
	if err != nil {
		t.Fatal(err)
	}
	b, _, _, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("two tokens are equal")
	}
	if err := Check(a); err != nil {
		t.Fatalf("Check(new token) = %v", err)
	}
	if !bytes.Equal(hashA, Hash(a)) || len(hashA) != 32 {
		t.Fatal("hash mismatch")
	}
	if prefixA != a[:10] {
		t.Fatalf("display prefix %q", prefixA)
	}
}

func TestCheckRejectsMalformed(t *testing.T) {
	for _, s := range []string{"", "gsk_", "Bearer x", "gsk_" + string(bytes.Repeat([]byte("!"), 43)), "ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"} {
		if Check(s) == nil {
			t.Errorf("Check(%q) accepted a malformed token", s)
		}
	}
}
