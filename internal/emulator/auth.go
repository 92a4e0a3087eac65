package emulator

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

// impliedScopes follows Bitbucket's rule that write scopes imply read and that the PR
// scopes imply the matching repository access.
var impliedScopes = map[string][]string{
	"account:write":     {"account"},
	"team:write":        {"team"},
	"repository:write":  {"repository"},
	"repository:admin":  {"repository"},
	"repository:delete": {"repository"},
	"pullrequest":       {"repository"},
	"pullrequest:write": {"pullrequest", "repository:write"},
	"project:admin":     {"project"},
	"issue":             {"repository"},
	"issue:write":       {"issue"},
	"snippet:write":     {"snippet"},
	"pipeline:write":    {"pipeline"},
	"runner:write":      {"runner"},
	"email":             {"account"},
}

func scopeClosure(granted []string) map[string]bool {
	out := map[string]bool{}
	var add func(s string)
	add = func(s string) {
		if out[s] {
			return
		}
		out[s] = true
		for _, i := range impliedScopes[s] {
			add(i)
		}
	}
	for _, g := range granted {
		add(g)
	}
	return out
}

type caller struct {
	user    *userRec // nil for anonymous callers
	granted []string
	scopes  map[string]bool
}

func (c *caller) username() string {
	if c == nil || c.user == nil {
		return ""
	}
	return c.user.Username
}

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// lookupToken resolves an access token; callers hold s.mu.
func (s *Server) lookupToken(token string, now time.Time) (*tokenRec, string) {
	h := hashSecret(token)
	for _, t := range s.st.Tokens {
		if t.Hash == h {
			if t.Revoked {
				return nil, "Access token revoked."
			}
			if !now.Before(t.ExpiresAt) {
				return nil, "Access token expired."
			}
			if s.st.user(t.User) == nil {
				return nil, "Invalid access token."
			}
			return t, ""
		}
	}
	return nil, "Invalid access token."
}

// auth authenticates a REST call and checks the scope it needs (scope "" needs none).
// Anonymous calls pass only when anonymousOK. On failure it has answered already.
func (s *Server) auth(w http.ResponseWriter, r *http.Request, scope string, anonymousOK bool) (*caller, bool) {
	token := ""
	if h := r.Header.Get("Authorization"); h != "" {
		switch {
		case strings.HasPrefix(strings.ToLower(h), "bearer "):
			token = strings.TrimSpace(h[len("bearer "):])
		default:
			if user, pass, ok := r.BasicAuth(); ok && user == "x-token-auth" {
				token = pass
			}
		}
		if token == "" {
			writeError(w, http.StatusUnauthorized, "Invalid credentials.", nil)
			return nil, false
		}
	}
	if token == "" {
		if anonymousOK {
			return &caller{}, true
		}
		writeError(w, http.StatusUnauthorized, "This API requires authentication.", nil)
		return nil, false
	}
	t, problem := s.lookupToken(token, time.Now())
	if t == nil {
		writeError(w, http.StatusUnauthorized, problem, nil)
		return nil, false
	}
	c := &caller{user: s.st.user(t.User), granted: t.Scopes, scopes: scopeClosure(t.Scopes)}
	w.Header().Set("X-OAuth-Scopes", strings.Join(t.Scopes, ", "))
	w.Header().Set("X-Credential-Type", "oauth2")
	if scope != "" {
		w.Header().Set("X-Accepted-OAuth-Scopes", scope)
		if !c.scopes[scope] {
			writeScopeError(w, t.Scopes, []string{scope})
			return nil, false
		}
	}
	if strings.HasPrefix(r.URL.Path, "/2.0/repositories/") && !s.limits.allow(c.username(), budgetREST, time.Now()) {
		writeRateLimited(w, nil)
		return nil, false
	}
	return c, true
}

func (c *caller) has(scope string) bool { return c != nil && c.scopes[scope] }

func writeScopeError(w http.ResponseWriter, granted, required []string) {
	g := slices.Clone(granted)
	sort.Strings(g)
	writeError(w, http.StatusForbidden, "Your credentials lack one or more required privilege scopes.",
		obj{"granted": g, "required": required})
}

// issueToken creates an access token (and a refresh token unless noRefresh); callers hold s.mu.
func (s *Server) issueToken(user, consumer string, scopes []string, ttl time.Duration, noRefresh bool) (access, refresh string) {
	access = randomToken(48)
	s.st.Tokens = append(s.st.Tokens, &tokenRec{Hash: hashSecret(access), User: user, Consumer: consumer,
		Scopes: slices.Clone(scopes), ExpiresAt: time.Now().Add(ttl)})
	if !noRefresh {
		refresh = randomToken(24)
		s.st.Refresh = append(s.st.Refresh, &refreshRec{Hash: hashSecret(refresh), User: user, Consumer: consumer,
			Scopes: slices.Clone(scopes)})
	}
	return access, refresh
}
