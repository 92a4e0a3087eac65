package emulator

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

func (s *Server) registerPullRequests(mux *http.ServeMux) {
	base := "/2.0/repositories/{workspace}/{repo}/pullrequests"
	s.handle(mux, "GET "+base, s.listPullRequests)
	s.handle(mux, "POST "+base, s.createPullRequest)
	s.handle(mux, "GET "+base+"/{id}", s.getPullRequest)
	s.handle(mux, "PUT "+base+"/{id}", s.updatePullRequest)
	s.handle(mux, "POST "+base+"/{id}/merge", s.mergePullRequest)
	s.handle(mux, "POST "+base+"/{id}/decline", s.declinePullRequest)
	s.handle(mux, "GET "+base+"/{id}/comments", s.listComments)
	s.handle(mux, "POST "+base+"/{id}/comments", s.createComment)
	s.handle(mux, "GET "+base+"/{id}/comments/{cid}", s.oneComment)
	s.handle(mux, "PUT "+base+"/{id}/comments/{cid}", s.oneComment)
	s.handle(mux, "DELETE "+base+"/{id}/comments/{cid}", s.oneComment)
	s.handle(mux, "POST "+base+"/{id}/comments/{cid}/resolve", s.resolveComment)
	s.handle(mux, "DELETE "+base+"/{id}/comments/{cid}/resolve", s.resolveComment)
	s.handle(mux, "GET "+base+"/{id}/tasks", s.listTasks)
	s.handle(mux, "POST "+base+"/{id}/tasks", s.createTask)
	s.handle(mux, "GET "+base+"/{id}/tasks/{tid}", s.oneTask)
	s.handle(mux, "PUT "+base+"/{id}/tasks/{tid}", s.oneTask)
	s.handle(mux, "DELETE "+base+"/{id}/tasks/{tid}", s.oneTask)
	s.handle(mux, "POST "+base+"/{id}/approve", s.reviewPullRequest("approval"))
	s.handle(mux, "DELETE "+base+"/{id}/approve", s.reviewPullRequest("unapproval"))
	s.handle(mux, "POST "+base+"/{id}/request-changes", s.reviewPullRequest("changes_request"))
	s.handle(mux, "DELETE "+base+"/{id}/request-changes", s.reviewPullRequest("changes_request_removed"))
	s.handle(mux, "GET "+base+"/{id}/activity", s.listActivity)
	s.handle(mux, "GET "+base+"/{id}/commits", s.listPRCommits)
	s.handle(mux, "GET "+base+"/{id}/diffstat", s.prDiffstat)
}

func prFields(p *prRec) fieldGetter {
	return func(f string) (any, bool) {
		switch f {
		case "id":
			return p.ID, true
		case "title":
			return p.Title, true
		case "description":
			return p.Description, true
		case "state":
			return p.State, true
		case "draft":
			return p.Draft, true
		case "created_on":
			return p.CreatedOn, true
		case "updated_on":
			return p.UpdatedOn, true
		case "author.nickname", "author.username":
			return p.Author, true
		case "comment_count":
			return p.liveCommentCount(), true
		case "task_count":
			return p.openTaskCount(), true
		case "source.branch.name":
			return p.SourceBranch, true
		case "destination.branch.name":
			return p.DestBranch, true
		}
		return nil, false
	}
}

// listPullRequests: only OPEN by default; repeated state= widens; a q that filters on
// state replaces the default.
func (s *Server) listPullRequests(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "pullrequest", true)
	if !ok {
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permRead)
	if !ok {
		return
	}
	p, err := parsePage(r, defaultPagelen, maxPRPagelen)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	q := r.URL.Query()
	states := map[string]bool{}
	for _, st := range q["state"] {
		states[strings.ToUpper(st)] = true
	}
	if len(states) == 0 && !strings.Contains(q.Get("q"), "state") {
		states["OPEN"] = true
	}
	var prs []*prRec
	for _, pr := range s.st.pullRequestsOf(repo.UUID) {
		if len(states) == 0 || states[pr.State] {
			prs = append(prs, pr)
		}
	}
	sortBy := q.Get("sort")
	if sortBy == "" {
		sort.Slice(prs, func(i, j int) bool { return prs[i].ID > prs[j].ID })
	}
	prs, err = filterSort(prs, q.Get("q"), sortBy, prFields)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, pageEnvelope(s, r, p, prs, func(pr *prRec) any { return s.prListObj(repo, pr) }))
}

