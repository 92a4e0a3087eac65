package emulator

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Seed describes the initial content of an emulator: people, OAuth consumers, workspaces
// and repositories (imported from an existing bare repository or generated).
type Seed struct {
	Users      []SeedUser      `yaml:"users" json:"users"`
	Consumers  []Consumer      `yaml:"consumers" json:"consumers"`
	Workspaces []SeedWorkspace `yaml:"workspaces" json:"workspaces"`
}

// SeedUser is one Bitbucket account. DisplayName and Email default from Username; commits
// whose author email matches Email are attributed to the account.
type SeedUser struct {
	Username    string `yaml:"username" json:"username"`
	DisplayName string `yaml:"display_name,omitempty" json:"display_name,omitempty"`
	Email       string `yaml:"email,omitempty" json:"email,omitempty"`
}

// Consumer is an OAuth 2.0 consumer (key + secret). Scopes are ticked on the consumer as on
// bitbucket.org; without any, the consumer gets the backup app's read scopes.
type Consumer struct {
	Key         string   `yaml:"key" json:"key"`
	Secret      string   `yaml:"secret" json:"secret"`
	Name        string   `yaml:"name,omitempty" json:"name,omitempty"`
	CallbackURL string   `yaml:"callback_url" json:"callback_url"`
	Scopes      []string `yaml:"scopes,omitempty" json:"scopes,omitempty"`
}

// DefaultConsumerScopes are the scopes of a consumer that lists none.
var DefaultConsumerScopes = []string{"account", "repository", "pullrequest", "webhook"}

// SeedWorkspace lists members by role. Admins and owners are workspace administrators.
type SeedWorkspace struct {
	Slug          string           `yaml:"slug" json:"slug"`
	Name          string           `yaml:"name,omitempty" json:"name,omitempty"`
	Owners        []string         `yaml:"owners,omitempty" json:"owners,omitempty"`
	Admins        []string         `yaml:"admins,omitempty" json:"admins,omitempty"`
	Collaborators []string         `yaml:"collaborators,omitempty" json:"collaborators,omitempty"`
	Members       []string         `yaml:"members,omitempty" json:"members,omitempty"`
	Projects      []SeedProject    `yaml:"projects,omitempty" json:"projects,omitempty"`
	Repositories  []SeedRepository `yaml:"repositories,omitempty" json:"repositories,omitempty"`
}

// SeedProject is a workspace project; a workspace without any gets one named after it.
type SeedProject struct {
	Key  string `yaml:"key" json:"key"`
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
}

// SeedRepository is imported (Import: path of a bare or non-bare repository, all refs
// copied), generated (Generate) or, with neither, created empty.
type SeedRepository struct {
	Slug        string    `yaml:"slug" json:"slug"`
	Name        string    `yaml:"name,omitempty" json:"name,omitempty"`
	Description string    `yaml:"description,omitempty" json:"description,omitempty"`
	Language    string    `yaml:"language,omitempty" json:"language,omitempty"`
	Project     string    `yaml:"project,omitempty" json:"project,omitempty"`
	Private     *bool     `yaml:"private,omitempty" json:"private,omitempty"`
	Import      string    `yaml:"import,omitempty" json:"import,omitempty"`
	Generate    *Generate `yaml:"generate,omitempty" json:"generate,omitempty"`
	// Settings: branch_restrictions, default_reviewers (usernames) and branching_model
	// (default: development tracks the main branch, production off, standard prefixes).
	RepositorySettings `yaml:",inline"`
}

