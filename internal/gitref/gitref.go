// Package gitref checks reference names by git's rules (git check-ref-format), so that a name
// read back from storage or a provider can be written into ref files, packed-refs and bundle
// headers without changing their meaning: a newline would start another header line, ".."
// would be a range, a space would split "<oid> <name>".
package gitref

import (
	"fmt"
	"strings"
)

// Check reports why name is not a full reference name ("refs/..."), or nil. It applies every
// rule of git check-ref-format without --allow-onelevel, --refspec-pattern or --normalize.
func Check(name string) error {
	bad := func(why string) error { return fmt.Errorf("invalid reference name %q: %s", name, why) }
	switch {
	case !strings.HasPrefix(name, "refs/"):
		return bad("it does not start with refs/")
	case strings.HasSuffix(name, "/"):
		return bad("it ends with /")
	case strings.HasSuffix(name, "."):
		return bad("it ends with a dot")
	case strings.Contains(name, ".."):
		return bad(`it contains ".."`)
	case strings.Contains(name, "@{"):
		return bad(`it contains "@{"`)
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		switch {
		case b < 0x20 || b == 0x7f:
			return bad(fmt.Sprintf("control character 0x%02x at byte %d", b, i))
		case b == ' ':
			return bad(fmt.Sprintf("space at byte %d", i))
		case strings.IndexByte(`~^:?*[\`, b) >= 0:
			return bad(fmt.Sprintf("%q at byte %d", b, i))
		}
	}
	for _, part := range strings.Split(name, "/") {
		switch {
		case part == "":
			return bad("it contains //")
		case strings.HasPrefix(part, "."):
			return bad(fmt.Sprintf("component %q begins with a dot", part))
		case strings.HasSuffix(part, ".lock"):
			return bad(fmt.Sprintf("component %q ends with .lock", part))
		}
	}
	return nil
}

// ValidOID reports whether s is a full SHA-1 object id in lower-case hex, as refs, manifests
// and bundles spell them. A loop, not a regexp: manifests check thousands per load.
func ValidOID(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