func (s *Server) findPR(w http.ResponseWriter, r *http.Request, c *caller, need permission) (*repoRec, *prRec, bool) {
	_, repo, ok := s.findRepo(w, r, c, need)
	if !ok {
		return nil, nil, false
	}
	id, err := strconv.Atoi(r.PathValue("id"))
	pr := s.st.pullRequest(repo.UUID, id)
	if err != nil || pr == nil {
		writeError(w, http.StatusNotFound, "Pull request not found", nil)
		return nil, nil, false
	}
	return repo, pr, true
}

// authPR authenticates the caller with scope (anonymousOK as for auth) and finds the pull
// request of the path.
func (s *Server) authPR(w http.ResponseWriter, r *http.Request, scope string, anonymousOK bool, need permission) (*caller, *repoRec, *prRec, bool) {
	c, ok := s.auth(w, r, scope, anonymousOK)
	if !ok {
		return nil, nil, nil, false
	}
	repo, pr, ok := s.findPR(w, r, c, need)
	return c, repo, pr, ok
}

func (s *Server) getPullRequest(w http.ResponseWriter, r *http.Request) {
	_, repo, pr, ok := s.authPR(w, r, "pullrequest", true, permRead)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.prObj(repo, pr))
}

type prInput struct {
	Title       *string `json:"title"`
	Description *string `json:"description"`
	Source      *struct {
		Branch struct {
			Name string `json:"name"`
		} `json:"branch"`
	} `json:"source"`
	Destination *struct {
		Branch struct {
			Name string `json:"name"`
		} `json:"branch"`
	} `json:"destination"`
	CloseSourceBranch *bool `json:"close_source_branch"`
	Draft             *bool `json:"draft"`
	Reviewers         []struct {
		UUID string `json:"uuid"`
	} `json:"reviewers"`
	Message string `json:"message"`
}

func (s *Server) createPullRequest(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auth(w, r, "pullrequest:write", false)
	if !ok {
		return
	}
	_, repo, ok := s.findRepo(w, r, c, permRead)
	if !ok {
		return
	}
	var in prInput
	if err := decodeJSON(r, &in); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	pr, status, msg := s.createPRLocked(repo, c.user, in)
	if pr == nil {
		writeError(w, status, msg, nil)
		return
	}
	writeJSON(w, http.StatusCreated, s.prObj(repo, pr))
}

func (s *Server) createPRLocked(repo *repoRec, author *userRec, in prInput) (*prRec, int, string) {
	if in.Title == nil || *in.Title == "" {
		return nil, http.StatusBadRequest, "title: This field is required."
	}
	if in.Source == nil || in.Source.Branch.Name == "" {
		return nil, http.StatusBadRequest, "source: This field is required."
	}
	dir := s.gitDir(repo.Workspace, repo.Slug)
	dest := headBranch(dir)
	if in.Destination != nil && in.Destination.Branch.Name != "" {
		dest = in.Destination.Branch.Name
	}
	src, err := resolveCommit(s.ctx, dir, "refs/heads/"+in.Source.Branch.Name)
	if err != nil {
		return nil, http.StatusBadRequest, "source: Branch " + in.Source.Branch.Name + " not found"
	}
	dst, err := resolveCommit(s.ctx, dir, "refs/heads/"+dest)
	if err != nil || dest == "" {
		return nil, http.StatusBadRequest, "destination: Branch " + dest + " not found"
	}
	if in.Source.Branch.Name == dest {
		return nil, http.StatusBadRequest, "There are no changes to be pulled"
	}
	now := time.Now().UTC()
	pr := &prRec{RepoUUID: repo.UUID, ID: repo.NextPRID, Title: *in.Title, State: "OPEN", Author: author.Username,
		SourceBranch: in.Source.Branch.Name, SourceCommit: src, DestBranch: dest, DestCommit: dst,
		CreatedOn: now, UpdatedOn: now}
	if in.Description != nil {
		pr.Description = *in.Description
	}
	if in.CloseSourceBranch != nil {
		pr.CloseSourceBranch = *in.CloseSourceBranch
	}
	if in.Draft != nil {
		pr.Draft = *in.Draft
	}
	for _, rv := range in.Reviewers {
		if u := s.st.user(rv.UUID); u != nil {
			pr.Reviewers = append(pr.Reviewers, u.Username)
		}
	}
	repo.NextPRID++
	pr.Activity = append(pr.Activity, activityRec{Kind: "update", Date: now, User: author.Username, State: "OPEN",
		Title: pr.Title, Description: pr.Description, SourceCommit: src, DestCommit: dst})
	s.st.PullRequests = append(s.st.PullRequests, pr)
	_ = s.saveLocked()
	s.emit("pullrequest:created", repo, author, obj{"pullrequest": s.prObj(repo, pr)})
	return pr, 0, ""
}

