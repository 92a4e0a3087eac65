package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Paging defaults and caps. pagelen above the cap is clamped, as Bitbucket does for most
// collections (the PR list answers with at most 50).
const (
	defaultPagelen = 10
	maxPagelen     = 100
	maxPRPagelen   = 50
)

type pageReq struct{ page, pagelen int }

func parsePage(r *http.Request, def, maxLen int) (pageReq, error) {
	p := pageReq{page: 1, pagelen: def}
	q := r.URL.Query()
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return p, fmt.Errorf("Invalid page")
		}
		p.page = n
	}
	if v := q.Get("pagelen"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return p, fmt.Errorf("Invalid pagelen")
		}
		p.pagelen = min(n, maxLen)
	}
	return p, nil
}

func (s *Server) pageURL(r *http.Request, page int) string {
	q := r.URL.Query()
	q.Set("page", strconv.Itoa(page))
	return s.base + r.URL.EscapedPath() + "?" + q.Encode()
}

// pageEnvelope slices items into Bitbucket's paging envelope with absolute next/previous links.
func pageEnvelope[T any](s *Server, r *http.Request, p pageReq, items []T, render func(T) any) obj {
	start := min((p.page-1)*p.pagelen, len(items))
	end := min(start+p.pagelen, len(items))
	values := make([]any, 0, end-start)
	for _, it := range items[start:end] {
		values = append(values, render(it))
	}
	env := obj{"pagelen": p.pagelen, "page": p.page, "size": len(items), "values": values}
	if end < len(items) {
		env["next"] = s.pageURL(r, p.page+1)
	}
	if p.page > 1 {
		env["previous"] = s.pageURL(r, p.page-1)
	}
	return env
}

// handle registers a REST handler that runs with the state lock held.
func (s *Server) handle(mux *http.ServeMux, pattern string, h http.HandlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		h(w, r)
	})
}

var change2770 = obj{"announcement_url": "https://developer.atlassian.com/cloud/bitbucket/changelog#CHANGE-2770"}

func writeGone(w http.ResponseWriter) {
	writeJSON(w, http.StatusGone, obj{
		"type": "error",
		"error": obj{
			"message": "CHANGE-2770 - Functionality has been deprecated",
			"detail":  "Please read the changelog entry for more details.",
			"data":    change2770,
		},
		"data": change2770,
	})
}

func (s *Server) registerREST(mux *http.ServeMux) {
	gone := func(w http.ResponseWriter, _ *http.Request) { writeGone(w) }
	mux.HandleFunc("GET /2.0/repositories", gone)
	mux.HandleFunc("GET /2.0/repositories/{$}", gone)
	mux.HandleFunc("GET /2.0/workspaces", gone)
	mux.HandleFunc("GET /2.0/workspaces/{$}", gone)
	mux.HandleFunc("GET /2.0/user/permissions/workspaces", gone)
	mux.HandleFunc("GET /2.0/user/permissions/repositories", gone)
	mux.HandleFunc("GET /2.0/user/permissions/teams", gone)

	s.handle(mux, "GET /2.0/user", s.getUser)
	s.handle(mux, "GET /2.0/user/workspaces", s.listUserWorkspaces)
	s.handle(mux, "GET /2.0/user/workspaces/{workspace}/permission", s.getUserWorkspacePermission)
	s.handle(mux, "GET /2.0/workspaces/{workspace}", s.getWorkspace)
	s.handle(mux, "GET /2.0/workspaces/{workspace}/hooks", s.listWorkspaceHooks)
	s.handle(mux, "POST /2.0/workspaces/{workspace}/hooks", s.createWorkspaceHook)
	s.handle(mux, "GET /2.0/workspaces/{workspace}/hooks/{uid}", s.workspaceHook)
	s.handle(mux, "PUT /2.0/workspaces/{workspace}/hooks/{uid}", s.workspaceHook)
	s.handle(mux, "DELETE /2.0/workspaces/{workspace}/hooks/{uid}", s.workspaceHook)

	s.handle(mux, "GET /2.0/repositories/{workspace}", s.listRepositories)
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}", s.getRepository)
	s.handle(mux, "POST /2.0/repositories/{workspace}/{repo}", s.createRepository)
	s.handle(mux, "PUT /2.0/repositories/{workspace}/{repo}", s.updateRepository)
	s.handle(mux, "DELETE /2.0/repositories/{workspace}/{repo}", s.deleteRepository)
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/refs", s.listRefs("refs/"))
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/refs/branches", s.listRefs("refs/heads/"))
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/refs/tags", s.listRefs("refs/tags/"))
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/refs/branches/{name...}", s.getRef("refs/heads/"))
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/refs/tags/{name...}", s.getRef("refs/tags/"))
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/commits", s.listCommits)
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/commits/{revision...}", s.listCommits)
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/commit/{hash}", s.getCommit)
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/diffstat/{spec...}", s.getDiffstat)
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/hooks", s.listRepoHooks)
	s.handle(mux, "POST /2.0/repositories/{workspace}/{repo}/hooks", s.createRepoHook)
	s.handle(mux, "GET /2.0/repositories/{workspace}/{repo}/hooks/{uid}", s.repoHook)
	s.handle(mux, "PUT /2.0/repositories/{workspace}/{repo}/hooks/{uid}", s.repoHook)
	s.handle(mux, "DELETE /2.0/repositories/{workspace}/{repo}/hooks/{uid}", s.repoHook)
	s.registerPullRequests(mux)
	s.registerSettings(mux)
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "account", false)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.userObj(c.user))
}

