package emulator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
)

// stateFileName is the one JSON document that holds everything except the git data.
const stateFileName = "state.json"

// Workspace roles. "owner" and "admin" both make the user a workspace administrator
// (the `administrator` flag of /2.0/user/workspaces); collaborators may push; members read.
const (
	roleOwner        = "owner"
	roleAdmin        = "admin"
	roleCollaborator = "collaborator"
	roleMember       = "member"
)

// Repository permission levels, ordered so that comparisons work.
type permission int

const (
	permNone permission = iota
	permRead
	permWrite
	permAdmin
)

type userRec struct {
	Username    string    `json:"username"`
	DisplayName string    `json:"display_name"`
	Email       string    `json:"email"`
	UUID        string    `json:"uuid"`
	AccountID   string    `json:"account_id"`
	CreatedOn   time.Time `json:"created_on"`
}

type consumerRec struct {
	Key         string   `json:"key"`
	Secret      string   `json:"secret"`
	Name        string   `json:"name"`
	CallbackURL string   `json:"callback_url"`
	Scopes      []string `json:"scopes"`
}

type memberRec struct {
	Username string `json:"username"`
	Role     string `json:"role"`
}

type projectRec struct {
	Key       string    `json:"key"`
	UUID      string    `json:"uuid"`
	Name      string    `json:"name"`
	CreatedOn time.Time `json:"created_on"`
}

type workspaceRec struct {
	Slug      string       `json:"slug"`
	UUID      string       `json:"uuid"`
	Name      string       `json:"name"`
	IsPrivate bool         `json:"is_private"`
	CreatedOn time.Time    `json:"created_on"`
	Members   []memberRec  `json:"members"`
	Projects  []projectRec `json:"projects"`
}

type repoRec struct {
	UUID        string    `json:"uuid"`
	Workspace   string    `json:"workspace"` // workspace slug
	Slug        string    `json:"slug"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Language    string    `json:"language"`
	Website     string    `json:"website"`
	ForkPolicy  string    `json:"fork_policy"`
	ProjectKey  string    `json:"project_key"`
	IsPrivate   bool      `json:"is_private"`
	HasIssues   bool      `json:"has_issues"`
	HasWiki     bool      `json:"has_wiki"`
	CreatedOn   time.Time `json:"created_on"`
	UpdatedOn   time.Time `json:"updated_on"`
	NextPRID    int       `json:"next_pr_id"`
	// Repository settings (settings.go). A nil BranchingModel is Bitbucket's default model.
	BranchRestrictions []*branchRestrictionRec `json:"branch_restrictions,omitempty"`
	BranchingModel     *branchingModelRec      `json:"branching_model,omitempty"`
	DefaultReviewers   []string                `json:"default_reviewers,omitempty"`
}

func (r *repoRec) fullName() string { return r.Workspace + "/" + r.Slug }

type commentRec struct {
	ID         int       `json:"id"`
	User       string    `json:"user"`
	Raw        string    `json:"raw"`
	CreatedOn  time.Time `json:"created_on"`
	UpdatedOn  time.Time `json:"updated_on"`
	Deleted    bool      `json:"deleted"`
	ParentID   int       `json:"parent_id,omitempty"`
	InlinePath string    `json:"inline_path,omitempty"`
	InlineFrom int       `json:"inline_from,omitempty"`
	InlineTo   int       `json:"inline_to,omitempty"`
	Pending    bool      `json:"pending,omitempty"`
	// ResolvedBy is set while the comment thread is resolved (the `resolution` object).
	ResolvedBy string    `json:"resolved_by,omitempty"`
	ResolvedOn time.Time `json:"resolved_on,omitempty"`
}

// taskRec is a pull request task, optionally anchored on a comment (CommentID).
type taskRec struct {
	ID         int       `json:"id"`
	CommentID  int       `json:"comment_id,omitempty"`
	Creator    string    `json:"creator"`
	Raw        string    `json:"raw"`
	State      string    `json:"state"` // RESOLVED or UNRESOLVED
	Pending    bool      `json:"pending,omitempty"`
	CreatedOn  time.Time `json:"created_on"`
	UpdatedOn  time.Time `json:"updated_on"`
	ResolvedBy string    `json:"resolved_by,omitempty"`
	ResolvedOn time.Time `json:"resolved_on,omitempty"`
}

// activityRec is one entry of a pull request's activity log. Comments are not duplicated
// here: the activity endpoint merges them in by date.
type activityRec struct {
	Kind         string    `json:"kind"` // "update", "approval" or "changes_request"
	Date         time.Time `json:"date"`
	User         string    `json:"user"`
	State        string    `json:"state,omitempty"`
	Title        string    `json:"title,omitempty"`
	Description  string    `json:"description,omitempty"`
	SourceCommit string    `json:"source_commit,omitempty"`
	DestCommit   string    `json:"dest_commit,omitempty"`
}

type prRec struct {
	RepoUUID          string        `json:"repo_uuid"`
	ID                int           `json:"id"`
	Title             string        `json:"title"`
	Description       string        `json:"description"`
	State             string        `json:"state"`
	Draft             bool          `json:"draft"`
	Author            string        `json:"author"`
	SourceBranch      string        `json:"source_branch"`
	SourceCommit      string        `json:"source_commit"`
	DestBranch        string        `json:"dest_branch"`
	DestCommit        string        `json:"dest_commit"`
	MergeCommit       string        `json:"merge_commit,omitempty"`
	CloseSourceBranch bool          `json:"close_source_branch"`
	ClosedBy          string        `json:"closed_by,omitempty"`
	Reason            string        `json:"reason"`
	Reviewers         []string      `json:"reviewers"`
	CreatedOn         time.Time     `json:"created_on"`
	UpdatedOn         time.Time     `json:"updated_on"`
	Comments          []*commentRec `json:"comments"`
	Tasks             []*taskRec    `json:"tasks,omitempty"`
	Activity          []activityRec `json:"activity"`
}

// openTaskCount is what task_count shows: the unresolved tasks.
func (p *prRec) openTaskCount() int {
	n := 0
	for _, t := range p.Tasks {
		if t.State != "RESOLVED" {
			n++
		}
	}
	return n
}

func (p *prRec) comment(id int) *commentRec {
	for _, c := range p.Comments {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// reviewState is what each user's latest approval or changes-request says: "approved",
// "changes_requested", or absent once withdrawn (activity kinds "unapproval" and
// "changes_request_removed" withdraw; they are not listed by the activity endpoint).
func (p *prRec) reviewState() (order []string, states map[string]activityRec) {
	states = map[string]activityRec{}
	seen := map[string]bool{}
	for _, a := range p.Activity {
		switch a.Kind {
		case "approval", "changes_request":
			if !seen[a.User] {
				seen[a.User] = true
				order = append(order, a.User)
			}
			states[a.User] = a
		case "unapproval", "changes_request_removed":
			if cur, ok := states[a.User]; ok && (cur.Kind == "approval") == (a.Kind == "unapproval") {
				delete(states, a.User)
			}
		}
	}
	kept := order[:0]
	for _, u := range order {
		if _, ok := states[u]; ok {
			kept = append(kept, u)
		}
	}
	return kept, states
}

func (p *prRec) liveCommentCount() int {
	n := 0
	for _, c := range p.Comments {
		if !c.Deleted {
			n++
		}
	}
	return n
}

type hookRec struct {
	UUID                 string    `json:"uuid"`
	SubjectType          string    `json:"subject_type"` // "repository" or "workspace"
	SubjectUUID          string    `json:"subject_uuid"`
	URL                  string    `json:"url"`
	Description          string    `json:"description"`
	Events               []string  `json:"events"`
	Active               bool      `json:"active"`
	Secret               string    `json:"secret,omitempty"`
	SkipCertVerification bool      `json:"skip_cert_verification"`
	CreatedAt            time.Time `json:"created_at"`
}

// Tokens, refresh tokens and codes are stored as SHA-256 hashes so that the state file
// never holds a usable credential.
type tokenRec struct {
	Hash      string    `json:"hash"`
	User      string    `json:"user"`
	Consumer  string    `json:"consumer"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expires_at"`
	Revoked   bool      `json:"revoked"`
}