func (s *Server) updatePullRequest(w http.ResponseWriter, r *http.Request) {
	c, repo, pr, ok := s.authPR(w, r, "pullrequest:write", false, permRead)
	if !ok {
		return
	}
	var in prInput
	if err := decodeJSON(r, &in); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if pr.State != "OPEN" {
		writeError(w, http.StatusBadRequest, "Only open pull requests can be updated", nil)
		return
	}
	s.updatePRLocked(repo, pr, c.user, in)
	writeJSON(w, http.StatusOK, s.prObj(repo, pr))
}

func (s *Server) updatePRLocked(repo *repoRec, pr *prRec, actor *userRec, in prInput) {
	if in.Title != nil {
		pr.Title = *in.Title
	}
	if in.Description != nil {
		pr.Description = *in.Description
	}
	if in.Destination != nil && in.Destination.Branch.Name != "" {
		if dst, err := resolveCommit(s.ctx, s.gitDir(repo.Workspace, repo.Slug), "refs/heads/"+in.Destination.Branch.Name); err == nil {
			pr.DestBranch, pr.DestCommit = in.Destination.Branch.Name, dst
		}
	}
	if in.Draft != nil {
		pr.Draft = *in.Draft
	}
	if in.Reviewers != nil {
		pr.Reviewers = nil
		for _, rv := range in.Reviewers {
			if u := s.st.user(rv.UUID); u != nil {
				pr.Reviewers = append(pr.Reviewers, u.Username)
			}
		}
	}
	s.touchPR(repo, pr, actor, "pullrequest:updated")
}

// touchPR records an update activity, saves and emits the event.
func (s *Server) touchPR(repo *repoRec, pr *prRec, actor *userRec, event string) {
	now := time.Now().UTC()
	pr.UpdatedOn = now
	name := ""
	if actor != nil {
		name = actor.Username
	}
	pr.Activity = append(pr.Activity, activityRec{Kind: "update", Date: now, User: name, State: pr.State,
		Title: pr.Title, Description: pr.Description, SourceCommit: pr.SourceCommit, DestCommit: pr.DestCommit})
	_ = s.saveLocked()
	s.emit(event, repo, actor, obj{"pullrequest": s.prObj(repo, pr)})
}

func (s *Server) mergePullRequest(w http.ResponseWriter, r *http.Request) {
	c, repo, pr, ok := s.authPR(w, r, "pullrequest:write", false, permWrite)
	if !ok {
		return
	}
	var in prInput
	if r.ContentLength > 0 {
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), nil)
			return
		}
	}
	if status, msg := s.mergePRLocked(repo, pr, c.user, in.Message); status != 0 {
		writeError(w, status, msg, nil)
		return
	}
	writeJSON(w, http.StatusOK, s.prObj(repo, pr))
}

