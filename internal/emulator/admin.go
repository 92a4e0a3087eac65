package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The /_emulator/ API drives upstream changes and faults from tests and demos. It has no
// authentication: the emulator is a loopback test fixture.

func adminError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, obj{"error": msg})
}

func (s *Server) registerAdmin(mux *http.ServeMux) {
	mux.HandleFunc("GET /_emulator/health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, obj{"status": "ok", "url": s.base})
	})
	mux.HandleFunc("GET /_emulator/faults", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, obj{"rules": s.faults.list()})
	})
	mux.HandleFunc("POST /_emulator/faults", s.adminAddFaults)
	mux.HandleFunc("DELETE /_emulator/faults", func(w http.ResponseWriter, _ *http.Request) {
		s.faults.clear()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /_emulator/ratelimits", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.limits.get())
	})
	mux.HandleFunc("POST /_emulator/ratelimits", func(w http.ResponseWriter, r *http.Request) {
		var l RateLimits
		if err := decodeJSON(r, &l); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.limits.set(l)
		writeJSON(w, http.StatusOK, s.limits.get())
	})
	mux.HandleFunc("GET /_emulator/deliveries", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, obj{"deliveries": s.hooks.deliveries()})
	})
	s.handle(mux, "POST /_emulator/tokens", s.adminIssueToken)
	s.handle(mux, "POST /_emulator/users/{user}/revoke-tokens", s.adminRevokeTokens)
	s.handle(mux, "PUT /_emulator/workspaces/{workspace}/members/{user}", s.adminSetMember)
	s.handle(mux, "DELETE /_emulator/workspaces/{workspace}/members/{user}", s.adminSetMember)

	repo := "/_emulator/repositories/{workspace}/{repo}"
	mux.HandleFunc("POST "+repo+"/push", s.adminPush)
	mux.HandleFunc("POST "+repo+"/force-push", s.adminForcePush)
	mux.HandleFunc("DELETE "+repo+"/refs/branches/{name...}", s.adminDeleteRef("refs/heads/"))
	mux.HandleFunc("DELETE "+repo+"/refs/tags/{name...}", s.adminDeleteRef("refs/tags/"))
	s.handle(mux, "POST "+repo+"/rename", s.adminRename)
	s.handle(mux, "POST "+repo+"/transfer", s.adminTransfer)
	s.handle(mux, "DELETE "+repo, s.adminDeleteRepo)
	s.handle(mux, "PUT "+repo+"/settings", s.adminSetSettings)
	s.handle(mux, "POST "+repo+"/pullrequests", s.adminCreatePR)
	s.handle(mux, "POST "+repo+"/pullrequests/{id}/update", s.adminPRAction("update"))
	s.handle(mux, "POST "+repo+"/pullrequests/{id}/merge", s.adminPRAction("merge"))
	s.handle(mux, "POST "+repo+"/pullrequests/{id}/decline", s.adminPRAction("decline"))
	s.handle(mux, "POST "+repo+"/pullrequests/{id}/comments", s.adminPRAction("comment"))
	s.handle(mux, "POST "+repo+"/pullrequests/{id}/approve", s.adminPRAction("approve"))
	s.handle(mux, "POST "+repo+"/pullrequests/{id}/unapprove", s.adminPRAction("unapprove"))
	s.handle(mux, "POST "+repo+"/pullrequests/{id}/request-changes", s.adminPRAction("request-changes"))
	s.handle(mux, "POST "+repo+"/pullrequests/{id}/tasks", s.adminPRAction("task"))
}

func (s *Server) adminAddFaults(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	if err := decodeJSON(r, &raw); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	var batch struct {
		Rules []FaultRule `json:"rules"`
	}
	if err := json.Unmarshal(raw, &batch); err != nil || batch.Rules == nil {
		var one FaultRule
		if err := json.Unmarshal(raw, &one); err != nil {
			adminError(w, http.StatusBadRequest, "body must be a fault rule or {\"rules\": [...]}: "+err.Error())
			return
		}
		batch.Rules = []FaultRule{one}
	}
	added := []FaultRule{}
	for _, rule := range batch.Rules {
		a, err := s.faults.add(rule)
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		added = append(added, a)
	}
	writeJSON(w, http.StatusCreated, obj{"rules": added})
}

type adminTokenInput struct {
	User     string   `json:"user"`
	Consumer string   `json:"consumer"`
	Scopes   []string `json:"scopes"`
	TTL      Duration `json:"ttl"`
}