// Generate shapes a deterministic synthetic history: Commits on main, Branches feature
// branches, Tags annotated tags, PullRequests pull requests (each on its own branch; some
// merged with a real merge commit, some declined), BinaryBytes of pseudo-random data in
// assets/blob.bin, CommentsPerPR comments on each pull request (default 2).
//
// The remaining knobs (all off by default, so existing seeds keep their shape) enrich every
// pull request for PR-export tests: PRStates cycles the states by PR index, RepliesPerComment
// answers each seeded top-level comment, InlineCommentsPerPR adds code comments,
// TasksPerPR adds tasks (every second resolved, every other one on a comment),
// ApprovalsPerPR / ChangesRequestedPerPR add reviews by other users, and
// ResolvedCommentsPerPR / DeletedCommentsPerPR resolve / delete top-level comments.
type Generate struct {
	Commits       int   `yaml:"commits" json:"commits"`
	Branches      int   `yaml:"branches,omitempty" json:"branches,omitempty"`
	Tags          int   `yaml:"tags,omitempty" json:"tags,omitempty"`
	PullRequests  int   `yaml:"pull_requests,omitempty" json:"pull_requests,omitempty"`
	BinaryBytes   int64 `yaml:"binary_bytes,omitempty" json:"binary_bytes,omitempty"`
	CommentsPerPR *int  `yaml:"comments_per_pr,omitempty" json:"comments_per_pr,omitempty"`

	PRStates              []string `yaml:"pr_states,omitempty" json:"pr_states,omitempty"`
	RepliesPerComment     int      `yaml:"replies_per_comment,omitempty" json:"replies_per_comment,omitempty"`
	InlineCommentsPerPR   int      `yaml:"inline_comments_per_pr,omitempty" json:"inline_comments_per_pr,omitempty"`
	TasksPerPR            int      `yaml:"tasks_per_pr,omitempty" json:"tasks_per_pr,omitempty"`
	ApprovalsPerPR        int      `yaml:"approvals_per_pr,omitempty" json:"approvals_per_pr,omitempty"`
	ChangesRequestedPerPR int      `yaml:"changes_requested_per_pr,omitempty" json:"changes_requested_per_pr,omitempty"`
	ResolvedCommentsPerPR int      `yaml:"resolved_comments_per_pr,omitempty" json:"resolved_comments_per_pr,omitempty"`
	DeletedCommentsPerPR  int      `yaml:"deleted_comments_per_pr,omitempty" json:"deleted_comments_per_pr,omitempty"`
}

var prStates = []string{"OPEN", "MERGED", "DECLINED", "SUPERSEDED"}

func (g *Generate) validate() error {
	for i, st := range g.PRStates {
		up := strings.ToUpper(st)
		if !slices.Contains(prStates, up) {
			return fmt.Errorf("pr_states: unknown state %q (want OPEN, MERGED, DECLINED or SUPERSEDED)", st)
		}
		g.PRStates[i] = up
	}
	for name, n := range map[string]int{"replies_per_comment": g.RepliesPerComment, "inline_comments_per_pr": g.InlineCommentsPerPR,
		"tasks_per_pr": g.TasksPerPR, "approvals_per_pr": g.ApprovalsPerPR, "changes_requested_per_pr": g.ChangesRequestedPerPR,
		"resolved_comments_per_pr": g.ResolvedCommentsPerPR, "deleted_comments_per_pr": g.DeletedCommentsPerPR} {
		if n < 0 {
			return fmt.Errorf("%s must not be negative", name)
		}
	}
	return nil
}

// LoadSeed reads a YAML seed file.
func LoadSeed(path string) (*Seed, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read seed: %w", err)
	}
	var s Seed
	if err := yaml.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse seed %s: %w", path, err)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("seed %s: %w", path, err)
	}
	return &s, nil
}

func (s *Seed) validate() error {
	users := map[string]bool{}
	for _, u := range s.Users {
		if u.Username == "" {
			return fmt.Errorf("user without username")
		}
		users[u.Username] = true
	}
	for _, c := range s.Consumers {
		if c.Key == "" || c.Secret == "" {
			return fmt.Errorf("consumer %q needs key and secret", c.Key)
		}
	}
	for _, w := range s.Workspaces {
		if w.Slug == "" {
			return fmt.Errorf("workspace without slug")
		}
		for _, list := range [][]string{w.Owners, w.Admins, w.Collaborators, w.Members} {
			for _, name := range list {
				if !users[name] {
					return fmt.Errorf("workspace %s: unknown user %q", w.Slug, name)
				}
			}
		}
		for _, r := range w.Repositories {
			if r.Slug == "" {
				return fmt.Errorf("workspace %s: repository without slug", w.Slug)
			}
			if r.Import != "" && r.Generate != nil {
				return fmt.Errorf("repository %s/%s: import and generate are exclusive", w.Slug, r.Slug)
			}
			if err := r.RepositorySettings.validate(func(u string) bool { return users[u] }); err != nil {
				return fmt.Errorf("repository %s/%s: %w", w.Slug, r.Slug, err)
			}
			if r.Generate != nil {
				if err := r.Generate.validate(); err != nil {
					return fmt.Errorf("repository %s/%s: %w", w.Slug, r.Slug, err)
				}
			}
		}
	}
	return nil
}