// mergePRLocked creates a real merge commit on the destination branch, then emits
// repo:push and pullrequest:fulfilled.
func (s *Server) mergePRLocked(repo *repoRec, pr *prRec, actor *userRec, message string) (int, string) {
	if pr.State != "OPEN" {
		return http.StatusBadRequest, "The pull request is not open"
	}
	dir := s.gitDir(repo.Workspace, repo.Slug)
	lock := s.repoLock(repo.fullName())
	lock.Lock()
	before, err := refMap(s.ctx, dir)
	if err != nil {
		lock.Unlock()
		return http.StatusInternalServerError, "Could not read refs"
	}
	dst, errD := resolveCommit(s.ctx, dir, "refs/heads/"+pr.DestBranch)
	src, errS := resolveCommit(s.ctx, dir, "refs/heads/"+pr.SourceBranch)
	if errS != nil {
		src = pr.SourceCommit
	}
	if errD != nil {
		lock.Unlock()
		return http.StatusBadRequest, "Destination branch no longer exists"
	}
	tree, err := gitOutput(s.ctx, dir, "merge-tree", "--write-tree", dst, src)
	if err != nil {
		lock.Unlock()
		return http.StatusConflict, "Merge conflict: the pull request cannot be merged automatically"
	}
	treeID := strings.SplitN(strings.TrimSpace(tree), "\n", 2)[0]
	if message == "" {
		message = fmt.Sprintf("Merged in %s (pull request #%d)\n\n%s", pr.SourceBranch, pr.ID, pr.Title)
	}
	name, email := "Emulator", "emulator@example.com"
	if actor != nil {
		name, email = actor.DisplayName, actor.Email
	}
	commit, err := gitOutput(s.ctx, dir, "-c", "user.name="+name, "-c", "user.email="+email,
		"commit-tree", treeID, "-p", dst, "-p", src, "-m", message)
	if err == nil {
		_, err = gitOutput(s.ctx, dir, "update-ref", "refs/heads/"+pr.DestBranch, strings.TrimSpace(commit), dst)
	}
	if err == nil && pr.CloseSourceBranch {
		_, err = gitOutput(s.ctx, dir, "update-ref", "-d", "refs/heads/"+pr.SourceBranch)
	}
	var after map[string]gitRef
	if err == nil {
		after, err = refMap(s.ctx, dir)
	}
	lock.Unlock()
	if err != nil {
		s.log.Error("merge pull request", "repository", repo.fullName(), "pr", pr.ID, "err", err)
		return http.StatusInternalServerError, "Could not merge the pull request"
	}
	pr.State = "MERGED"
	pr.MergeCommit = strings.TrimSpace(commit)
	pr.SourceCommit = src
	if actor != nil {
		pr.ClosedBy = actor.Username
	}
	s.pushEventLocked(repo, actor, before, after)
	s.touchPR(repo, pr, actor, "pullrequest:fulfilled")
	return 0, ""
}

func (s *Server) declinePullRequest(w http.ResponseWriter, r *http.Request) {
	c, repo, pr, ok := s.authPR(w, r, "pullrequest:write", false, permRead)
	if !ok {
		return
	}
	if pr.State != "OPEN" {
		writeError(w, http.StatusBadRequest, "The pull request is not open", nil)
		return
	}
	s.declinePRLocked(repo, pr, c.user, "")
	writeJSON(w, http.StatusOK, s.prObj(repo, pr))
}

func (s *Server) declinePRLocked(repo *repoRec, pr *prRec, actor *userRec, reason string) {
	pr.State = "DECLINED"
	pr.Reason = reason
	if actor != nil {
		pr.ClosedBy = actor.Username
	}
	s.touchPR(repo, pr, actor, "pullrequest:rejected")
}

func (s *Server) listComments(w http.ResponseWriter, r *http.Request) {
	_, repo, pr, ok := s.authPR(w, r, "pullrequest", true, permRead)
	if !ok {
		return
	}
	p, err := parsePage(r, defaultPagelen, maxPagelen)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	comments, err := filterSort(pr.Comments, r.URL.Query().Get("q"), r.URL.Query().Get("sort"), func(cm *commentRec) fieldGetter {
		return func(f string) (any, bool) {
			switch f {
			case "id":
				return cm.ID, true
			case "created_on":
				return cm.CreatedOn, true
			case "updated_on":
				return cm.UpdatedOn, true
			case "deleted":
				return cm.Deleted, true
			case "pending":
				return cm.Pending, true
			case "inline.path":
				return cm.InlinePath, true
			case "parent.id":
				return cm.ParentID, true
			case "user.nickname", "user.username":
				return cm.User, true
			}
			return nil, false
		}
	})
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, pageEnvelope(s, r, p, comments, func(cm *commentRec) any { return s.commentObj(repo, pr, cm) }))
}

type commentInput struct {
	Content *struct {
		Raw string `json:"raw"`
	} `json:"content"`
	Parent *struct {
		ID int `json:"id"`
	} `json:"parent"`
	Inline *struct {
		Path string `json:"path"`
		From int    `json:"from"`
		To   int    `json:"to"`
	} `json:"inline"`
	Pending bool `json:"pending"`
}