type refreshRec struct {
	Hash     string   `json:"hash"`
	User     string   `json:"user"`
	Consumer string   `json:"consumer"`
	Scopes   []string `json:"scopes"`
	Used     bool     `json:"used"`
	Revoked  bool     `json:"revoked"`
}

type codeRec struct {
	Hash      string    `json:"hash"`
	User      string    `json:"user"`
	Consumer  string    `json:"consumer"`
	ExpiresAt time.Time `json:"expires_at"`
	Used      bool      `json:"used"`
}

type state struct {
	Users         []*userRec      `json:"users"`
	Consumers     []*consumerRec  `json:"consumers"`
	Workspaces    []*workspaceRec `json:"workspaces"`
	Repositories  []*repoRec      `json:"repositories"`
	PullRequests  []*prRec        `json:"pull_requests"`
	Hooks         []*hookRec      `json:"hooks"`
	Tokens        []*tokenRec     `json:"tokens"`
	Refresh       []*refreshRec   `json:"refresh_tokens"`
	Codes         []*codeRec      `json:"codes"`
	NextCommentID int             `json:"next_comment_id"`
	NextTaskID    int             `json:"next_task_id,omitempty"`
	// NextRestrictionID hands out branch restriction ids (global, like Bitbucket's).
	NextRestrictionID int `json:"next_restriction_id,omitempty"`
}

// newTaskID hands out global task ids (states saved before tasks existed start at 1).
func (st *state) newTaskID() int {
	if st.NextTaskID < 1 {
		st.NextTaskID = 1
	}
	id := st.NextTaskID
	st.NextTaskID++
	return id
}

func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func braceUUID(u uuid.UUID) string { return "{" + u.String() + "}" }

func newUUID() string { return braceUUID(uuid.New()) }