func (s *Server) listUserWorkspaces(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "account", false)
	if !ok {
		return
	}
	p, err := parsePage(r, 25, maxPagelen)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	type access struct {
		ws    *workspaceRec
		admin bool
	}
	var list []access
	adminFilter := r.URL.Query().Get("administrator")
	for _, ws := range s.st.Workspaces {
		role := s.st.role(ws, c.username())
		if role == "" {
			continue
		}
		a := access{ws, isAdminRole(role)}
		if adminFilter != "" && strconv.FormatBool(a.admin) != adminFilter {
			continue
		}
		list = append(list, a)
	}
	list, err = filterSort(list, r.URL.Query().Get("q"), r.URL.Query().Get("sort"), func(a access) fieldGetter {
		return func(f string) (any, bool) {
			switch f {
			case "slug", "workspace.slug":
				return a.ws.Slug, true
			case "administrator":
				return a.admin, true
			}
			return nil, false
		}
	})
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, pageEnvelope(s, r, p, list, func(a access) any {
		return obj{
			"type":          "workspace_access",
			"administrator": a.admin,
			"workspace": obj{
				"type": "workspace_base", "uuid": a.ws.UUID, "slug": a.ws.Slug,
				"links": obj{"self": href(s.apiBase() + "/workspaces/" + a.ws.Slug),
					"avatar": href(s.base + "/workspaces/" + a.ws.Slug + "/avatar/")},
			},
			"links": obj{"self": href(s.apiBase() + "/user/workspaces/" + a.ws.Slug + "/permission")},
		}
	}))
}

func (s *Server) getUserWorkspacePermission(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "account", false)
	if !ok {
		return
	}
	ws := s.st.workspace(r.PathValue("workspace"))
	if ws == nil {
		writeError(w, http.StatusNotFound, "No workspace with identifier '"+r.PathValue("workspace")+"'.", nil)
		return
	}
	role := s.st.role(ws, c.username())
	if role == "" {
		writeError(w, http.StatusForbidden, "You do not have access to this workspace.", nil)
		return
	}
	perm := role
	if isAdminRole(role) {
		perm = "owner"
	}
	writeJSON(w, http.StatusOK, obj{"type": "workspace_membership", "permission": perm,
		"user": s.accountObj(c.user), "workspace": s.workspaceMini(ws)})
}

func (s *Server) getWorkspace(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "", true)
	if !ok {
		return
	}
	ws := s.st.workspace(r.PathValue("workspace"))
	if ws == nil || (ws.IsPrivate && s.st.role(ws, c.username()) == "") {
		writeError(w, http.StatusNotFound, "No workspace with identifier '"+r.PathValue("workspace")+"'.", nil)
		return
	}
	writeJSON(w, http.StatusOK, s.workspaceObj(ws))
}

func repoNotFound(w http.ResponseWriter, ws, slug string) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("Repository %s/%s not found", ws, slug), nil)
}

// findRepo resolves {workspace}/{repo} and checks the caller's permission on it.
func (s *Server) findRepo(w http.ResponseWriter, r *http.Request, c *caller, need permission) (*workspaceRec, *repoRec, bool) {
	wsID, repoID := r.PathValue("workspace"), r.PathValue("repo")
	ws := s.st.workspace(wsID)
	if ws == nil {
		repoNotFound(w, wsID, repoID)
		return nil, nil, false
	}
	repo := s.st.repo(ws, repoID)
	if repo == nil {
		repoNotFound(w, wsID, repoID)
		return nil, nil, false
	}
	have := s.st.repoPermission(c.username(), repo)
	if have < need {
		if have == permNone {
			writeError(w, http.StatusForbidden, "You do not have access to this repository.", nil)
		} else {
			writeError(w, http.StatusForbidden, "You do not have sufficient permission on this repository.", nil)
		}
		return nil, nil, false
	}
	return ws, repo, true
}