func (s *Server) createComment(w http.ResponseWriter, r *http.Request) {
	c, repo, pr, ok := s.authPR(w, r, "pullrequest", false, permRead)
	if !ok {
		return
	}
	var in commentInput
	if err := decodeJSON(r, &in); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if in.Content == nil || strings.TrimSpace(in.Content.Raw) == "" {
		writeError(w, http.StatusBadRequest, "content: This field is required.", nil)
		return
	}
	cm := s.addCommentLocked(repo, pr, c.user, in)
	writeJSON(w, http.StatusCreated, s.commentObj(repo, pr, cm))
}

func (s *Server) addCommentLocked(repo *repoRec, pr *prRec, author *userRec, in commentInput) *commentRec {
	now := time.Now().UTC()
	cm := &commentRec{ID: s.st.NextCommentID, User: author.Username, Raw: in.Content.Raw, CreatedOn: now, UpdatedOn: now}
	s.st.NextCommentID++
	if in.Parent != nil {
		cm.ParentID = in.Parent.ID
	}
	if in.Inline != nil {
		cm.InlinePath, cm.InlineFrom, cm.InlineTo = in.Inline.Path, in.Inline.From, in.Inline.To
	}
	cm.Pending = in.Pending
	pr.Comments = append(pr.Comments, cm)
	pr.UpdatedOn = now
	_ = s.saveLocked()
	s.emit("pullrequest:comment_created", repo, author, obj{"comment": s.commentObj(repo, pr, cm), "pullrequest": s.prObj(repo, pr)})
	return cm
}

func (s *Server) oneComment(w http.ResponseWriter, r *http.Request) {
	c, repo, pr, ok := s.authPR(w, r, "pullrequest", r.Method == http.MethodGet, permRead)
	if !ok {
		return
	}
	id, _ := strconv.Atoi(r.PathValue("cid"))
	i := slices.IndexFunc(pr.Comments, func(cm *commentRec) bool { return cm.ID == id })
	if i < 0 {
		writeError(w, http.StatusNotFound, "Comment not found", nil)
		return
	}
	cm := pr.Comments[i]
	if r.Method != http.MethodGet && cm.User != c.username() && s.st.repoPermission(c.username(), repo) < permAdmin {
		writeError(w, http.StatusForbidden, "You can only change your own comments.", nil)
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.commentObj(repo, pr, cm))
	case http.MethodPut:
		var in commentInput
		if err := decodeJSON(r, &in); err != nil || in.Content == nil {
			writeError(w, http.StatusBadRequest, "content: This field is required.", nil)
			return
		}
		s.editCommentLocked(repo, pr, cm, c.user, in.Content.Raw)
		writeJSON(w, http.StatusOK, s.commentObj(repo, pr, cm))
	case http.MethodDelete:
		s.deleteCommentLocked(repo, pr, cm, c.user)
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) editCommentLocked(repo *repoRec, pr *prRec, cm *commentRec, actor *userRec, raw string) {
	now := time.Now().UTC()
	cm.Raw, cm.UpdatedOn = raw, now
	pr.UpdatedOn = now
	_ = s.saveLocked()
	s.emit("pullrequest:comment_updated", repo, actor, obj{"comment": s.commentObj(repo, pr, cm), "pullrequest": s.prObj(repo, pr)})
}

func (s *Server) deleteCommentLocked(repo *repoRec, pr *prRec, cm *commentRec, actor *userRec) {
	now := time.Now().UTC()
	cm.Deleted, cm.UpdatedOn = true, now
	pr.UpdatedOn = now
	_ = s.saveLocked()
	s.emit("pullrequest:comment_deleted", repo, actor, obj{"comment": s.commentObj(repo, pr, cm), "pullrequest": s.prObj(repo, pr)})
}