// adminIssueToken issues a token directly: scopes default to the consumer's (or, without
// a consumer, to the default read scopes).
func (s *Server) adminIssueToken(w http.ResponseWriter, r *http.Request) {
	var in adminTokenInput
	if err := decodeJSON(r, &in); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.st.user(in.User) == nil {
		adminError(w, http.StatusBadRequest, "unknown user "+in.User)
		return
	}
	scopes := in.Scopes
	if in.Consumer != "" {
		c := s.st.consumer(in.Consumer)
		if c == nil {
			adminError(w, http.StatusBadRequest, "unknown consumer "+in.Consumer)
			return
		}
		if len(scopes) == 0 {
			scopes = c.Scopes
		}
	}
	if len(scopes) == 0 {
		scopes = DefaultConsumerScopes
	}
	ttl := time.Duration(in.TTL)
	if ttl <= 0 {
		ttl = s.ttl
	}
	access, refresh := s.issueToken(s.st.user(in.User).Username, in.Consumer, scopes, ttl, false)
	_ = s.saveLocked()
	writeJSON(w, http.StatusOK, s.tokenResponse(access, refresh, scopes, ttl))
}

func (s *Server) adminRevokeTokens(w http.ResponseWriter, r *http.Request) {
	u := s.st.user(r.PathValue("user"))
	if u == nil {
		adminError(w, http.StatusNotFound, "unknown user")
		return
	}
	n := 0
	for _, t := range s.st.Tokens {
		if t.User == u.Username && !t.Revoked {
			t.Revoked = true
			n++
		}
	}
	for _, rt := range s.st.Refresh {
		if rt.User == u.Username && !rt.Revoked {
			rt.Revoked = true
			n++
		}
	}
	_ = s.saveLocked()
	writeJSON(w, http.StatusOK, obj{"revoked": n})
}

// adminSetMember sets (PUT {"role": "owner|admin|collaborator|member"}) or removes (DELETE)
// a user's workspace membership.
func (s *Server) adminSetMember(w http.ResponseWriter, r *http.Request) {
	ws := s.st.workspace(r.PathValue("workspace"))
	u := s.st.user(r.PathValue("user"))
	if ws == nil || u == nil {
		adminError(w, http.StatusNotFound, "unknown workspace or user")
		return
	}
	ws.Members = slices.DeleteFunc(ws.Members, func(m memberRec) bool { return m.Username == u.Username })
	if r.Method == http.MethodPut {
		var in struct {
			Role string `json:"role"`
		}
		if err := decodeJSON(r, &in); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		switch in.Role {
		case roleOwner, roleAdmin, roleCollaborator, roleMember:
		default:
			adminError(w, http.StatusBadRequest, "role must be owner, admin, collaborator or member")
			return
		}
		ws.Members = append(ws.Members, memberRec{Username: u.Username, Role: in.Role})
	}
	_ = s.saveLocked()
	writeJSON(w, http.StatusOK, obj{"workspace": ws.Slug, "members": ws.Members})
}

// adminRepo resolves a repository and the actor ("" = first workspace administrator).
func (s *Server) adminRepo(w http.ResponseWriter, r *http.Request, actorName string) (*repoRec, *userRec, bool) {
	ws := s.st.workspace(r.PathValue("workspace"))
	var repo *repoRec
	if ws != nil {
		repo = s.st.repo(ws, r.PathValue("repo"))
	}
	if repo == nil {
		adminError(w, http.StatusNotFound, fmt.Sprintf("repository %s/%s not found", r.PathValue("workspace"), r.PathValue("repo")))
		return nil, nil, false
	}
	var actor *userRec
	if actorName != "" {
		if actor = s.st.user(actorName); actor == nil {
			adminError(w, http.StatusBadRequest, "unknown user "+actorName)
			return nil, nil, false
		}
	} else {
		for _, m := range ws.Members {
			if isAdminRole(m.Role) {
				actor = s.st.user(m.Username)
				break
			}
		}
		if actor == nil && len(s.st.Users) > 0 {
			actor = s.st.Users[0]
		}
	}
	return repo, actor, true
}

// refChange runs change against the repository's git dir with the ref lock held and then
// emits repo:push for whatever moved.
func (s *Server) refChange(w http.ResponseWriter, r *http.Request, actorName string, change func(dir string) error) {
	s.mu.Lock()
	repo, actor, ok := s.adminRepo(w, r, actorName)
	if !ok {
		s.mu.Unlock()
		return
	}
	fullName, repoUUID, dir := repo.fullName(), repo.UUID, s.gitDir(repo.Workspace, repo.Slug)
	s.mu.Unlock()

	lock := s.repoLock(fullName)
	lock.Lock()
	before, err := refMap(s.ctx, dir)
	if err == nil {
		err = change(dir)
	}
	var after map[string]gitRef
	if err == nil {
		after, err = refMap(s.ctx, dir)
	}
	lock.Unlock()
	if err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	refs := map[string]string{}
	if repo := s.st.repoByUUID(repoUUID); repo != nil {
		s.pushEventLocked(repo, actor, before, after)
	}
	for n, ref := range after {
		refs[n] = ref.Hash
	}
	writeJSON(w, http.StatusOK, obj{"refs": refs})
}