func boolPtr(b bool) *bool { return &b }

// DefaultDemoSeed is the demo world: alice administers acme and acme-labs, bob is a plain
// member of acme, carol has no workspace; a dozen repositories of varied shapes.
func DefaultDemoSeed() *Seed {
	return &Seed{
		Users: []SeedUser{
			{Username: "alice", DisplayName: "Alice Anders"},
			{Username: "bob", DisplayName: "Bob Berg"},
			{Username: "carol", DisplayName: "Carol Chen"},
		},
		Consumers: []Consumer{
			{Key: "demo-key", Secret: "demo-secret", Name: "GitSec demo backup",
				CallbackURL: "http://127.0.0.1:8080/oauth/bitbucket/callback"},
			{Key: "demo-restore-key", Secret: "demo-restore-secret", Name: "GitSec demo restore",
				CallbackURL: "http://127.0.0.1:8080/oauth/bitbucket/restore/callback",
				Scopes: []string{"account", "repository", "repository:write", "repository:admin",
					"repository:delete", "project", "pullrequest", "pullrequest:write", "webhook"}},
		},
		Workspaces: []SeedWorkspace{
			{
				Slug: "acme", Name: "Acme Corporation", Admins: []string{"alice"}, Members: []string{"bob"},
				Projects: []SeedProject{{Key: "CORE", Name: "Core"}, {Key: "WEB", Name: "Web"}},
				Repositories: []SeedRepository{
					{Slug: "api", Description: "Acme public API", Language: "go", Project: "CORE",
						Generate: &Generate{Commits: 200, Branches: 4, Tags: 3, PullRequests: 8}},
					{Slug: "web", Description: "Acme web front end", Language: "typescript", Project: "WEB",
						Generate: &Generate{Commits: 500, Branches: 5, Tags: 3, PullRequests: 60}},
					{Slug: "empty", Description: "Nothing pushed yet", Project: "CORE"},
					{Slug: "many-refs", Description: "Lots of branches and tags", Project: "CORE",
						Generate: &Generate{Commits: 300, Branches: 150, Tags: 120}},
					{Slug: "assets", Description: "Large binary assets", Project: "WEB",
						Generate: &Generate{Commits: 5, BinaryBytes: 20 << 20}},
					{Slug: "docs", Description: "Documentation", Language: "markdown", Project: "WEB",
						Private: boolPtr(false), Generate: &Generate{Commits: 30, Tags: 1}},
					{Slug: "infra", Description: "Terraform and deployment", Language: "hcl", Project: "CORE",
						Generate: &Generate{Commits: 80, Branches: 2, PullRequests: 3}},
					{Slug: "legacy", Description: "Old monolith", Language: "java", Project: "CORE",
						Generate: &Generate{Commits: 120, Branches: 1, Tags: 10}},
				},
			},
			{
				Slug: "acme-labs", Name: "Acme Labs", Admins: []string{"alice"},
				Repositories: []SeedRepository{
					{Slug: "sandbox", Description: "Try things here", Generate: &Generate{Commits: 10}},
					{Slug: "ml-experiments", Description: "Model experiments", Language: "python",
						Generate: &Generate{Commits: 40, Branches: 2, Tags: 1, PullRequests: 4}},
					{Slug: "prototype", Description: "Prototype app", Language: "rust",
						Generate: &Generate{Commits: 15, PullRequests: 1}},
					{Slug: "scratch", Description: "Empty scratch space"},
				},
			},
		},
	}
}

// seedEpoch anchors every generated timestamp so that generated repositories are identical
// from one run to the next.
var seedEpoch = time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC)

