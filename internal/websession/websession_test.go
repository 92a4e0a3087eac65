package websession

import "testing"

func TestCheckNextAcceptsOnlyLocalPaths(t *testing.T) {
	for _, ok := range []string{"/", "/repositories/bitbucket", "/activity?x=1#y", "/a/b%2Fc"} {
		if got, err := CheckNext(ok); err != nil || got != ok {
			t.Errorf("CheckNext(%q) = %q, %v; want it accepted", ok, got, err)
		}
	}
	if got, err := CheckNext(""); err != nil || got != Home {
		t.Errorf("CheckNext(\"\") = %q, %v; want %q", got, err, Home)
	}
	for _, bad := range []string{"https://evil.example/", "//evil.example", `/\evil.example`, "evil", "javascript:alert(1)",
		"/\r\nLocation: x", "/a\\b", "http:/x"} {
		if got, err := CheckNext(bad); err == nil {
			t.Errorf("CheckNext(%q) = %q; want an error", bad, got)
		}
	}
}

func TestCSRFTokenIsBoundToTheSession(t *testing.T) {
	a, _ := NewSecret()
	b, _ := NewSecret()
	if !CheckCSRF(a, CSRFToken(a)) {
		t.Fatal("a session's own token is refused")
	}
	if CheckCSRF(a, CSRFToken(b)) || CheckCSRF(a, "") || CheckCSRF(a, a) {
		t.Fatal("a token of another session, an empty one or the secret itself is accepted")
	}
}
