package emulator

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The render functions build payloads in the shapes recorded in shared/reference/fixtures.
// Callers hold s.mu.

func href(u string) obj { return obj{"href": u} }

func escUUID(u string) string { return url.PathEscape(u) }

func rendered(raw string) obj {
	return obj{"raw": raw, "markup": "markdown", "html": markdownHTML(raw), "type": "rendered"}
}

// markdownHTML is deliberately simple: paragraphs only, escaped. Clients treat html as opaque.
func markdownHTML(raw string) string {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return ""
	}
	var parts []string
	for _, p := range strings.Split(raw, "\n\n") {
		parts = append(parts, "<p>"+strings.ReplaceAll(html.EscapeString(strings.TrimSpace(p)), "\n", "<br>")+"</p>")
	}
	return strings.Join(parts, "\n")
}

func (s *Server) userLinks(u *userRec) obj {
	return obj{
		"self":   href(s.apiBase() + "/users/" + escUUID(u.UUID)),
		"html":   href(s.base + "/" + escUUID(u.UUID) + "/"),
		"avatar": href(s.base + "/account/" + u.Username + "/avatar/32/"),
	}
}

// accountObj is the embedded user object (authors, actors, commenters).
func (s *Server) accountObj(u *userRec) any {
	if u == nil {
		return nil
	}
	return obj{
		"type":         "user",
		"uuid":         u.UUID,
		"account_id":   u.AccountID,
		"display_name": u.DisplayName,
		"nickname":     u.Username,
		"username":     u.Username,
		"links":        s.userLinks(u),
	}
}

func (s *Server) accountByName(name string) any { return s.accountObj(s.st.user(name)) }

// userObj is the full GET /2.0/user object.
func (s *Server) userObj(u *userRec) obj {
	links := s.userLinks(u)
	links["hooks"] = href(s.apiBase() + "/users/" + escUUID(u.UUID) + "/hooks")
	links["repositories"] = href(s.apiBase() + "/repositories/" + u.Username)
	links["followers"] = href(s.apiBase() + "/users/" + escUUID(u.UUID) + "/followers")
	links["following"] = href(s.apiBase() + "/users/" + escUUID(u.UUID) + "/following")
	links["snippets"] = href(s.apiBase() + "/snippets/" + escUUID(u.UUID))
	return obj{
		"type":            "user",
		"uuid":            u.UUID,
		"account_id":      u.AccountID,
		"display_name":    u.DisplayName,
		"nickname":        u.Username,
		"username":        u.Username,
		"website":         nil,
		"location":        nil,
		"is_staff":        false,
		"account_status":  "active",
		"has_2fa_enabled": nil,
		"created_on":      stamp(u.CreatedOn),
		"links":           links,
	}
}

func (s *Server) workspaceLinksBase(ws *workspaceRec) obj {
	return obj{
		"self":   href(s.apiBase() + "/workspaces/" + ws.Slug),
		"html":   href(s.base + "/" + ws.Slug + "/"),
		"avatar": href(s.base + "/workspaces/" + ws.Slug + "/avatar/?ts=0"),
	}
}

func (s *Server) workspaceObj(ws *workspaceRec) obj {
	links := s.workspaceLinksBase(ws)
	links["owners"] = href(s.apiBase() + "/workspaces/" + ws.Slug + "/members?q=permission%3D%22owner%22")
	links["hooks"] = href(s.apiBase() + "/workspaces/" + ws.Slug + "/hooks")
	links["repositories"] = href(s.apiBase() + "/repositories/" + ws.Slug)
	links["members"] = href(s.apiBase() + "/workspaces/" + ws.Slug + "/members")
	links["projects"] = href(s.apiBase() + "/workspaces/" + ws.Slug + "/projects")
	links["snippets"] = href(s.apiBase() + "/snippets/" + ws.Slug)
	return obj{
		"type":                "workspace",
		"uuid":                ws.UUID,
		"slug":                ws.Slug,
		"name":                ws.Name,
		"is_private":          ws.IsPrivate,
		"is_privacy_enforced": false,
		"forking_mode":        "allow_forks",
		"created_on":          stamp(ws.CreatedOn),
		"updated_on":          stamp(ws.CreatedOn),
		"links":               links,
	}
}

// workspaceMini is the workspace as embedded in repositories.
func (s *Server) workspaceMini(ws *workspaceRec) obj {
	return obj{"type": "workspace", "uuid": ws.UUID, "slug": ws.Slug, "name": ws.Name, "links": s.workspaceLinksBase(ws)}
}

