package emulator

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// gitHandler serves smart HTTP through the real `git http-backend`, after checking the
// x-token-auth credentials against the token's user and scopes.
func (s *Server) gitHandler() http.Handler {
	gitPath, _ := exec.LookPath("git")
	backend := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Root: "/",
		Env: []string{
			"GIT_PROJECT_ROOT=" + s.dataDir + "/git",
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=/dev/null",
		},
		InheritEnv: []string{"PATH"},
		Logger:     slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveGit(w, r, backend)
	})
}

func gitDenied(w http.ResponseWriter, status int, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="Bitbucket.org HTTP"`)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}

func (s *Server) serveGit(w http.ResponseWriter, r *http.Request, backend *cgi.Handler) {
	// Path: /{workspace}/{slug}.git[/rest]
	p := strings.TrimPrefix(r.URL.Path, "/")
	wsID, rest, ok := strings.Cut(p, "/")
	repoPart, tail, _ := strings.Cut(rest, ".git")
	if !ok || repoPart == "" || strings.Contains(repoPart, "/") {
		gitDenied(w, http.StatusNotFound, "Repository not found")
		return
	}
	push := strings.HasSuffix(tail, "/git-receive-pack") || r.URL.Query().Get("service") == "git-receive-pack"
	scope, need := "repository", permRead
	if push {
		scope, need = "repository:write", permWrite
	}

	s.mu.Lock()
	ws := s.st.workspace(wsID)
	var repo *repoRec
	if ws != nil {
		repo = s.st.repo(ws, repoPart)
	}
	if repo == nil {
		s.mu.Unlock()
		gitDenied(w, http.StatusNotFound, "Repository not found")
		return
	}
	var user *userRec
	user_, pass, hasAuth := r.BasicAuth()
	if hasAuth {
		if user_ != "x-token-auth" {
			s.mu.Unlock()
			gitDenied(w, http.StatusUnauthorized, "Invalid credentials: use x-token-auth and an access token")
			return
		}
		t, problem := s.lookupToken(pass, time.Now())
		if t == nil {
			s.mu.Unlock()
			gitDenied(w, http.StatusUnauthorized, problem)
			return
		}
		if !scopeClosure(t.Scopes)[scope] {
			s.mu.Unlock()
			gitDenied(w, http.StatusForbidden, "Your credentials lack the "+scope+" scope")
			return
		}
		user = s.st.user(t.User)
	}
	username := ""
	if user != nil {
		username = user.Username
	}
	perm := s.st.repoPermission(username, repo)
	if perm < need {
		s.mu.Unlock()
		if user == nil {
			gitDenied(w, http.StatusUnauthorized, "Authentication required")
		} else {
			gitDenied(w, http.StatusForbidden, "You do not have "+map[bool]string{true: "write", false: "read"}[push]+" access to this repository")
		}
		return
	}
	fullName := repo.fullName()
	repoUUID := repo.UUID
	rules := pushRules(repo, username)
	dir := s.gitDir(repo.Workspace, repo.Slug)
	s.mu.Unlock()

	if !s.limits.allow(username, budgetGit, time.Now()) {
		writeRateLimited(w, nil)
		return
	}
	// Addressing by {uuid} or with a different case still reaches the repository on disk.
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + fullName + ".git" + tail
	if username != "" {
		r2.Header.Del("Authorization")
		r2.Header.Set("X-Remote-User", username)
	}
	// git sends packs over http.postBuffer (1 MiB) chunked, which Go's CGI handler refuses
	// (400); bitbucket.org takes them, so spool such a body and hand it over with a length.
	if len(r2.TransferEncoding) > 0 || r2.ContentLength < 0 {
		spooled, cleanup, err := spoolBody(r2)
		if err != nil {
			s.log.Error("spool git request body", "repository", fullName, "err", err)
			gitDenied(w, http.StatusBadRequest, "Could not read the request body")
			return
		}
		defer cleanup()
		r2 = spooled
	}
	if !(push && r.Method == http.MethodPost) {
		backend.ServeHTTP(w, r2)
		return
	}
	// A push: compare refs before and after receive-pack to build repo:push.
	lock := s.repoLock(fullName)
	lock.Lock()
	before, err := refMap(s.ctx, dir)
	if err != nil {
		lock.Unlock()
		s.log.Error("read refs before push", "repository", fullName, "err", err)
		gitDenied(w, http.StatusInternalServerError, "Could not read repository")
		return
	}
	if err := installPushRules(dir, rules); err != nil {
		lock.Unlock()
		s.log.Error("write push rules", "repository", fullName, "err", err)
		gitDenied(w, http.StatusInternalServerError, "Could not prepare the push")
		return
	}
	backend.ServeHTTP(w, r2)
	after, err := refMap(s.ctx, dir)
	lock.Unlock()
	if err != nil {
		s.log.Error("read refs after push", "repository", fullName, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if repo := s.st.repoByUUID(repoUUID); repo != nil {
		s.pushEventLocked(repo, user, before, after)
	}
}

// spoolBody copies a request body of unknown length to a temporary file and returns the request
// reading from it with its length set.
func spoolBody(r *http.Request) (*http.Request, func(), error) {
	f, err := os.CreateTemp("", "emulator-git-body-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	n, err := io.Copy(f, r.Body)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	out := r.Clone(r.Context())
	out.Body, out.ContentLength, out.TransferEncoding = f, n, nil
	out.Header.Set("Content-Length", strconv.FormatInt(n, 10))
	return out, cleanup, nil
}