func (s *Server) listRepositories(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "repository", true)
	if !ok {
		return
	}
	ws := s.st.workspace(r.PathValue("workspace"))
	if ws == nil {
		writeError(w, http.StatusNotFound, "No workspace with identifier '"+r.PathValue("workspace")+"'.", nil)
		return
	}
	p, err := parsePage(r, defaultPagelen, maxPagelen)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	role := r.URL.Query().Get("role")
	var visible []*repoRec
	for _, repo := range s.st.reposOf(ws) {
		perm := s.st.repoPermission(c.username(), repo)
		if perm == permNone {
			continue
		}
		if role != "" && !roleMatches(role, perm, s.st.role(ws, c.username())) {
			continue
		}
		visible = append(visible, repo)
	}
	list, err := filterSort(visible, r.URL.Query().Get("q"), r.URL.Query().Get("sort"), repoFields)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, pageEnvelope(s, r, p, list, func(repo *repoRec) any { return s.repoObj(repo, c.username()) }))
}

func roleMatches(role string, perm permission, wsRole string) bool {
	switch role {
	case "owner":
		return isAdminRole(wsRole)
	case "admin":
		return perm >= permAdmin
	case "contributor":
		return perm >= permWrite
	case "member":
		return perm >= permRead && wsRole != ""
	}
	return false
}

func repoFields(repo *repoRec) fieldGetter {
	return func(f string) (any, bool) {
		switch f {
		case "name":
			return repo.Name, true
		case "slug":
			return repo.Slug, true
		case "full_name":
			return repo.fullName(), true
		case "uuid":
			return repo.UUID, true
		case "description":
			return repo.Description, true
		case "language":
			return repo.Language, true
		case "is_private":
			return repo.IsPrivate, true
		case "created_on":
			return repo.CreatedOn, true
		case "updated_on":
			return repo.UpdatedOn, true
		case "project.key":
			return repo.ProjectKey, true
		}
		return nil, false
	}
}

func (s *Server) getRepository(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "repository", true)
	if !ok {
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permRead)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.repoObj(repo, c.username()))
}

type repoInput struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
	IsPrivate   *bool   `json:"is_private"`
	ForkPolicy  *string `json:"fork_policy"`
	Language    *string `json:"language"`
	Website     *string `json:"website"`
	HasIssues   *bool   `json:"has_issues"`
	HasWiki     *bool   `json:"has_wiki"`
	SCM         *string `json:"scm"`
	Project     *struct {
		Key  string `json:"key"`
		UUID string `json:"uuid"`
	} `json:"project"`
	MainBranch *struct {
		Name string `json:"name"`
	} `json:"mainbranch"`
}

var slugRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

func slugify(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

func canCreateRepos(role string) bool { return isAdminRole(role) || role == roleCollaborator }

func (s *Server) createRepository(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "repository:admin", false)
	if !ok {
		return
	}
	var in repoInput
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), nil)
			return
		}
	}
	status, body := s.createRepoLocked(c, r.PathValue("workspace"), r.PathValue("repo"), in)
	writeJSON(w, status, body)
}

func (s *Server) createRepoLocked(c *caller, wsID, slug string, in repoInput) (int, any) {
	ws := s.st.workspace(wsID)
	if ws == nil {
		return http.StatusNotFound, obj{"type": "error", "error": obj{"message": "No workspace with identifier '" + wsID + "'."}}
	}
	if !canCreateRepos(s.st.role(ws, c.username())) {
		return http.StatusForbidden, obj{"type": "error", "error": obj{"message": "You do not have permission to create repositories in this workspace."}}
	}
	slug = strings.ToLower(slug)
	if !slugRE.MatchString(slug) {
		return http.StatusBadRequest, obj{"type": "error", "error": obj{"message": "Invalid repository slug."}}
	}
	if s.st.repo(ws, slug) != nil {
		return http.StatusBadRequest, obj{"type": "error", "error": obj{"message": "Repository with this Slug and Owner already exists."}}
	}
	if in.SCM != nil && *in.SCM != "git" {
		return http.StatusBadRequest, obj{"type": "error", "error": obj{"message": "Only git repositories are supported."}}
	}
	now := time.Now().UTC()
	repo := &repoRec{UUID: newUUID(), Workspace: ws.Slug, Slug: slug, Name: slug, IsPrivate: true,
		ForkPolicy: "no_public_forks", ProjectKey: ws.Projects[0].Key, CreatedOn: now, UpdatedOn: now, NextPRID: 1}
	if in.Project != nil {
		id := in.Project.Key
		if id == "" {
			id = in.Project.UUID
		}
		p := s.st.project(ws, id)
		if p == nil {
			return http.StatusBadRequest, obj{"type": "error", "error": obj{"message": "Project not found: " + id}}
		}
		repo.ProjectKey = p.Key
	}
	applyRepoInput(repo, in)
	if err := initBare(s.ctx, s.gitDir(ws.Slug, slug)); err != nil {
		s.log.Error("create repository", "repository", repo.fullName(), "err", err)
		return http.StatusInternalServerError, obj{"type": "error", "error": obj{"message": "Could not create repository."}}
	}
	if in.MainBranch != nil && in.MainBranch.Name != "" {
		_, _ = gitOutput(s.ctx, s.gitDir(ws.Slug, slug), "symbolic-ref", "HEAD", "refs/heads/"+in.MainBranch.Name)
	}
	s.st.Repositories = append(s.st.Repositories, repo)
	_ = s.saveLocked()
	s.emit("repo:created", repo, c.user, obj{})
	return http.StatusOK, s.repoObj(repo, c.username())
}