// listActivity merges updates, approvals, changes-requests and comments, newest first. Like
// the real endpoint it ignores q and sort.
func (s *Server) listActivity(w http.ResponseWriter, r *http.Request) {
	_, repo, pr, ok := s.authPR(w, r, "pullrequest", true, permRead)
	if !ok {
		return
	}
	p, err := parsePage(r, 20, 50)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	type entry struct {
		date time.Time
		body obj
	}
	var entries []entry
	stub := s.prStub(repo, pr)
	for _, a := range pr.Activity {
		switch a.Kind {
		case "approval":
			entries = append(entries, entry{a.Date, obj{"pull_request": stub,
				"approval": obj{"date": stamp(a.Date), "user": s.accountByName(a.User), "pullrequest": stub}}})
		case "changes_request":
			entries = append(entries, entry{a.Date, obj{"pull_request": stub,
				"changes_requested": obj{"date": stamp(a.Date), "user": s.accountByName(a.User), "pullrequest": stub}}})
		case "unapproval", "changes_request_removed":
			// Withdrawals only change participants; the activity log keeps the original entry.
		default:
			entries = append(entries, entry{a.Date, obj{"pull_request": stub, "update": obj{
				"state": a.State, "title": a.Title, "description": a.Description, "reason": pr.Reason,
				"date": stamp(a.Date), "author": s.accountByName(a.User),
				"source":      s.prEndpoint(repo, pr.SourceBranch, a.SourceCommit, true),
				"destination": s.prEndpoint(repo, pr.DestBranch, a.DestCommit, true),
			}}})
		}
	}
	for _, cm := range pr.Comments {
		entries = append(entries, entry{cm.CreatedOn, obj{"pull_request": stub, "comment": s.commentObj(repo, pr, cm)}})
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].date.After(entries[j].date) })
	env := pageEnvelope(s, r, p, entries, func(e entry) any { return e.body })
	delete(env, "size")
	writeJSON(w, http.StatusOK, env)
}

func (s *Server) listPRCommits(w http.ResponseWriter, r *http.Request) {
	_, repo, pr, ok := s.authPR(w, r, "pullrequest", true, permRead)
	if !ok {
		return
	}
	p, err := parsePage(r, defaultPagelen, maxPagelen)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	dir := s.gitDir(repo.Workspace, repo.Slug)
	commits, err := logRange(s.ctx, dir, []string{pr.SourceCommit}, []string{pr.DestCommit}, (p.page-1)*p.pagelen, p.pagelen+1)
	if err != nil {
		writeError(w, http.StatusNotFound, "Source commits are no longer available", nil)
		return
	}
	s.writeCommitPage(w, r, repo, commits, p)
}

// prDiffstat redirects to the repository diffstat of the PR's revspec, like bitbucket.org.
func (s *Server) prDiffstat(w http.ResponseWriter, r *http.Request) {
	_, repo, pr, ok := s.authPR(w, r, "pullrequest", true, permRead)
	if !ok {
		return
	}
	target := fmt.Sprintf("%s/diffstat/%s..%s?from_pullrequest_id=%d&topic=true", s.repoAPI(repo), pr.SourceCommit, pr.DestCommit, pr.ID)
	http.Redirect(w, r, target, http.StatusFound)
}

// resolveComment: POST resolves a top-level comment thread (200 with the comment_resolution,
// 409 if already resolved), DELETE reopens it (204). Replies cannot be resolved (400).
func (s *Server) resolveComment(w http.ResponseWriter, r *http.Request) {
	c, repo, pr, ok := s.authPR(w, r, "pullrequest", false, permRead)
	if !ok {
		return
	}
	id, _ := strconv.Atoi(r.PathValue("cid"))
	cm := pr.comment(id)
	if cm == nil || cm.Deleted {
		writeError(w, http.StatusNotFound, "Comment not found", nil)
		return
	}
	if cm.ParentID != 0 {
		writeError(w, http.StatusBadRequest, "Only top-level comments can be resolved", nil)
		return
	}
	if r.Method == http.MethodPost {
		if cm.ResolvedBy != "" {
			writeError(w, http.StatusConflict, "Comment is already resolved", nil)
			return
		}
		s.resolveCommentLocked(repo, pr, cm, c.user, true)
		writeJSON(w, http.StatusOK, s.resolutionObj(cm))
		return
	}
	if cm.ResolvedBy == "" {
		writeError(w, http.StatusNotFound, "Comment is not resolved", nil)
		return
	}
	s.resolveCommentLocked(repo, pr, cm, c.user, false)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) resolveCommentLocked(repo *repoRec, pr *prRec, cm *commentRec, actor *userRec, resolve bool) {
	now := time.Now().UTC()
	event := "pullrequest:comment_reopened"
	if resolve {
		cm.ResolvedBy, cm.ResolvedOn = actor.Username, now
		event = "pullrequest:comment_resolved"
	} else {
		cm.ResolvedBy, cm.ResolvedOn = "", time.Time{}
	}
	pr.UpdatedOn = now
	_ = s.saveLocked()
	s.emit(event, repo, actor, obj{"comment": s.commentObj(repo, pr, cm), "pullrequest": s.prObj(repo, pr)})
}