func (s *Server) adminPush(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Branch   string `json:"branch"`
		Commits  int    `json:"commits"`
		FileSize int64  `json:"file_size"`
		Message  string `json:"message"`
		Author   string `json:"author"`
	}
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &in); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	// Resolve the author before refChange: s.mu must never be taken under a repository lock.
	s.mu.Lock()
	author := genAuthor{Name: "Emulator", Email: "emulator@example.com"}
	if u := s.st.user(in.Author); u != nil {
		author = genAuthor{Name: u.DisplayName, Email: u.Email}
	} else if len(s.st.Users) > 0 {
		author = genAuthor{Name: s.st.Users[0].DisplayName, Email: s.st.Users[0].Email}
	}
	s.mu.Unlock()
	s.refChange(w, r, in.Author, func(dir string) error {
		branch := in.Branch
		if branch == "" {
			branch = headBranch(dir)
			if branch == "" {
				branch = "main"
			}
		}
		return appendCommits(s.ctx, dir, branch, in.Commits, in.FileSize, author, in.Message)
	})
}

// adminForcePush moves a branch to an older commit: {"branch", "to": rev} or {"back": N}.
func (s *Server) adminForcePush(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Branch string `json:"branch"`
		To     string `json:"to"`
		Back   int    `json:"back"`
		Actor  string `json:"actor"`
	}
	if err := decodeJSON(r, &in); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	if in.Branch == "" || (in.To == "" && in.Back <= 0) {
		adminError(w, http.StatusBadRequest, "branch and one of to or back are required")
		return
	}
	s.refChange(w, r, in.Actor, func(dir string) error {
		target := in.To
		if target == "" {
			target = "refs/heads/" + in.Branch + "~" + strconv.Itoa(in.Back)
		}
		hash, err := resolveCommit(s.ctx, dir, target)
		if err != nil {
			return err
		}
		_, err = gitOutput(s.ctx, dir, "update-ref", "refs/heads/"+in.Branch, hash)
		return err
	})
}

func (s *Server) adminDeleteRef(prefix string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		s.refChange(w, r, r.URL.Query().Get("actor"), func(dir string) error {
			if _, err := gitOutput(s.ctx, dir, "rev-parse", "--verify", "-q", prefix+name); err != nil {
				return fmt.Errorf("ref %s%s does not exist", prefix, name)
			}
			_, err := gitOutput(s.ctx, dir, "update-ref", "-d", prefix+name)
			return err
		})
	}
}

func (s *Server) adminRename(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Slug  string `json:"slug"`
		Name  string `json:"name"`
		Actor string `json:"actor"`
	}
	if err := decodeJSON(r, &in); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	repo, actor, ok := s.adminRepo(w, r, in.Actor)
	if !ok {
		return
	}
	newSlug := strings.ToLower(in.Slug)
	if newSlug == "" {
		newSlug = slugify(in.Name)
	}
	ws := s.st.workspace(repo.Workspace)
	if !slugRE.MatchString(newSlug) || (newSlug != repo.Slug && s.st.repo(ws, newSlug) != nil) {
		adminError(w, http.StatusBadRequest, "invalid or taken slug "+newSlug)
		return
	}
	name := in.Name
	if name == "" {
		name = newSlug
	}
	if newSlug == repo.Slug {
		newSlug = ""
	}
	if err := s.updateRepoLocked(repo, repoInput{Name: &name}, newSlug, actor); err != nil {
		adminError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.repoObj(repo, ""))
}

// adminTransfer moves a repository to another workspace ({"to": slug}), keeping its UUID,
// git data, pull requests and repository hooks, and emits repo:transfer.
func (s *Server) adminTransfer(w http.ResponseWriter, r *http.Request) {
	var in struct {
		To    string `json:"to"`
		Actor string `json:"actor"`
	}
	if err := decodeJSON(r, &in); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	repo, actor, ok := s.adminRepo(w, r, in.Actor)
	if !ok {
		return
	}
	to := s.st.workspace(in.To)
	switch {
	case in.To == "":
		adminError(w, http.StatusBadRequest, `"to" (the workspace to transfer to) is required`)
		return
	case to == nil:
		adminError(w, http.StatusNotFound, "unknown workspace "+in.To)
		return
	case to.Slug == repo.Workspace:
		adminError(w, http.StatusBadRequest, "the repository is already in workspace "+to.Slug)
		return
	case s.st.repo(to, repo.Slug) != nil:
		adminError(w, http.StatusConflict, fmt.Sprintf("repository %s/%s already exists", to.Slug, repo.Slug))
		return
	}
	if err := s.transferRepoLocked(repo, to, actor); err != nil {
		adminError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.repoObj(repo, ""))
}