func applyRepoInput(repo *repoRec, in repoInput) {
	if in.Name != nil {
		repo.Name = *in.Name
	}
	if in.Description != nil {
		repo.Description = *in.Description
	}
	if in.IsPrivate != nil {
		repo.IsPrivate = *in.IsPrivate
	}
	if in.ForkPolicy != nil {
		repo.ForkPolicy = *in.ForkPolicy
	}
	if in.Language != nil {
		repo.Language = *in.Language
	}
	if in.Website != nil {
		repo.Website = *in.Website
	}
	if in.HasIssues != nil {
		repo.HasIssues = *in.HasIssues
	}
	if in.HasWiki != nil {
		repo.HasWiki = *in.HasWiki
	}
}

func (s *Server) updateRepository(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "repository:admin", false)
	if !ok {
		return
	}
	var in repoInput
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), nil)
			return
		}
	}
	ws := s.st.workspace(r.PathValue("workspace"))
	if ws != nil && s.st.repo(ws, r.PathValue("repo")) == nil {
		status, body := s.createRepoLocked(c, ws.Slug, r.PathValue("repo"), in)
		if status == http.StatusOK {
			status = http.StatusCreated
		}
		writeJSON(w, status, body)
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permAdmin)
	if !ok {
		return
	}
	newSlug := ""
	if in.Name != nil && slugify(*in.Name) != repo.Slug {
		newSlug = slugify(*in.Name)
		if !slugRE.MatchString(newSlug) || s.st.repo(ws, newSlug) != nil {
			writeError(w, http.StatusBadRequest, "Repository with this Slug and Owner already exists.", nil)
			return
		}
	}
	if in.Project != nil {
		id := in.Project.Key
		if id == "" {
			id = in.Project.UUID
		}
		p := s.st.project(ws, id)
		if p == nil {
			writeError(w, http.StatusBadRequest, "Project not found: "+id, nil)
			return
		}
		repo.ProjectKey = p.Key
	}
	if err := s.updateRepoLocked(repo, in, newSlug, c.user); err != nil {
		writeError(w, http.StatusInternalServerError, "Could not update repository.", nil)
		return
	}
	if newSlug != "" {
		w.Header().Set("Location", s.repoAPI(repo))
	}
	writeJSON(w, http.StatusOK, s.repoObj(repo, c.username()))
}

// updateRepoLocked applies changes (and a rename to newSlug, keeping the UUID) and emits
// repo:updated with the changed fields.
func (s *Server) updateRepoLocked(repo *repoRec, in repoInput, newSlug string, actor *userRec) error {
	before := *repo
	oldLinks := s.repoLinksMini(repo)
	applyRepoInput(repo, in)
	if newSlug != "" {
		lock := s.repoLock(repo.fullName())
		lock.Lock()
		err := os.Rename(s.gitDir(repo.Workspace, repo.Slug), s.gitDir(repo.Workspace, newSlug))
		lock.Unlock()
		if err != nil {
			s.log.Error("rename repository", "repository", repo.fullName(), "err", err)
			*repo = before
			return fmt.Errorf("rename repository: %w", err)
		}
		repo.Slug = newSlug
	}
	repo.UpdatedOn = time.Now().UTC()
	changes := obj{}
	diff := func(key string, old, new any) {
		if old != new {
			changes[key] = obj{"old": old, "new": new}
		}
	}
	diff("name", before.Name, repo.Name)
	diff("full_name", before.fullName(), repo.fullName())
	diff("description", before.Description, repo.Description)
	diff("website", before.Website, repo.Website)
	diff("language", before.Language, repo.Language)
	diff("is_private", before.IsPrivate, repo.IsPrivate)
	// A rename shows as name, full_name and links, like the recorded repo:updated (which has
	// no slug entry).
	if newSlug != "" {
		changes["links"] = obj{"old": oldLinks, "new": s.repoLinksMini(repo)}
	}
	_ = s.saveLocked()
	s.emit("repo:updated", repo, actor, obj{"changes": changes})
	return nil
}

