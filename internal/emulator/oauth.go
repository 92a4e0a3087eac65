package emulator

import (
	"crypto/subtle"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const codeTTL = 10 * time.Minute

func (s *Server) registerOAuth(mux *http.ServeMux) {
	s.handle(mux, "GET /site/oauth2/authorize", s.authorizePage)
	s.handle(mux, "POST /site/oauth2/authorize", s.authorizeDecision)
	s.handle(mux, "POST /site/oauth2/access_token", s.accessToken)
}

var consentPage = template.Must(template.New("consent").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Authorize {{.Consumer}} - Bitbucket emulator</title>
<style>body{font-family:sans-serif;max-width:36em;margin:3em auto}label{display:block;margin:.4em 0}
button{margin-right:1em;padding:.5em 1.2em}</style></head>
<body>
<h1>Authorize {{.Consumer}}</h1>
<p>{{.Consumer}} is requesting access to your Bitbucket account with these permissions:</p>
<ul>{{range .Scopes}}<li><code>{{.}}</code></li>{{end}}</ul>
<form method="post" action="/site/oauth2/authorize">
<fieldset><legend>Sign in as</legend>
{{range $i, $u := .Users}}<label><input type="radio" name="user" value="{{$u.Username}}"{{if eq $i 0}} checked{{end}}> {{$u.DisplayName}} ({{$u.Username}})</label>
{{end}}</fieldset>
<input type="hidden" name="client_id" value="{{.ClientID}}">
<input type="hidden" name="response_type" value="{{.ResponseType}}">
<input type="hidden" name="state" value="{{.State}}">
<input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<p><button type="submit" name="decision" value="grant">Grant access</button>
<button type="submit" name="decision" value="deny">Cancel</button></p>
</form></body></html>
`))

func oauthPageError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}

// authorizeTarget validates client_id/response_type/redirect_uri and returns the consumer
// and the callback to redirect to.
func (s *Server) authorizeTarget(w http.ResponseWriter, get func(string) string) (*consumerRec, string, bool) {
	c := s.st.consumer(get("client_id"))
	if c == nil {
		oauthPageError(w, http.StatusBadRequest, "Invalid client_id")
		return nil, "", false
	}
	if rt := get("response_type"); rt != "code" {
		oauthPageError(w, http.StatusBadRequest, "Unsupported response_type "+rt+" (the emulator implements response_type=code)")
		return nil, "", false
	}
	callback := c.CallbackURL
	if ru := get("redirect_uri"); ru != "" {
		if !strings.HasPrefix(ru, c.CallbackURL) {
			oauthPageError(w, http.StatusBadRequest, "redirect_uri does not match the consumer's callback URL")
			return nil, "", false
		}
		callback = ru
	}
	if _, err := url.Parse(callback); err != nil || callback == "" {
		oauthPageError(w, http.StatusBadRequest, "The consumer has no valid callback URL")
		return nil, "", false
	}
	return c, callback, true
}

func (s *Server) authorizePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c, _, ok := s.authorizeTarget(w, q.Get)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = consentPage.Execute(w, map[string]any{
		"Consumer": c.Name, "Scopes": c.Scopes, "Users": s.st.Users, "ClientID": c.Key,
		"ResponseType": q.Get("response_type"), "State": q.Get("state"), "RedirectURI": q.Get("redirect_uri"),
	})
}

func withQuery(base string, params url.Values) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	q := u.Query()
	for k, vs := range params {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// authorizeDecision handles the consent form: user=NAME&decision=grant|deny.
func (s *Server) authorizeDecision(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthPageError(w, http.StatusBadRequest, "Invalid form")
		return
	}
	get := r.Form.Get // form fields first, then query
	c, callback, ok := s.authorizeTarget(w, get)
	if !ok {
		return
	}
	state := get("state")
	params := url.Values{}
	if get("decision") != "grant" {
		params.Set("error", "access_denied")
		params.Set("error_description", "The user denied access to "+c.Name)
		if state != "" {
			params.Set("state", state)
		}
		http.Redirect(w, r, withQuery(callback, params), http.StatusFound)
		return
	}
	u := s.st.user(get("user"))
	if u == nil {
		oauthPageError(w, http.StatusBadRequest, "Unknown user "+get("user"))
		return
	}
	code := randomToken(18)
	s.st.Codes = append(s.st.Codes, &codeRec{Hash: hashSecret(code), User: u.Username, Consumer: c.Key,
		ExpiresAt: time.Now().Add(codeTTL)})
	_ = s.saveLocked()
	s.log.Info("oauth authorization granted", "user", u.Username, "consumer", c.Key)
	params.Set("code", code)
	if state != "" {
		params.Set("state", state)
	}
	http.Redirect(w, r, withQuery(callback, params), http.StatusFound)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, obj{"error": code, "error_description": desc})
}

func (s *Server) accessToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "Invalid form body")
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	c := s.st.consumer(id)
	if c == nil || subtle.ConstantTimeCompare([]byte(c.Secret), []byte(secret)) != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "Invalid OAuth client credentials")
		return
	}
	now := time.Now()
	var user string
	grant := r.PostForm.Get("grant_type")
	switch grant {
	case "authorization_code":
		h := hashSecret(r.PostForm.Get("code"))
		var code *codeRec
		for _, cr := range s.st.Codes {
			if cr.Hash == h {
				code = cr
			}
		}
		if code == nil || code.Used || code.Consumer != c.Key || !now.Before(code.ExpiresAt) {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "The authorization code is invalid or has expired.")
			return
		}
		code.Used = true
		user = code.User
	case "refresh_token":
		h := hashSecret(r.PostForm.Get("refresh_token"))
		var rt *refreshRec
		for _, x := range s.st.Refresh {
			if x.Hash == h {
				rt = x
			}
		}
		if rt == nil || rt.Used || rt.Revoked || rt.Consumer != c.Key {
			oauthError(w, http.StatusBadRequest, "invalid_request", "Invalid refresh_token")
			return
		}
		// Rotation: each refresh returns a new refresh token and the old one stops working.
		rt.Used = true
		user = rt.User
	default:
		if grant == "" {
			grant = "None"
		}
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Unsupported grant type: "+grant)
		return
	}
	if s.st.user(user) == nil {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "The user no longer exists.")
		return
	}
	access, refresh := s.issueToken(user, c.Key, c.Scopes, s.ttl, false)
	if err := s.saveLocked(); err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", "Could not store the token")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, s.tokenResponse(access, refresh, c.Scopes, s.ttl))
}

func (s *Server) tokenResponse(access, refresh string, scopes []string, ttl time.Duration) obj {
	o := obj{"access_token": access, "scopes": strings.Join(scopes, " "), "token_type": "bearer",
		"expires_in": int(ttl.Seconds()), "state": "authorization_code"}
	if refresh != "" {
		o["refresh_token"] = refresh
	}
	return o
}