func titleCase(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func normalizeScopes(scopes []string) []string {
	if len(scopes) == 0 {
		return append([]string(nil), DefaultConsumerScopes...)
	}
	return append([]string(nil), scopes...)
}

func upsertConsumer(st *state, c Consumer) {
	rec := &consumerRec{Key: c.Key, Secret: c.Secret, Name: c.Name, CallbackURL: c.CallbackURL,
		Scopes: normalizeScopes(c.Scopes)}
	if rec.Name == "" {
		rec.Name = c.Key
	}
	for i, old := range st.Consumers {
		if old.Key == c.Key {
			st.Consumers[i] = rec
			return
		}
	}
	st.Consumers = append(st.Consumers, rec)
}

// applySeed fills an empty state and creates the git repositories.
func (s *Server) applySeed(ctx context.Context, seed *Seed) error {
	if err := seed.validate(); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	st := s.st
	var authors []genAuthor
	for _, u := range seed.Users {
		rec := &userRec{
			Username:    u.Username,
			DisplayName: u.DisplayName,
			Email:       u.Email,
			UUID:        stableUUID("user", u.Username),
			CreatedOn:   seedEpoch.AddDate(-1, 0, 0),
		}
		if rec.DisplayName == "" {
			rec.DisplayName = titleCase(u.Username)
		}
		if rec.Email == "" {
			rec.Email = u.Username + "@example.com"
		}
		rec.AccountID = "557058:" + strings.Trim(stableUUID("account", u.Username), "{}")
		st.Users = append(st.Users, rec)
		authors = append(authors, genAuthor{Name: rec.DisplayName, Email: rec.Email, Username: rec.Username})
	}
	if len(authors) == 0 {
		authors = []genAuthor{{Name: "Emulator", Email: "emulator@example.com"}}
	}
	for _, c := range seed.Consumers {
		upsertConsumer(st, c)
	}
	for _, w := range seed.Workspaces {
		ws := &workspaceRec{
			Slug: w.Slug, Name: w.Name, UUID: stableUUID("workspace", w.Slug), IsPrivate: true,
			CreatedOn: seedEpoch.AddDate(0, -6, 0),
		}
		if ws.Name == "" {
			ws.Name = titleCase(w.Slug)
		}
		add := func(names []string, role string) {
			for _, n := range names {
				ws.Members = append(ws.Members, memberRec{Username: n, Role: role})
			}
		}
		add(w.Owners, roleOwner)
		add(w.Admins, roleAdmin)
		add(w.Collaborators, roleCollaborator)
		add(w.Members, roleMember)
		for _, p := range w.Projects {
			name := p.Name
			if name == "" {
				name = p.Key
			}
			ws.Projects = append(ws.Projects, projectRec{Key: strings.ToUpper(p.Key), Name: name,
				UUID: stableUUID("project", w.Slug+"/"+p.Key), CreatedOn: ws.CreatedOn})
		}
		if len(ws.Projects) == 0 {
			key := strings.ToUpper(strings.ReplaceAll(w.Slug, "-", ""))
			ws.Projects = append(ws.Projects, projectRec{Key: key, Name: ws.Name,
				UUID: stableUUID("project", w.Slug+"/"+key), CreatedOn: ws.CreatedOn})
		}
		st.Workspaces = append(st.Workspaces, ws)
		for i, r := range w.Repositories {
			if err := s.seedRepository(ctx, ws, r, i, authors); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Server) seedRepository(ctx context.Context, ws *workspaceRec, r SeedRepository, index int, authors []genAuthor) error {
	created := seedEpoch.Add(time.Duration(index) * time.Hour)
	rec := &repoRec{
		UUID: stableUUID("repository", ws.Slug+"/"+r.Slug), Workspace: ws.Slug, Slug: r.Slug,
		Name: r.Name, Description: r.Description, Language: r.Language, ForkPolicy: "no_public_forks",
		IsPrivate: true, CreatedOn: created, UpdatedOn: created, NextPRID: 1,
	}
	if rec.Name == "" {
		rec.Name = r.Slug
	}
	if r.Private != nil {
		rec.IsPrivate = *r.Private
	}
	if !rec.IsPrivate {
		rec.ForkPolicy = "allow_forks"
	}
	rec.ProjectKey = ws.Projects[0].Key
	if r.Project != "" {
		p := s.st.project(ws, r.Project)
		if p == nil {
			return fmt.Errorf("repository %s/%s: unknown project %q", ws.Slug, r.Slug, r.Project)
		}
		rec.ProjectKey = p.Key
	}
	dir := s.gitDir(ws.Slug, r.Slug)
	switch {
	case r.Import != "":
		if err := importRepository(ctx, r.Import, dir); err != nil {
			return fmt.Errorf("import %s/%s: %w", ws.Slug, r.Slug, err)
		}
	case r.Generate != nil:
		gen, err := generateRepository(ctx, dir, *r.Generate, authors, ws.Slug+"/"+r.Slug)
		if err != nil {
			return fmt.Errorf("generate %s/%s: %w", ws.Slug, r.Slug, err)
		}
		s.seedPullRequests(rec, gen, *r.Generate, authors)
		if gen.lastDate.After(rec.UpdatedOn) {
			rec.UpdatedOn = gen.lastDate
		}
	default:
		if err := initBare(ctx, dir); err != nil {
			return fmt.Errorf("create %s/%s: %w", ws.Slug, r.Slug, err)
		}
	}
	s.st.applySettings(rec, r.RepositorySettings, true, true)
	s.st.Repositories = append(s.st.Repositories, rec)
	return nil
}

func (s *Server) seedPullRequests(rec *repoRec, gen *generated, g Generate, authors []genAuthor) {
	perPR := 2
	if g.CommentsPerPR != nil {
		perPR = *g.CommentsPerPR
	}
	for _, gp := range gen.pullRequests {
		author := authors[gp.index%len(authors)]
		created := seedEpoch.Add(time.Duration(gp.index+1) * 3 * time.Hour)
		pr := &prRec{
			RepoUUID: rec.UUID, ID: rec.NextPRID, Title: fmt.Sprintf("Topic %d: improve module %d", gp.index+1, gp.index%7),
			Description:  fmt.Sprintf("This change reworks module %d.\n\n* adds topics/pr-%03d.txt", gp.index%7, gp.index+1),
			State:        gp.state,
			Author:       author.Username,
			SourceBranch: gp.branch, SourceCommit: gp.sourceTip,
			DestBranch: "main", DestCommit: gp.destBase, MergeCommit: gp.mergeCommit,
			CreatedOn: created, UpdatedOn: created,
		}
		rec.NextPRID++
		pr.Activity = append(pr.Activity, activityRec{Kind: "update", Date: created, User: pr.Author, State: "OPEN",
			Title: pr.Title, Description: pr.Description, SourceCommit: pr.SourceCommit, DestCommit: pr.DestCommit})
		at := created
		for c := 0; c < perPR; c++ {
			at = at.Add(17 * time.Minute)
			commenter := authors[(gp.index+c+1)%len(authors)]
			cm := &commentRec{ID: s.st.NextCommentID, User: commenter.Username, CreatedOn: at, UpdatedOn: at,
				Raw: fmt.Sprintf("Comment %d on topic %d: looks good, one nit.", c+1, gp.index+1)}
			s.st.NextCommentID++
			if c == 1 && len(pr.Comments) > 0 {
				cm.ParentID = pr.Comments[0].ID
			}
			if c == 2 {
				cm.InlinePath = fmt.Sprintf("topics/pr-%03d.txt", gp.index+1)
				cm.InlineTo = 1
			}
			pr.Comments = append(pr.Comments, cm)
		}
		at = s.seedPRExtras(pr, gp.index, g, authors, at)
		pr.UpdatedOn = at
		if gp.state != "OPEN" {
			closer := authors[0].Username
			at = at.Add(time.Hour)
			if gp.state == "MERGED" && len(authors) > 1 && g.ApprovalsPerPR == 0 {
				pr.Activity = append(pr.Activity, activityRec{Kind: "approval", Date: at.Add(-time.Minute), User: authors[1].Username})
			}
			pr.ClosedBy = closer
			pr.UpdatedOn = at
			pr.Activity = append(pr.Activity, activityRec{Kind: "update", Date: at, User: closer, State: gp.state,
				Title: pr.Title, Description: pr.Description, SourceCommit: pr.SourceCommit, DestCommit: pr.DestCommit})
			if gp.state == "DECLINED" {
				pr.Reason = "Superseded by another approach"
			}
		}
		s.st.PullRequests = append(s.st.PullRequests, pr)
	}
}

// seedPRExtras adds what the PR-export knobs ask for, deterministically, starting after at;
// it returns the time of the last thing added. Reviewers, repliers and task creators are
// the users other than the PR author, in seed order.
func (s *Server) seedPRExtras(pr *prRec, index int, g Generate, authors []genAuthor, at time.Time) time.Time {
	var others []string
	for k := 1; k < len(authors); k++ {
		if u := authors[(index+k)%len(authors)].Username; u != pr.Author && u != "" {
			others = append(others, u)
		}
	}
	if len(others) == 0 {
		others = []string{pr.Author}
	}
	who := func(k int) string { return others[k%len(others)] }
	newComment := func(user, raw string) *commentRec {
		at = at.Add(7 * time.Minute)
		cm := &commentRec{ID: s.st.NextCommentID, User: user, CreatedOn: at, UpdatedOn: at, Raw: raw}
		s.st.NextCommentID++
		pr.Comments = append(pr.Comments, cm)
		return cm
	}
	topic := fmt.Sprintf("topics/pr-%03d.txt", index+1)
	for k := 0; k < g.InlineCommentsPerPR; k++ {
		cm := newComment(who(k), fmt.Sprintf("Inline note %d on %s.", k+1, topic))
		cm.InlinePath = topic
		// Alternate new-side, old-side and both-sides anchors, as Bitbucket shows them.
		switch k % 3 {
		case 0:
			cm.InlineTo = 1 + k/3
		case 1:
			cm.InlineFrom = 2
		default:
			cm.InlineFrom, cm.InlineTo = 1, 3
		}
	}
	var tops []*commentRec
	for _, cm := range pr.Comments {
		if cm.ParentID == 0 {
			tops = append(tops, cm)
		}
	}
	for _, parent := range tops {
		for k := 0; k < g.RepliesPerComment; k++ {
			reply := newComment(who(k+1), fmt.Sprintf("Reply %d to comment %d: agreed.", k+1, parent.ID))
			reply.ParentID = parent.ID
			reply.InlinePath, reply.InlineFrom, reply.InlineTo = parent.InlinePath, parent.InlineFrom, parent.InlineTo
		}
	}
	for k := 0; k < g.TasksPerPR; k++ {
		at = at.Add(5 * time.Minute)
		t := &taskRec{ID: s.st.newTaskID(), Creator: who(k), Raw: fmt.Sprintf("Task %d: follow up on topic %d", k+1, index+1),
			State: "UNRESOLVED", CreatedOn: at, UpdatedOn: at}
		if k%2 == 0 && len(tops) > 0 {
			t.CommentID = tops[(k/2)%len(tops)].ID
		}
		if k%2 == 1 {
			at = at.Add(11 * time.Minute)
			t.State, t.ResolvedBy, t.ResolvedOn, t.UpdatedOn = "RESOLVED", pr.Author, at, at
		}
		pr.Tasks = append(pr.Tasks, t)
	}
	for k := 0; k < g.ResolvedCommentsPerPR && k < len(tops); k++ {
		at = at.Add(3 * time.Minute)
		tops[k].ResolvedBy, tops[k].ResolvedOn = pr.Author, at
	}
	for k := 0; k < g.DeletedCommentsPerPR && k < len(tops); k++ {
		at = at.Add(2 * time.Minute)
		cm := tops[len(tops)-1-k]
		cm.Deleted, cm.UpdatedOn = true, at
	}
	// Reviews: the first users approve, the next ones request changes (one state per user).
	for k := 0; k < g.ApprovalsPerPR+g.ChangesRequestedPerPR && k < len(others); k++ {
		at = at.Add(13 * time.Minute)
		kind := "approval"
		if k >= g.ApprovalsPerPR {
			kind = "changes_request"
		}
		pr.Activity = append(pr.Activity, activityRec{Kind: kind, Date: at, User: others[k]})
	}
	return at
}