// transferRepoLocked moves repo into workspace to, like an accepted Bitbucket transfer: the
// UUID, git data, pull requests and repository hooks stay, full_name and the workspace
// change, the project becomes the one with the same key in the new workspace or else its
// first. repo:transfer goes to the new workspace's hooks and the repository's own, with the
// old workspace as previous_owner; the old workspace's hooks hear nothing.
func (s *Server) transferRepoLocked(repo *repoRec, to *workspaceRec, actor *userRec) error {
	from := s.st.workspace(repo.Workspace)
	oldDir, newDir := s.gitDir(repo.Workspace, repo.Slug), s.gitDir(to.Slug, repo.Slug)
	lock := s.repoLock(repo.fullName())
	lock.Lock()
	err := os.MkdirAll(filepath.Dir(newDir), 0o755)
	if err == nil {
		err = os.Rename(oldDir, newDir)
	}
	lock.Unlock()
	if err != nil {
		s.log.Error("transfer repository", "repository", repo.fullName(), "to", to.Slug, "err", err)
		return fmt.Errorf("transfer repository: %w", err)
	}
	repo.Workspace = to.Slug
	if s.st.project(to, repo.ProjectKey) == nil && len(to.Projects) > 0 {
		repo.ProjectKey = to.Projects[0].Key
	}
	repo.UpdatedOn = time.Now().UTC()
	if err := s.saveLocked(); err != nil {
		return err
	}
	var previous any
	if from != nil {
		previous = s.ownerObj(from)
	}
	s.emit("repo:transfer", repo, actor, obj{"previous_owner": previous})
	return nil
}

func (s *Server) deleteRepository(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "repository:delete", false)
	if !ok {
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permAdmin)
	if !ok {
		return
	}
	if err := s.deleteRepoLocked(repo, c.user); err != nil {
		writeError(w, http.StatusInternalServerError, "Could not delete repository.", nil)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteRepoLocked(repo *repoRec, actor *userRec) error {
	// Build the event first: once deleted, the repository hooks are gone too.
	s.emit("repo:deleted", repo, actor, obj{})
	lock := s.repoLock(repo.fullName())
	lock.Lock()
	err := os.RemoveAll(s.gitDir(repo.Workspace, repo.Slug))
	lock.Unlock()
	if err != nil {
		s.log.Error("delete repository", "repository", repo.fullName(), "err", err)
		return fmt.Errorf("delete repository: %w", err)
	}
	s.st.Repositories = slices.DeleteFunc(s.st.Repositories, func(x *repoRec) bool { return x == repo })
	s.st.PullRequests = slices.DeleteFunc(s.st.PullRequests, func(p *prRec) bool { return p.RepoUUID == repo.UUID })
	s.st.Hooks = slices.DeleteFunc(s.st.Hooks, func(h *hookRec) bool { return h.SubjectUUID == repo.UUID })
	return s.saveLocked()
}

// readRefs lists refs with their target commits rendered.
func (s *Server) renderRefs(repo *repoRec, refs []gitRef) ([]any, error) {
	dir := s.gitDir(repo.Workspace, repo.Slug)
	var hashes []string
	seen := map[string]bool{}
	for _, ref := range refs {
		if !seen[ref.Hash] {
			seen[ref.Hash] = true
			hashes = append(hashes, ref.Hash)
		}
	}
	commits, err := readCommits(s.ctx, dir, hashes)
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(refs))
	for _, ref := range refs {
		c, ok := commits[ref.Hash]
		if !ok {
			continue
		}
		out = append(out, s.refObj(repo, ref, s.commitObj(repo, c)))
	}
	return out, nil
}

func refFields(ref gitRef) fieldGetter {
	return func(f string) (any, bool) {
		switch f {
		case "name":
			return ref.shortName(), true
		case "target.hash":
			return ref.Hash, true
		case "target.date":
			return ref.TaggerDate, true
		}
		return nil, false
	}
}

func (s *Server) listRefs(prefix string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.auth(w, r, "repository", true)
		if !ok {
			return
		}
		_, repo, ok := s.findRepo(w, r, c, permRead)
		if !ok {
			return
		}
		p, err := parsePage(r, defaultPagelen, maxPagelen)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), nil)
			return
		}
		refs, err := listRefs(s.ctx, s.gitDir(repo.Workspace, repo.Slug), prefix)
		if err != nil {
			s.log.Error("list refs", "repository", repo.fullName(), "err", err)
			writeError(w, http.StatusInternalServerError, "Could not read refs.", nil)
			return
		}
		if prefix == "refs/" {
			refs = slices.DeleteFunc(refs, func(ref gitRef) bool {
				return !strings.HasPrefix(ref.Name, "refs/heads/") && !strings.HasPrefix(ref.Name, "refs/tags/")
			})
		}
		refs, err = filterSort(refs, r.URL.Query().Get("q"), r.URL.Query().Get("sort"), refFields)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), nil)
			return
		}
		start := min((p.page-1)*p.pagelen, len(refs))
		end := min(start+p.pagelen, len(refs))
		values, err := s.renderRefs(repo, refs[start:end])
		if err != nil {
			s.log.Error("render refs", "repository", repo.fullName(), "err", err)
			writeError(w, http.StatusInternalServerError, "Could not read refs.", nil)
			return
		}
		env := obj{"pagelen": p.pagelen, "page": p.page, "size": len(refs), "values": values}
		if end < len(refs) {
			env["next"] = s.pageURL(r, p.page+1)
		}
		if p.page > 1 {
			env["previous"] = s.pageURL(r, p.page-1)
		}
		writeJSON(w, http.StatusOK, env)
	}
}