func taskFields(t *taskRec) fieldGetter {
	return func(f string) (any, bool) {
		switch f {
		case "id":
			return t.ID, true
		case "state":
			return t.State, true
		case "created_on":
			return t.CreatedOn, true
		case "updated_on":
			return t.UpdatedOn, true
		case "content.raw":
			return t.Raw, true
		case "comment.id":
			return t.CommentID, true
		case "creator.nickname", "creator.username":
			return t.Creator, true
		}
		return nil, false
	}
}

// listTasks pages a PR's tasks, oldest first (Atlassian: sort defaults to created_on);
// q and sort filter on id, state, created_on, updated_on, content.raw, comment.id.
func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	_, repo, pr, ok := s.authPR(w, r, "pullrequest", true, permRead)
	if !ok {
		return
	}
	p, err := parsePage(r, defaultPagelen, maxPagelen)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	q := r.URL.Query()
	tasks, err := filterSort(pr.Tasks, q.Get("q"), q.Get("sort"), taskFields)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, pageEnvelope(s, r, p, tasks, func(t *taskRec) any { return s.taskObj(repo, pr, t) }))
}

type taskInput struct {
	Content *struct {
		Raw string `json:"raw"`
	} `json:"content"`
	Comment *struct {
		ID int `json:"id"`
	} `json:"comment"`
	Pending *bool   `json:"pending"`
	State   *string `json:"state"`
}

func (s *Server) createTask(w http.ResponseWriter, r *http.Request) {
	c, repo, pr, ok := s.authPR(w, r, "pullrequest", false, permRead)
	if !ok {
		return
	}
	var in taskInput
	if err := decodeJSON(r, &in); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if in.Content == nil || strings.TrimSpace(in.Content.Raw) == "" {
		writeError(w, http.StatusBadRequest, "content: This field is required.", nil)
		return
	}
	commentID := 0
	if in.Comment != nil && in.Comment.ID != 0 {
		if pr.comment(in.Comment.ID) == nil {
			writeError(w, http.StatusBadRequest, "comment: Comment not found", nil)
			return
		}
		commentID = in.Comment.ID
	}
	t := s.addTaskLocked(pr, c.user, in.Content.Raw, commentID, in.Pending != nil && *in.Pending)
	w.Header().Set("Location", s.repoAPI(repo)+fmt.Sprintf("/pullrequests/%d/tasks/%d", pr.ID, t.ID))
	writeJSON(w, http.StatusCreated, s.taskObj(repo, pr, t))
}

// addTaskLocked adds a task and bumps the PR's updated_on (task_count changes). Bitbucket
// has no task webhook event.
func (s *Server) addTaskLocked(pr *prRec, creator *userRec, raw string, commentID int, pending bool) *taskRec {
	now := time.Now().UTC()
	t := &taskRec{ID: s.st.newTaskID(), CommentID: commentID, Creator: creator.Username, Raw: raw,
		State: "UNRESOLVED", Pending: pending, CreatedOn: now, UpdatedOn: now}
	pr.Tasks = append(pr.Tasks, t)
	pr.UpdatedOn = now
	_ = s.saveLocked()
	return t
}

func (s *Server) oneTask(w http.ResponseWriter, r *http.Request) {
	c, repo, pr, ok := s.authPR(w, r, "pullrequest", r.Method == http.MethodGet, permRead)
	if !ok {
		return
	}
	id, _ := strconv.Atoi(r.PathValue("tid"))
	i := slices.IndexFunc(pr.Tasks, func(t *taskRec) bool { return t.ID == id })
	if i < 0 {
		writeError(w, http.StatusNotFound, "Task not found", nil)
		return
	}
	t := pr.Tasks[i]
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.taskObj(repo, pr, t))
	case http.MethodPut:
		var in taskInput
		if err := decodeJSON(r, &in); err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), nil)
			return
		}
		if in.State != nil && *in.State != "RESOLVED" && *in.State != "UNRESOLVED" {
			writeError(w, http.StatusBadRequest, "state: must be RESOLVED or UNRESOLVED", nil)
			return
		}
		raw := ""
		if in.Content != nil {
			raw = in.Content.Raw
		}
		state := ""
		if in.State != nil {
			state = *in.State
		}
		s.updateTaskLocked(pr, t, c.user, raw, state)
		writeJSON(w, http.StatusOK, s.taskObj(repo, pr, t))
	case http.MethodDelete:
		pr.Tasks = slices.Delete(pr.Tasks, i, i+1)
		pr.UpdatedOn = time.Now().UTC()
		_ = s.saveLocked()
		w.WriteHeader(http.StatusNoContent)
	}
}

