package gitref

import (
	"os/exec"
	"strings"
	"testing"
)

// The table is checked against git itself, so the rules are git's and not a reading of them.
func TestCheckAgreesWithGit(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"refs/heads/main", true},
		{"refs/heads/feature/x-1_2", true},
		{"refs/tags/v1.0.0", true},
		{"refs/pull-requests/7/from", true},
		{"refs/heads/ünïcode", true},
		{"refs/heads/a.b", true},
		{"refs/heads/@", true},
		{"refs/heads/a@b", true},
		{"refs/heads/lock.d", true},
		{"", false},
		{"HEAD", false},
		{"heads/main", false},
		{"refs/heads/main\n", false},
		{"refs/heads/ma\nin", false},
		{"refs/heads/a b", false},
		{"refs/heads/a\tb", false},
		{"refs/heads/a\x7fb", false},
		{"refs/heads/a\x00b", false},
		{"refs/heads/a..b", false},
		{"refs/heads/..", false},
		{"refs/heads/.hidden", false},
		{"refs/heads/x/.y", false},
		{"refs/heads/x.lock", false},
		{"refs/heads/x.lock/y", false},
		{"refs/heads/x.", false},
		{"refs/heads/x/", false},
		{"refs//heads/x", false},
		{"refs/heads/a@{1}", false},
		{"refs/heads/a~1", false},
		{"refs/heads/a^", false},
		{"refs/heads/a:b", false},
		{"refs/heads/a?", false},
		{"refs/heads/a*", false},
		{"refs/heads/a[b", false},
		{`refs/heads/a\b`, false},
		{"refs/", false},
		{"refs", false},
	}
	git, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("git is needed to check the table against check-ref-format: %v", err)
	}
	for _, tc := range cases {
		got := Check(tc.name)
		if (got == nil) != tc.ok {
			t.Errorf("Check(%q) = %v, want ok=%v", tc.name, got, tc.ok)
		}
		if !strings.HasPrefix(tc.name, "refs/") || strings.ContainsRune(tc.name, 0) {
			continue // git accepts any two-level name; an argv entry cannot hold NUL
		}
		gitOK := exec.Command(git, "check-ref-format", tc.name).Run() == nil
		if gitOK != tc.ok {
			t.Errorf("git check-ref-format %q ok=%v, table says %v", tc.name, gitOK, tc.ok)
		}
	}
}

func TestValidOID(t *testing.T) {
	for oid, want := range map[string]bool{
		"0123456789abcdef0123456789abcdef01234567":  true,
		"0123456789ABCDEF0123456789abcdef01234567":  false,
		"0123456789abcdef0123456789abcdef0123456":   false,
		"0123456789abcdef0123456789abcdef012345678": false,
		"0123456789abcdef0123456789abcdef0123456g":  false,
		"": false,
	} {
		if got := ValidOID(oid); got != want {
			t.Errorf("ValidOID(%q) = %v, want %v", oid, got, want)
		}
	}
}