func (s *Server) getRef(prefix string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.auth(w, r, "repository", true)
		if !ok {
			return
		}
		_, repo, ok := s.findRepo(w, r, c, permRead)
		if !ok {
			return
		}
		name := r.PathValue("name")
		refs, err := listRefs(s.ctx, s.gitDir(repo.Workspace, repo.Slug), prefix+name)
		if err == nil {
			refs = slices.DeleteFunc(refs, func(ref gitRef) bool { return ref.Name != prefix+name })
		}
		if err != nil || len(refs) == 0 {
			kind := "Branch"
			if prefix == "refs/tags/" {
				kind = "Tag"
			}
			writeError(w, http.StatusNotFound, kind+" \""+name+"\" not found", nil)
			return
		}
		values, err := s.renderRefs(repo, refs)
		if err != nil || len(values) == 0 {
			writeError(w, http.StatusInternalServerError, "Could not read ref.", nil)
			return
		}
		writeJSON(w, http.StatusOK, values[0])
	}
}

// listCommits serves /commits[/{revision}] with include/exclude, newest first. Page size
// defaults to 30 like bitbucket.org; size is omitted (costly to compute, as upstream).
func (s *Server) listCommits(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "repository", true)
	if !ok {
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permRead)
	if !ok {
		return
	}
	p, err := parsePage(r, 30, maxPagelen)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	dir := s.gitDir(repo.Workspace, repo.Slug)
	q := r.URL.Query()
	var include, exclude []string
	if rev := r.PathValue("revision"); rev != "" {
		include = append(include, rev)
	}
	include = append(include, q["include"]...)
	exclude = append(exclude, q["exclude"]...)
	if len(include) == 0 {
		include = []string{"--branches", "--tags"}
	}
	for _, list := range [][]string{include, exclude} {
		for _, rev := range list {
			if strings.HasPrefix(rev, "--") && rev != "--branches" && rev != "--tags" {
				writeError(w, http.StatusBadRequest, "Invalid revision", nil)
				return
			}
			if !strings.HasPrefix(rev, "--") {
				if _, err := resolveCommit(s.ctx, dir, rev); err != nil {
					writeError(w, http.StatusNotFound, "Commit not found", nil)
					return
				}
			}
		}
	}
	if headBranch(dir) == "" {
		if refs, _ := listRefs(s.ctx, dir, "refs/heads/"); len(refs) == 0 {
			writeJSON(w, http.StatusOK, obj{"pagelen": p.pagelen, "page": p.page, "values": []any{}})
			return
		}
	}
	commits, err := logRange(s.ctx, dir, include, exclude, (p.page-1)*p.pagelen, p.pagelen+1)
	if err != nil {
		s.log.Error("list commits", "repository", repo.fullName(), "err", err)
		writeError(w, http.StatusInternalServerError, "Could not list commits.", nil)
		return
	}
	s.writeCommitPage(w, r, repo, commits, p)
}

func (s *Server) getCommit(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "repository", true)
	if !ok {
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permRead)
	if !ok {
		return
	}
	dir := s.gitDir(repo.Workspace, repo.Slug)
	hash, err := resolveCommit(s.ctx, dir, r.PathValue("hash"))
	if err != nil {
		writeError(w, http.StatusNotFound, "Commit not found", nil)
		return
	}
	commits, err := readCommits(s.ctx, dir, []string{hash})
	if err != nil || len(commits) == 0 {
		writeError(w, http.StatusNotFound, "Commit not found", nil)
		return
	}
	writeJSON(w, http.StatusOK, s.commitObj(repo, commits[hash]))
}

// getDiffstat: spec "A" compares A with its first parent; "A..B" compares A with the merge
// base of A and B (Bitbucket's default topic diff).
func (s *Server) getDiffstat(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "repository", true)
	if !ok {
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permRead)
	if !ok {
		return
	}
	p, err := parsePage(r, 500, 500)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	dir := s.gitDir(repo.Workspace, repo.Slug)
	spec := r.PathValue("spec")
	var base, head string
	if a, b, found := strings.Cut(spec, ".."); found {
		ha, errA := resolveCommit(s.ctx, dir, a)
		hb, errB := resolveCommit(s.ctx, dir, b)
		if errA != nil || errB != nil {
			writeError(w, http.StatusNotFound, "Commit not found", nil)
			return
		}
		mb, err := gitOutput(s.ctx, dir, "merge-base", ha, hb)
		base, head = strings.TrimSpace(mb), ha
		if err != nil || base == "" {
			base = hb
		}
	} else {
		h, err := resolveCommit(s.ctx, dir, spec)
		if err != nil {
			writeError(w, http.StatusNotFound, "Commit not found", nil)
			return
		}
		head = h
		if parent, err := resolveCommit(s.ctx, dir, h+"^"); err == nil {
			base = parent
		} else {
			base = emptyTree
		}
	}
	entries, err := diffStat(s.ctx, dir, base, head)
	if err != nil {
		s.log.Error("diffstat", "repository", repo.fullName(), "err", err)
		writeError(w, http.StatusInternalServerError, "Could not compute diffstat.", nil)
		return
	}
	file := func(rev, path string) any {
		if path == "" {
			return nil
		}
		return obj{"type": "commit_file", "path": path, "escaped_path": path,
			"links": obj{"self": href(s.repoAPI(repo) + "/src/" + rev + "/" + path)}}
	}
	writeJSON(w, http.StatusOK, pageEnvelope(s, r, p, entries, func(e diffEntry) any {
		return obj{"type": "diffstat", "status": e.Status, "lines_added": e.LinesAdded, "lines_removed": e.LinesRemoved,
			"old": file(base, e.OldPath), "new": file(head, e.NewPath)}
	}))
}