// updateTaskLocked changes a task's text and/or state ("" keeps it) and bumps updated_on.
func (s *Server) updateTaskLocked(pr *prRec, t *taskRec, actor *userRec, raw, state string) {
	now := time.Now().UTC()
	if raw != "" {
		t.Raw = raw
	}
	if state != "" && state != t.State {
		t.State = state
		if state == "RESOLVED" {
			t.ResolvedBy, t.ResolvedOn = actor.Username, now
		} else {
			t.ResolvedBy, t.ResolvedOn = "", time.Time{}
		}
	}
	t.UpdatedOn = now
	pr.UpdatedOn = now
	_ = s.saveLocked()
}

// reviewPullRequest handles approve / unapprove / request-changes / remove the request.
// POST answers the caller's participant object, DELETE 204.
func (s *Server) reviewPullRequest(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, repo, pr, ok := s.authPR(w, r, "pullrequest", false, permRead)
		if !ok {
			return
		}
		if status, msg := s.reviewPRLocked(repo, pr, c.user, kind); status != 0 {
			writeError(w, status, msg, nil)
			return
		}
		if r.Method == http.MethodDelete {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, s.participantObj(pr, c.user.Username))
	}
}

var reviewEvents = map[string]string{
	"approval":                "pullrequest:approved",
	"unapproval":              "pullrequest:unapproved",
	"changes_request":         "pullrequest:changes_request_created",
	"changes_request_removed": "pullrequest:changes_request_removed",
}

// reviewPRLocked records an approval-type activity, bumps updated_on and emits the event,
// whose payload carries `approval` or `changes_request` ({date, user}) next to the PR.
func (s *Server) reviewPRLocked(repo *repoRec, pr *prRec, actor *userRec, kind string) (int, string) {
	if actor == nil {
		return http.StatusBadRequest, "a user is required"
	}
	if pr.State != "OPEN" && (kind == "approval" || kind == "changes_request") {
		return http.StatusBadRequest, "The pull request is not open"
	}
	_, states := pr.reviewState()
	cur, has := states[actor.Username]
	switch kind {
	case "unapproval":
		if !has || cur.Kind != "approval" {
			return http.StatusNotFound, "You have not approved this pull request"
		}
	case "changes_request_removed":
		if !has || cur.Kind != "changes_request" {
			return http.StatusNotFound, "You have not requested changes on this pull request"
		}
	case "approval", "changes_request":
		if has && cur.Kind == kind {
			return 0, "" // idempotent, like bitbucket.org
		}
	}
	now := time.Now().UTC()
	pr.Activity = append(pr.Activity, activityRec{Kind: kind, Date: now, User: actor.Username})
	pr.UpdatedOn = now
	_ = s.saveLocked()
	key := "approval"
	if strings.HasPrefix(kind, "changes_request") {
		key = "changes_request"
	}
	s.emit(reviewEvents[kind], repo, actor, obj{key: obj{"date": stamp(now), "user": s.accountObj(actor)},
		"pullrequest": s.prObj(repo, pr)})
	return 0, ""
}

// participantObj is user's participant entry (also when it has no approval state left).
func (s *Server) participantObj(pr *prRec, user string) obj {
	_, states := pr.reviewState()
	role := "PARTICIPANT"
	if slices.Contains(pr.Reviewers, user) {
		role = "REVIEWER"
	}
	o := obj{"type": "participant", "user": s.accountByName(user), "role": role, "approved": false,
		"state": nil, "participated_on": nil}
	if a, ok := states[user]; ok {
		o["participated_on"] = stamp(a.Date)
		if a.Kind == "approval" {
			o["approved"], o["state"] = true, "approved"
		} else {
			o["state"] = "changes_requested"
		}
	}
	return o
}