func (s *Server) adminDeleteRepo(w http.ResponseWriter, r *http.Request) {
	repo, actor, ok := s.adminRepo(w, r, r.URL.Query().Get("actor"))
	if !ok {
		return
	}
	if err := s.deleteRepoLocked(repo, actor); err != nil {
		adminError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type adminPRInput struct {
	Title       string `json:"title"`
	Description string `json:"description"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Author      string `json:"author"`
	Actor       string `json:"actor"`
	Message     string `json:"message"`
	Reason      string `json:"reason"`
	Content     string `json:"content"`
	User        string `json:"user"`
	Parent      int    `json:"parent"`
	Comment     int    `json:"comment"`
	State       string `json:"state"`
}

func (s *Server) adminCreatePR(w http.ResponseWriter, r *http.Request) {
	var in adminPRInput
	if err := decodeJSON(r, &in); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	repo, actor, ok := s.adminRepo(w, r, in.Author)
	if !ok {
		return
	}
	pi := prInput{Title: &in.Title, Description: &in.Description}
	pi.Source = &struct {
		Branch struct {
			Name string `json:"name"`
		} `json:"branch"`
	}{}
	pi.Source.Branch.Name = in.Source
	if in.Destination != "" {
		pi.Destination = &struct {
			Branch struct {
				Name string `json:"name"`
			} `json:"branch"`
		}{}
		pi.Destination.Branch.Name = in.Destination
	}
	pr, _, msg := s.createPRLocked(repo, actor, pi)
	if pr == nil {
		adminError(w, http.StatusBadRequest, msg)
		return
	}
	writeJSON(w, http.StatusCreated, s.prObj(repo, pr))
}

func (s *Server) adminPRAction(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in adminPRInput
		if r.ContentLength != 0 {
			if err := decodeJSON(r, &in); err != nil {
				adminError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		actorName := in.Actor
		if (action == "comment" || action == "approve" || action == "unapprove" || action == "request-changes" ||
			action == "task") && in.User != "" {
			actorName = in.User
		}
		repo, actor, ok := s.adminRepo(w, r, actorName)
		if !ok {
			return
		}
		id, _ := strconv.Atoi(r.PathValue("id"))
		pr := s.st.pullRequest(repo.UUID, id)
		if pr == nil {
			adminError(w, http.StatusNotFound, "pull request not found")
			return
		}
		switch action {
		case "update":
			pi := prInput{}
			if in.Title != "" {
				pi.Title = &in.Title
			}
			if in.Description != "" {
				pi.Description = &in.Description
			}
			s.updatePRLocked(repo, pr, actor, pi)
		case "merge":
			if status, msg := s.mergePRLocked(repo, pr, actor, in.Message); status != 0 {
				adminError(w, status, msg)
				return
			}
		case "decline":
			if pr.State != "OPEN" {
				adminError(w, http.StatusBadRequest, "the pull request is not open")
				return
			}
			s.declinePRLocked(repo, pr, actor, in.Reason)
		case "comment":
			if in.Content == "" || actor == nil {
				adminError(w, http.StatusBadRequest, "content and a user are required")
				return
			}
			ci := commentInput{Content: &struct {
				Raw string `json:"raw"`
			}{Raw: in.Content}}
			if in.Parent != 0 {
				ci.Parent = &struct {
					ID int `json:"id"`
				}{ID: in.Parent}
			}
			cm := s.addCommentLocked(repo, pr, actor, ci)
			writeJSON(w, http.StatusCreated, s.commentObj(repo, pr, cm))
			return
		case "approve", "unapprove", "request-changes":
			kind := map[string]string{"approve": "approval", "unapprove": "unapproval", "request-changes": "changes_request"}[action]
			if status, msg := s.reviewPRLocked(repo, pr, actor, kind); status != 0 {
				adminError(w, status, msg)
				return
			}
		case "task":
			if in.Content == "" || actor == nil {
				adminError(w, http.StatusBadRequest, "content and a user are required")
				return
			}
			if in.Comment != 0 && pr.comment(in.Comment) == nil {
				adminError(w, http.StatusBadRequest, "comment not found")
				return
			}
			t := s.addTaskLocked(pr, actor, in.Content, in.Comment, false)
			if in.State == "RESOLVED" {
				s.updateTaskLocked(pr, t, actor, "", "RESOLVED")
			}
			writeJSON(w, http.StatusCreated, s.taskObj(repo, pr, t))
			return
		}
		writeJSON(w, http.StatusOK, s.prObj(repo, pr))
	}
}