// ---- webhooks ----

var knownEvents = map[string]bool{}

func init() {
	for _, e := range []string{"repo:push", "repo:fork", "repo:updated", "repo:transfer", "repo:imported", "repo:created",
		"repo:deleted", "repo:commit_comment_created", "repo:commit_status_created", "repo:commit_status_updated",
		"pullrequest:created", "pullrequest:updated", "pullrequest:push", "pullrequest:approved", "pullrequest:unapproved",
		"pullrequest:changes_request_created", "pullrequest:changes_request_removed", "pullrequest:fulfilled",
		"pullrequest:rejected", "pullrequest:comment_created", "pullrequest:comment_updated", "pullrequest:comment_deleted",
		"pullrequest:comment_resolved", "pullrequest:comment_reopened", "issue:created", "issue:updated",
		"issue:comment_created", "project:updated", "pipeline:span_created"} {
		knownEvents[e] = true
	}
}

// eventScope is the scope a token needs to subscribe to an event.
func eventScope(event string) string {
	switch {
	case strings.HasPrefix(event, "repo:"):
		return "repository"
	case strings.HasPrefix(event, "pullrequest:"):
		return "pullrequest"
	case strings.HasPrefix(event, "issue:"):
		return "issue"
	case strings.HasPrefix(event, "project:"):
		return "project"
	case strings.HasPrefix(event, "pipeline:"):
		return "pipeline"
	}
	return ""
}

type hookInput struct {
	fields map[string]json.RawMessage
}

func (in hookInput) str(k string) (string, bool, error) {
	raw, ok := in.fields[k]
	if !ok || string(raw) == "null" {
		return "", ok, nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", true, fmt.Errorf("%s must be a string", k)
	}
	return v, true, nil
}

func (in hookInput) boolean(k string) (bool, bool, error) {
	raw, ok := in.fields[k]
	if !ok || string(raw) == "null" {
		return false, false, nil
	}
	var v bool
	if err := json.Unmarshal(raw, &v); err != nil {
		return false, true, fmt.Errorf("%s must be a boolean", k)
	}
	return v, true, nil
}

// applyHookInput validates and applies a create/update body. Secret: omitted keeps it,
// null or "" removes it; it is never returned.
func applyHookInput(h *hookRec, in hookInput, c *caller, creating bool) (int, string, any) {
	if v, ok, err := in.str("url"); err != nil {
		return http.StatusBadRequest, err.Error(), nil
	} else if ok {
		u, perr := url.Parse(v)
		if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return http.StatusBadRequest, "Invalid URL: " + v, nil
		}
		h.URL = v
	} else if creating {
		return http.StatusBadRequest, "url: This field is required.", nil
	}
	if v, ok, err := in.str("description"); err != nil {
		return http.StatusBadRequest, err.Error(), nil
	} else if ok {
		h.Description = v
	}
	if v, ok, err := in.boolean("active"); err != nil {
		return http.StatusBadRequest, err.Error(), nil
	} else if ok {
		h.Active = v
	}
	if v, ok, err := in.boolean("skip_cert_verification"); err != nil {
		return http.StatusBadRequest, err.Error(), nil
	} else if ok {
		h.SkipCertVerification = v
	}
	if v, ok, err := in.str("secret"); err != nil {
		return http.StatusBadRequest, err.Error(), nil
	} else if ok {
		if len(v) > 128 {
			return http.StatusBadRequest, "secret: Ensure this field has no more than 128 characters.", nil
		}
		h.Secret = v
	}
	if raw, ok := in.fields["events"]; ok {
		var events []string
		if err := json.Unmarshal(raw, &events); err != nil {
			return http.StatusBadRequest, "events must be a list of strings", nil
		}
		h.Events = events
	}
	if len(h.Events) == 0 {
		return http.StatusBadRequest, "events: This field is required.", nil
	}
	var missing []string
	for _, e := range h.Events {
		if !knownEvents[e] {
			return http.StatusBadRequest, "Invalid event: " + e, nil
		}
		if sc := eventScope(e); sc != "" && !c.has(sc) && !slices.Contains(missing, sc) {
			missing = append(missing, sc)
		}
	}
	if len(missing) > 0 {
		return http.StatusForbidden, "scope", missing
	}
	return 0, "", nil
}