// ownerObj: repositories belong to workspaces; the legacy owner field shows the workspace
// as a team account.
func (s *Server) ownerObj(ws *workspaceRec) obj {
	return obj{
		"type":         "team",
		"uuid":         ws.UUID,
		"username":     ws.Slug,
		"display_name": ws.Name,
		"nickname":     ws.Slug,
		"account_id":   "",
		"links": obj{
			"self":   href(s.apiBase() + "/workspaces/" + ws.Slug),
			"html":   href(s.base + "/" + ws.Slug + "/"),
			"avatar": href(s.base + "/account/" + ws.Slug + "/avatar/32/"),
		},
	}
}

func (s *Server) projectObj(ws *workspaceRec, key string) any {
	p := s.st.project(ws, key)
	if p == nil {
		return nil
	}
	return obj{
		"type": "project", "key": p.Key, "uuid": p.UUID, "name": p.Name,
		"links": obj{
			"self":   href(s.apiBase() + "/workspaces/" + ws.Slug + "/projects/" + p.Key),
			"html":   href(s.base + "/" + ws.Slug + "/workspace/projects/" + p.Key),
			"avatar": href(s.base + "/" + ws.Slug + "/workspace/projects/" + p.Key + "/avatar/32"),
		},
	}
}

func (s *Server) repoAPI(r *repoRec) string  { return s.apiBase() + "/repositories/" + r.fullName() }
func (s *Server) repoHTML(r *repoRec) string { return s.base + "/" + r.fullName() }

func (s *Server) repoLinksMini(r *repoRec) obj {
	return obj{
		"self":   href(s.repoAPI(r)),
		"html":   href(s.repoHTML(r)),
		"avatar": href(s.base + "/ravatar/" + escUUID(r.UUID) + "?ts=default"),
	}
}

// repoMini is the repository stub embedded in commits, PRs and hooks.
func (s *Server) repoMini(r *repoRec) obj {
	return obj{"type": "repository", "uuid": r.UUID, "name": r.Name, "full_name": r.fullName(), "links": s.repoLinksMini(r)}
}

// repoWebhook is the abbreviated repository of webhook payloads: no mainbranch, size or
// clone links; parent, workspace and project as in current deliveries (parent is null: the
// emulator has no forks).
func (s *Server) repoWebhook(r *repoRec) obj {
	ws := s.st.workspace(r.Workspace)
	o := s.repoMini(r)
	o["scm"] = "git"
	o["is_private"] = r.IsPrivate
	o["website"] = r.Website
	o["parent"] = nil
	if ws != nil {
		o["owner"] = s.ownerObj(ws)
		o["workspace"] = s.workspaceMini(ws)
		o["project"] = s.projectObj(ws, r.ProjectKey)
	}
	return o
}

// repoObj is the full repository; cloneUser is embedded in the https clone link like
// bitbucket.org does with the caller's name.
func (s *Server) repoObj(r *repoRec, cloneUser string) obj {
	ws := s.st.workspace(r.Workspace)
	links := s.repoLinksMini(r)
	api := s.repoAPI(r)
	for _, k := range []string{"pullrequests", "commits", "forks", "watchers", "downloads", "hooks"} {
		links[k] = href(api + "/" + k)
	}
	links["branches"] = href(api + "/refs/branches")
	links["tags"] = href(api + "/refs/tags")
	links["source"] = href(api + "/src")
	host := strings.TrimPrefix(s.base, "http://")
	userPart := ""
	if cloneUser != "" {
		userPart = cloneUser + "@"
	}
	links["clone"] = []obj{
		{"name": "https", "href": "http://" + userPart + host + "/" + r.fullName() + ".git"},
		{"name": "ssh", "href": "git@" + strings.Split(host, ":")[0] + ":" + r.fullName() + ".git"},
	}
	dir := s.gitDir(r.Workspace, r.Slug)
	var mainbranch any
	if b := headBranch(dir); b != "" {
		mainbranch = obj{"type": "branch", "name": b}
	}
	o := obj{
		"type": "repository", "uuid": r.UUID, "name": r.Name, "slug": r.Slug, "full_name": r.fullName(),
		"description": r.Description, "scm": "git", "website": r.Website, "language": r.Language,
		"is_private": r.IsPrivate, "fork_policy": r.ForkPolicy, "has_issues": r.HasIssues, "has_wiki": r.HasWiki,
		"created_on": stamp(r.CreatedOn), "updated_on": stamp(r.UpdatedOn), "size": dirSize(dir),
		"mainbranch": mainbranch, "parent": nil, "enforced_signed_commits": nil,
		"override_settings": obj{"default_merge_strategy": false, "branching_model": false},
		"links":             links,
	}
	if ws != nil {
		o["owner"] = s.ownerObj(ws)
		o["workspace"] = s.workspaceMini(ws)
		o["project"] = s.projectObj(ws, r.ProjectKey)
	}
	return o
}

