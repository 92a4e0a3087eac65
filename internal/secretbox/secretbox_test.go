package secretbox

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRoundTripAndWrongKey(t *testing.T) {
	ctx := context.Background()
	url, err := NewLocalKeyURL()
	if err != nil {
		t.Fatal(err)
	}
	box, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	ct, err := box.Encrypt(ctx, []byte("refresh-token-value"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte("refresh-token-value")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	pt, err := box.Decrypt(ctx, ct)
	if err != nil || string(pt) != "refresh-token-value" {
		t.Fatalf("decrypt = %q, %v", pt, err)
	}
	other, _ := NewLocalKeyURL()
	box2, err := Open(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	defer box2.Close()
	if _, err := box2.Decrypt(ctx, ct); err == nil {
		t.Fatal("a different key decrypted the secret")
	}
}

func TestOpenErrorDoesNotEchoKey(t *testing.T) {
	_, err := Open(context.Background(), "base64key://not-base64-secretvalue!!")
	if err == nil {
		t.Fatal("expected an error")
	}
	if strings.Contains(err.Error(), "secretvalue") {
		t.Fatalf("error echoes the key: %v", err)
	}
}