func decodeHookInput(r *http.Request) (hookInput, error) {
	in := hookInput{fields: map[string]json.RawMessage{}}
	if err := decodeJSON(r, &in.fields); err != nil {
		return in, err
	}
	return in, nil
}

func (s *Server) writeHookProblem(w http.ResponseWriter, c *caller, status int, msg string, missing any) {
	if status == http.StatusForbidden && msg == "scope" {
		writeScopeError(w, c.granted, append([]string{"webhook"}, missing.([]string)...))
		return
	}
	writeError(w, status, msg, nil)
}

func (s *Server) workspaceForHooks(w http.ResponseWriter, r *http.Request, c *caller) (*workspaceRec, bool) {
	ws := s.st.workspace(r.PathValue("workspace"))
	if ws == nil {
		writeError(w, http.StatusNotFound, "No workspace with identifier '"+r.PathValue("workspace")+"'.", nil)
		return nil, false
	}
	if !isAdminRole(s.st.role(ws, c.username())) {
		writeError(w, http.StatusForbidden, "You must be an administrator of this workspace to manage its webhooks.", nil)
		return nil, false
	}
	return ws, true
}

func (s *Server) hooksOf(subjectUUID string) []*hookRec {
	var out []*hookRec
	for _, h := range s.st.Hooks {
		if h.SubjectUUID == subjectUUID {
			out = append(out, h)
		}
	}
	return out
}

func (s *Server) listWorkspaceHooks(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "webhook", false)
	if !ok {
		return
	}
	ws, ok := s.workspaceForHooks(w, r, c)
	if !ok {
		return
	}
	s.writeHookList(w, r, s.hooksOf(ws.UUID))
}

func (s *Server) listRepoHooks(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "webhook", false)
	if !ok {
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permAdmin)
	if !ok {
		return
	}
	s.writeHookList(w, r, s.hooksOf(repo.UUID))
}

func (s *Server) writeHookList(w http.ResponseWriter, r *http.Request, hooks []*hookRec) {
	p, err := parsePage(r, defaultPagelen, maxPagelen)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, pageEnvelope(s, r, p, hooks, func(h *hookRec) any { return s.hookObj(h) }))
}

func (s *Server) createHook(w http.ResponseWriter, r *http.Request, c *caller, subjectType, subjectUUID string) {
	in, err := decodeHookInput(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	h := &hookRec{UUID: newUUID(), SubjectType: subjectType, SubjectUUID: subjectUUID, Active: true, CreatedAt: time.Now().UTC()}
	if status, msg, missing := applyHookInput(h, in, c, true); status != 0 {
		s.writeHookProblem(w, c, status, msg, missing)
		return
	}
	s.st.Hooks = append(s.st.Hooks, h)
	if err := s.saveLocked(); err != nil {
		writeError(w, http.StatusInternalServerError, "Could not save webhook.", nil)
		return
	}
	s.log.Info("webhook created", "hook", h.UUID, "subject_type", subjectType, "events", len(h.Events))
	writeJSON(w, http.StatusCreated, s.hookObj(h))
}

func (s *Server) createWorkspaceHook(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "webhook", false)
	if !ok {
		return
	}
	ws, ok := s.workspaceForHooks(w, r, c)
	if !ok {
		return
	}
	s.createHook(w, r, c, "workspace", ws.UUID)
}

func (s *Server) createRepoHook(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "webhook", false)
	if !ok {
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permAdmin)
	if !ok {
		return
	}
	s.createHook(w, r, c, "repository", repo.UUID)
}

func (s *Server) oneHook(w http.ResponseWriter, r *http.Request, c *caller, subjectUUID string) {
	h := s.st.hook(r.PathValue("uid"))
	if h == nil || h.SubjectUUID != subjectUUID {
		writeError(w, http.StatusNotFound, "Webhook not found", nil)
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.hookObj(h))
	case http.MethodPut:
		in, err := decodeHookInput(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), nil)
			return
		}
		updated := *h
		if status, msg, missing := applyHookInput(&updated, in, c, false); status != 0 {
			s.writeHookProblem(w, c, status, msg, missing)
			return
		}
		*h = updated
		_ = s.saveLocked()
		writeJSON(w, http.StatusOK, s.hookObj(h))
	case http.MethodDelete:
		s.st.Hooks = slices.DeleteFunc(s.st.Hooks, func(x *hookRec) bool { return x == h })
		_ = s.saveLocked()
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) workspaceHook(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "webhook", false)
	if !ok {
		return
	}
	ws, ok := s.workspaceForHooks(w, r, c)
	if !ok {
		return
	}
	s.oneHook(w, r, c, ws.UUID)
}

func (s *Server) repoHook(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "webhook", false)
	if !ok {
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permAdmin)
	if !ok {
		return
	}
	s.oneHook(w, r, c, repo.UUID)
}