func (s *Server) commitLinks(r *repoRec, hash string) obj {
	api := s.repoAPI(r)
	return obj{
		"self":     href(api + "/commit/" + hash),
		"html":     href(s.repoHTML(r) + "/commits/" + hash),
		"comments": href(api + "/commit/" + hash + "/comments"),
		"patch":    href(api + "/patch/" + hash),
		"diff":     href(api + "/diff/" + hash),
		"approve":  href(api + "/commit/" + hash + "/approve"),
		"statuses": href(api + "/commit/" + hash + "/statuses"),
	}
}

func (s *Server) commitStub(r *repoRec, hash string) obj {
	return obj{"type": "commit", "hash": hash, "links": obj{
		"self": href(s.repoAPI(r) + "/commit/" + hash),
		"html": href(s.repoHTML(r) + "/commits/" + hash),
	}}
}

func (s *Server) authorObj(name, email string) obj {
	a := obj{"type": "author", "raw": fmt.Sprintf("%s <%s>", name, email)}
	if u := s.st.userByEmail(email); u != nil {
		a["user"] = s.accountObj(u)
	}
	return a
}

func gitDate(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05+00:00") }

func (s *Server) commitObj(r *repoRec, c gitCommit) obj {
	parents := []obj{}
	for _, p := range c.Parents {
		parents = append(parents, s.commitStub(r, p))
	}
	return obj{
		"type": "commit", "hash": c.Hash, "date": gitDate(c.Date), "message": c.Message,
		"summary": rendered(c.Message), "author": s.authorObj(c.AuthorName, c.AuthorEmail),
		"parents": parents, "repository": s.repoMini(r), "links": s.commitLinks(r, c.Hash),
		"participants": []obj{}, "rendered": obj{"message": rendered(c.Message)},
	}
}

func (s *Server) refObj(r *repoRec, ref gitRef, target obj) obj {
	name := ref.shortName()
	api := s.repoAPI(r)
	if strings.HasPrefix(ref.Name, "refs/tags/") {
		o := obj{"type": "tag", "name": name, "target": target, "message": nil, "date": nil, "tagger": nil,
			"links": obj{
				"self":    href(api + "/refs/tags/" + name),
				"commits": href(api + "/commits/" + name),
				"html":    href(s.repoHTML(r) + "/commits/tag/" + name),
			}}
		if ref.Annotated {
			o["message"] = ref.Message
			o["date"] = gitDate(ref.TaggerDate)
			o["tagger"] = s.authorObj(ref.TaggerName, ref.TaggerEmail)
		}
		return o
	}
	return obj{
		"type": "branch", "name": name, "target": target,
		"merge_strategies":       []string{"merge_commit", "squash", "fast_forward"},
		"default_merge_strategy": "merge_commit",
		"links": obj{
			"self":    href(api + "/refs/branches/" + name),
			"commits": href(api + "/commits/" + name),
			"html":    href(s.repoHTML(r) + "/branch/" + name),
		},
	}
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

func (s *Server) prLinks(r *repoRec, p *prRec) obj {
	base := s.repoAPI(r) + fmt.Sprintf("/pullrequests/%d", p.ID)
	spec := fmt.Sprintf("%s:%s%%0D%s?from_pullrequest_id=%d", r.fullName(), short(p.SourceCommit), short(p.DestCommit), p.ID)
	return obj{
		"self":            href(base),
		"html":            href(s.repoHTML(r) + fmt.Sprintf("/pull-requests/%d", p.ID)),
		"commits":         href(base + "/commits"),
		"approve":         href(base + "/approve"),
		"diff":            href(s.repoAPI(r) + "/diff/" + spec),
		"diffstat":        href(s.repoAPI(r) + "/diffstat/" + spec),
		"comments":        href(base + "/comments"),
		"activity":        href(base + "/activity"),
		"merge":           href(base + "/merge"),
		"decline":         href(base + "/decline"),
		"statuses":        href(base + "/statuses"),
		"request-changes": href(base + "/request-changes"),
	}
}

func (s *Server) prStub(r *repoRec, p *prRec) obj {
	base := s.repoAPI(r) + fmt.Sprintf("/pullrequests/%d", p.ID)
	return obj{"type": "pullrequest", "id": p.ID, "title": p.Title, "links": obj{
		"self": href(base),
		"html": href(s.repoHTML(r) + fmt.Sprintf("/pull-requests/%d", p.ID)),
	}}
}

// prEndpoint is a PR's source or destination. The newest recording
// (rest/pullrequests_page_5_open.json) shows an empty links object on the source branch only.
func (s *Server) prEndpoint(r *repoRec, branch, commit string, branchLinks bool) obj {
	b := obj{"name": branch}
	if branchLinks {
		b["links"] = obj{}
	}
	return obj{
		"branch":     b,
		"commit":     s.commitStub(r, short(commit)),
		"repository": s.prRepo(r),
	}
}

// prRepo is the repository stub of PR source/destination, which webhooks show with scm and
// is_private too (Atlassian's documentation example does; recordings show only the mini
// repository, a subset).
func (s *Server) prRepo(r *repoRec) obj {
	o := s.repoMini(r)
	o["scm"] = "git"
	o["is_private"] = r.IsPrivate
	return o
}

// prObj renders a full pull request (GET .../pullrequests/{id}, webhooks); hashes are
// 12-character abbreviations like the real API, in full objects and list entries alike
// (rest/pullrequest.json, rest/pullrequests_page*.json).
func (s *Server) prObj(r *repoRec, p *prRec) obj {
	o := s.prListObj(r, p)
	reviewers := []any{}
	participants := []any{}
	for _, name := range p.Reviewers {
		reviewers = append(reviewers, s.accountByName(name))
	}
	order, states := p.reviewState()
	for _, name := range order {
		a := states[name]
		role := "PARTICIPANT"
		if slices.Contains(p.Reviewers, name) {
			role = "REVIEWER"
		}
		state := "approved"
		if a.Kind == "changes_request" {
			state = "changes_requested"
		}
		participants = append(participants, obj{"type": "participant", "user": s.accountByName(name),
			"role": role, "approved": state == "approved", "state": state, "participated_on": stamp(a.Date)})
	}
	o["reviewers"], o["participants"] = reviewers, participants
	return o
}

// prListObj is a pull request as the list endpoint shows it: the recordings of
// GET .../pullrequests carry neither reviewers nor participants.
func (s *Server) prListObj(r *repoRec, p *prRec) obj {
	var merge, closedBy any
	if p.MergeCommit != "" {
		// As recorded (webhooks/pullrequest_fulfilled.json): hash and a self link only.
		merge = obj{"hash": short(p.MergeCommit), "links": obj{"self": href(s.repoAPI(r) + "/commit/" + short(p.MergeCommit))}}
	}
	if p.ClosedBy != "" {
		closedBy = s.accountByName(p.ClosedBy)
	}
	return obj{
		"type": "pullrequest", "id": p.ID, "title": p.Title, "description": p.Description,
		"summary":  rendered(p.Description),
		"rendered": obj{"title": rendered(p.Title), "description": rendered(p.Description)},
		"state":    p.State, "draft": p.Draft, "queued": false,
		"author":       s.accountByName(p.Author),
		"source":       s.prEndpoint(r, p.SourceBranch, p.SourceCommit, true),
		"destination":  s.prEndpoint(r, p.DestBranch, p.DestCommit, false),
		"merge_commit": merge, "close_source_branch": p.CloseSourceBranch, "closed_by": closedBy,
		"reason": p.Reason, "created_on": stamp(p.CreatedOn), "updated_on": stamp(p.UpdatedOn),
		"comment_count": p.liveCommentCount(), "task_count": p.openTaskCount(),
		"links": s.prLinks(r, p),
	}
}

func (s *Server) commentObj(r *repoRec, p *prRec, c *commentRec) obj {
	base := s.repoAPI(r) + fmt.Sprintf("/pullrequests/%d/comments/%d", p.ID, c.ID)
	o := obj{
		"type": "pullrequest_comment", "id": c.ID, "created_on": stamp(c.CreatedOn), "updated_on": stamp(c.UpdatedOn),
		"content": rendered(c.Raw), "user": s.accountByName(c.User), "deleted": c.Deleted, "pending": false,
		"pullrequest": s.prStub(r, p),
		"links": obj{
			"self": href(base),
			"html": href(s.repoHTML(r) + fmt.Sprintf("/pull-requests/%d/_/diff#comment-%d", p.ID, c.ID)),
		},
	}
	if c.Deleted {
		o["content"] = rendered("")
	}
	if c.ParentID != 0 {
		o["parent"] = obj{"id": c.ParentID, "links": obj{"self": href(s.repoAPI(r) + fmt.Sprintf("/pullrequests/%d/comments/%d", p.ID, c.ParentID))}}
	}
	if c.InlinePath != "" {
		o["inline"] = obj{"path": c.InlinePath, "from": lineOrNull(c.InlineFrom), "to": lineOrNull(c.InlineTo),
			"outdated": false, "context_lines": ""}
	}
	if c.Pending {
		o["pending"] = true
	}
	if c.ResolvedBy != "" {
		o["resolution"] = s.resolutionObj(c)
	}
	return o
}

// lineOrNull renders an inline anchor line; 0 means "not on that side" (null).
func lineOrNull(n int) any {
	if n <= 0 {
		return nil
	}
	return n
}

// resolutionObj follows Atlassian's comment_resolution schema (no recording exists).
func (s *Server) resolutionObj(c *commentRec) obj {
	return obj{"type": "comment_resolution", "user": s.accountByName(c.ResolvedBy), "created_on": stamp(c.ResolvedOn)}
}

// taskObj follows Atlassian's pullrequest_comment_task schema (no recording exists):
// resolved_on/resolved_by only on resolved tasks, comment only on comment-anchored ones.
func (s *Server) taskObj(r *repoRec, p *prRec, t *taskRec) obj {
	base := s.repoAPI(r) + fmt.Sprintf("/pullrequests/%d/tasks/%d", p.ID, t.ID)
	o := obj{
		"type": "task", "id": t.ID, "created_on": stamp(t.CreatedOn), "updated_on": stamp(t.UpdatedOn),
		"state": t.State, "content": obj{"raw": t.Raw, "markup": "markdown", "html": markdownHTML(t.Raw), "type": "rendered"},
		"creator": s.accountByName(t.Creator), "pending": t.Pending,
		"links": obj{
			"self": href(base),
			"html": href(s.repoHTML(r) + fmt.Sprintf("/pull-requests/%d", p.ID)),
		},
	}
	if t.State == "RESOLVED" {
		o["resolved_on"] = stamp(t.ResolvedOn)
		o["resolved_by"] = s.accountByName(t.ResolvedBy)
	}
	if t.CommentID != 0 {
		o["comment"] = obj{"type": "pullrequest_comment", "id": t.CommentID, "links": obj{
			"self": href(s.repoAPI(r) + fmt.Sprintf("/pullrequests/%d/comments/%d", p.ID, t.CommentID)),
			"html": href(s.repoHTML(r) + fmt.Sprintf("/pull-requests/%d/_/diff#comment-%d", p.ID, t.CommentID)),
		}}
	}
	return o
}

func (s *Server) hookObj(h *hookRec) obj {
	var subject any
	var self string
	if h.SubjectType == "workspace" {
		if ws := s.st.workspaceByUUID(h.SubjectUUID); ws != nil {
			subject = s.workspaceMini(ws)
			self = s.apiBase() + "/workspaces/" + ws.Slug + "/hooks/" + escUUID(h.UUID)
		}
	} else if r := s.st.repoByUUID(h.SubjectUUID); r != nil {
		subject = s.repoMini(r)
		self = s.repoAPI(r) + "/hooks/" + escUUID(h.UUID)
	}
	return obj{
		"type": "webhook_subscription", "uuid": h.UUID, "url": h.URL, "description": h.Description,
		"subject_type": h.SubjectType, "subject": subject, "active": h.Active, "events": h.Events,
		"created_at": h.CreatedAt.UTC().Format(time.RFC3339Nano), "secret_set": h.Secret != "",
		"skip_cert_verification": h.SkipCertVerification, "read_only": false, "history_enabled": false,
		"source": nil, "links": obj{"self": href(self)},
	}
}

// writeCommitPage answers one page of commits; commits holds up to pagelen+1 entries, the
// extra one telling that a next page exists.
func (s *Server) writeCommitPage(w http.ResponseWriter, r *http.Request, repo *repoRec, commits []gitCommit, p pageReq) {
	values := []any{}
	for i, cm := range commits {
		if i == p.pagelen {
			break
		}
		values = append(values, s.commitObj(repo, cm))
	}
	env := obj{"pagelen": p.pagelen, "page": p.page, "values": values}
	if len(commits) > p.pagelen {
		env["next"] = s.pageURL(r, p.page+1)
	}
	writeJSON(w, http.StatusOK, env)
}