// stableUUID derives a UUID from a name so that seeding twice gives the same identifiers.
func stableUUID(kind, name string) string {
	return braceUUID(uuid.NewSHA1(uuid.NameSpaceURL, []byte("gitsec-emulator:"+kind+":"+name)))
}

func loadState(dir string) (*state, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if errors.Is(err, os.ErrNotExist) {
		return &state{NextCommentID: 1000}, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read emulator state: %w", err)
	}
	st := &state{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, false, fmt.Errorf("decode emulator state %s: %w", filepath.Join(dir, stateFileName), err)
	}
	return st, true, nil
}

// save writes the state atomically: a crash leaves either the old or the new file.
func (st *state) save(dir string) error {
	st.prune(time.Now())
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode emulator state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".state-*.json")
	if err != nil {
		return fmt.Errorf("create temp state file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write temp state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync temp state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close temp state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFileName)); err != nil {
		return fmt.Errorf("replace state file: %w", err)
	}
	return nil
}

// prune drops credentials that can never be used again so the file does not grow forever.
func (st *state) prune(now time.Time) {
	keepTokens := st.Tokens[:0]
	for _, t := range st.Tokens {
		if now.Sub(t.ExpiresAt) < 24*time.Hour {
			keepTokens = append(keepTokens, t)
		}
	}
	st.Tokens = keepTokens
	keepCodes := st.Codes[:0]
	for _, c := range st.Codes {
		if !c.Used && now.Before(c.ExpiresAt) {
			keepCodes = append(keepCodes, c)
		}
	}
	st.Codes = keepCodes
	keepRefresh := st.Refresh[:0]
	for _, r := range st.Refresh {
		if !r.Used && !r.Revoked {
			keepRefresh = append(keepRefresh, r)
		}
	}
	st.Refresh = keepRefresh
}

func (st *state) user(name string) *userRec {
	for _, u := range st.Users {
		if u.Username == name || u.UUID == name || u.AccountID == name {
			return u
		}
	}
	return nil
}

func (st *state) userByEmail(email string) *userRec {
	for _, u := range st.Users {
		if strings.EqualFold(u.Email, email) {
			return u
		}
	}
	return nil
}

func (st *state) consumer(key string) *consumerRec {
	for _, c := range st.Consumers {
		if c.Key == key {
			return c
		}
	}
	return nil
}

// workspace accepts a slug or a brace UUID, like the real API.
func (st *state) workspace(id string) *workspaceRec {
	for _, w := range st.Workspaces {
		if w.Slug == id || strings.EqualFold(w.UUID, id) {
			return w
		}
	}
	return nil
}

func (st *state) workspaceByUUID(id string) *workspaceRec {
	for _, w := range st.Workspaces {
		if w.UUID == id {
			return w
		}
	}
	return nil
}

func (st *state) repo(ws *workspaceRec, id string) *repoRec {
	for _, r := range st.Repositories {
		if r.Workspace == ws.Slug && (r.Slug == id || strings.EqualFold(r.UUID, id)) {
			return r
		}
	}
	return nil
}

func (st *state) repoByUUID(id string) *repoRec {
	for _, r := range st.Repositories {
		if r.UUID == id {
			return r
		}
	}
	return nil
}

func (st *state) reposOf(ws *workspaceRec) []*repoRec {
	var out []*repoRec
	for _, r := range st.Repositories {
		if r.Workspace == ws.Slug {
			out = append(out, r)
		}
	}
	return out
}

func (st *state) pullRequest(repoUUID string, id int) *prRec {
	for _, p := range st.PullRequests {
		if p.RepoUUID == repoUUID && p.ID == id {
			return p
		}
	}
	return nil
}

func (st *state) pullRequestsOf(repoUUID string) []*prRec {
	var out []*prRec
	for _, p := range st.PullRequests {
		if p.RepoUUID == repoUUID {
			out = append(out, p)
		}
	}
	return out
}

func (st *state) hook(id string) *hookRec {
	for _, h := range st.Hooks {
		if strings.EqualFold(h.UUID, id) || strings.EqualFold(strings.Trim(h.UUID, "{}"), strings.Trim(id, "{}")) {
			return h
		}
	}
	return nil
}

func (st *state) role(ws *workspaceRec, username string) string {
	for _, m := range ws.Members {
		if m.Username == username {
			return m.Role
		}
	}
	return ""
}

func isAdminRole(role string) bool { return role == roleOwner || role == roleAdmin }

func (st *state) repoPermission(username string, r *repoRec) permission {
	ws := st.workspace(r.Workspace)
	if ws != nil && username != "" {
		switch st.role(ws, username) {
		case roleOwner, roleAdmin:
			return permAdmin
		case roleCollaborator:
			return permWrite
		case roleMember:
			return permRead
		}
	}
	if !r.IsPrivate {
		return permRead
	}
	return permNone
}

func (st *state) project(ws *workspaceRec, key string) *projectRec {
	for i := range ws.Projects {
		if strings.EqualFold(ws.Projects[i].Key, key) || ws.Projects[i].UUID == key {
			return &ws.Projects[i]
		}
	}
	return nil
}
