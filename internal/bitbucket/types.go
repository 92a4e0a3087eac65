package bitbucket

import (
	"bytes"
	"encoding/json"
	"net/url"
	"time"
)

// The types below follow the recorded payloads in shared/reference/fixtures/rest. UUIDs keep
// their braces ("{7dd6...}") exactly as Bitbucket sends them. Unknown fields are ignored; the
// export objects (Repository, PullRequest, Comment, Activity) also keep their exact upstream
// JSON in Raw so backups can store what Bitbucket said, not only what this package models.

// Link is one entry of a links object.
type Link struct {
	Href string `json:"href"`
	Name string `json:"name,omitempty"`
}

// Links holds the link relations GitSec reads; Clone is a list, the others single links.
type Links struct {
	Self   Link   `json:"self"`
	HTML   Link   `json:"html"`
	Avatar Link   `json:"avatar"`
	Clone  []Link `json:"clone,omitempty"`
}

// Rendered is Bitbucket's markup triple used for descriptions, summaries and comment bodies.
type Rendered struct {
	Type   string `json:"type,omitempty"`
	Raw    string `json:"raw"`
	Markup string `json:"markup"`
	HTML   string `json:"html"`
}

// User is an account. Username only appears in pre-GDPR recordings; identify people by
// UUID or AccountID.
type User struct {
	Type        string    `json:"type"`
	UUID        string    `json:"uuid"`
	AccountID   string    `json:"account_id"`
	DisplayName string    `json:"display_name"`
	Nickname    string    `json:"nickname"`
	Username    string    `json:"username,omitempty"`
	CreatedOn   time.Time `json:"created_on"`
	Links       Links     `json:"links"`
}

// Workspace is a workspace; the /user/workspaces listing carries only type, uuid, slug, links.
type Workspace struct {
	Type      string    `json:"type"`
	UUID      string    `json:"uuid"`
	Slug      string    `json:"slug"`
	Name      string    `json:"name"`
	IsPrivate bool      `json:"is_private"`
	CreatedOn time.Time `json:"created_on"`
	UpdatedOn time.Time `json:"updated_on"`
	Links     Links     `json:"links"`
}

// WorkspaceAccess is one entry of GET /2.0/user/workspaces.
type WorkspaceAccess struct {
	Type          string    `json:"type"`
	Administrator bool      `json:"administrator"`
	Workspace     Workspace `json:"workspace"`
}

// Project groups repositories inside a workspace.
type Project struct {
	Type  string `json:"type"`
	Key   string `json:"key"`
	UUID  string `json:"uuid"`
	Name  string `json:"name"`
	Links Links  `json:"links"`
}

// MainBranch is the repository's default branch; nil on an empty repository.
type MainBranch struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

// Repository is a full repository object (GET) or the abbreviated one in webhooks, which
// lacks MainBranch, Size and clone links.
type Repository struct {
	Type        string      `json:"type"`
	UUID        string      `json:"uuid"`
	Name        string      `json:"name"`
	Slug        string      `json:"slug"`
	FullName    string      `json:"full_name"`
	Description string      `json:"description"`
	SCM         string      `json:"scm"`
	Language    string      `json:"language"`
	Website     string      `json:"website"`
	IsPrivate   bool        `json:"is_private"`
	Size        int64       `json:"size"`
	ForkPolicy  string      `json:"fork_policy"`
	HasIssues   bool        `json:"has_issues"`
	HasWiki     bool        `json:"has_wiki"`
	MainBranch  *MainBranch `json:"mainbranch"`
	Project     *Project    `json:"project"`
	Workspace   *Workspace  `json:"workspace"`
	Owner       *User       `json:"owner"`
	Parent      *Repository `json:"parent"`
	CreatedOn   time.Time   `json:"created_on"`
	UpdatedOn   time.Time   `json:"updated_on"`
	Links       Links       `json:"links"`

	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the exact upstream document in Raw.
func (r *Repository) UnmarshalJSON(data []byte) error {
	type plain Repository
	var p plain
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*r = Repository(p)
	r.Raw = keepRaw(data)
	return nil
}

// CloneLink returns the clone href named name ("https" or "ssh"). For https the user name
// Bitbucket embeds (the caller's account) is stripped, so the result can carry other
// credentials; GitSec normally builds clone URLs with Client.CloneURL instead.
func (r Repository) CloneLink(name string) string {
	for _, link := range r.Links.Clone {
		if link.Name != name {
			continue
		}
		if name != "https" {
			return link.Href
		}
		u, err := url.Parse(link.Href)
		if err != nil {
			return ""
		}
		u.User = nil
		return u.String()
	}
	return ""
}

// CommitAuthor is the git author line plus the matched Bitbucket account, if any.
type CommitAuthor struct {
	Type string `json:"type,omitempty"`
	Raw  string `json:"raw"`
	User *User  `json:"user,omitempty"`
}

// CommitRef is an abbreviated commit. In pull requests Hash is a 12-character short hash.
type CommitRef struct {
	Type  string `json:"type,omitempty"`
	Hash  string `json:"hash"`
	Links Links  `json:"links"`
}

// Commit is a commit as the REST API and push webhooks describe it.
type Commit struct {
	Type       string       `json:"type"`
	Hash       string       `json:"hash"`
	Date       time.Time    `json:"date"`
	Message    string       `json:"message"`
	Summary    *Rendered    `json:"summary,omitempty"`
	Author     CommitAuthor `json:"author"`
	Parents    []CommitRef  `json:"parents"`
	Repository *Repository  `json:"repository,omitempty"`
	Links      Links        `json:"links"`
}

// Ref is a branch or a tag. Tags add Message, Date and Tagger (annotated tags); branches add
// merge strategies.
type Ref struct {
	Type                 string        `json:"type"`
	Name                 string        `json:"name"`
	Target               Commit        `json:"target"`
	Message              string        `json:"message,omitempty"`
	Date                 time.Time     `json:"date"`
	Tagger               *CommitAuthor `json:"tagger,omitempty"`
	MergeStrategies      []string      `json:"merge_strategies,omitempty"`
	DefaultMergeStrategy string        `json:"default_merge_strategy,omitempty"`
	Links                Links         `json:"links"`
}

// Branch is a branch ref.
type Branch = Ref

// Tag is a tag ref.
type Tag = Ref

// HookSubject is the repository or workspace a webhook belongs to.
type HookSubject struct {
	Type     string `json:"type"`
	UUID     string `json:"uuid"`
	Name     string `json:"name"`
	FullName string `json:"full_name,omitempty"`
	Slug     string `json:"slug,omitempty"`
	Links    Links  `json:"links"`
}

// Hook is a webhook subscription. The secret is write-only upstream: only SecretSet tells
// whether one exists.
type Hook struct {
	Type                 string      `json:"type"`
	UUID                 string      `json:"uuid"`
	URL                  string      `json:"url"`
	Description          string      `json:"description"`
	SubjectType          string      `json:"subject_type,omitempty"`
	Subject              HookSubject `json:"subject"`
	Active               bool        `json:"active"`
	Events               []string    `json:"events"`
	CreatedAt            time.Time   `json:"created_at"`
	SecretSet            bool        `json:"secret_set"`
	SkipCertVerification bool        `json:"skip_cert_verification"`
	HistoryEnabled       bool        `json:"history_enabled"`
	Links                Links       `json:"links"`
}

// PullRequestBranch is a pull request's source or destination.
type PullRequestBranch struct {
	Branch struct {
		Name string `json:"name"`
	} `json:"branch"`
	Commit     *CommitRef  `json:"commit"`
	Repository *Repository `json:"repository"`
}

// Participant is a reviewer or participant of a pull request.
type Participant struct {
	Type           string    `json:"type,omitempty"`
	User           User      `json:"user"`
	Role           string    `json:"role"`
	Approved       bool      `json:"approved"`
	State          string    `json:"state"`
	ParticipatedOn time.Time `json:"participated_on"`
}

// Pull request states accepted by PullRequestQuery.States.
const (
	PullRequestOpen       = "OPEN"
	PullRequestMerged     = "MERGED"
	PullRequestDeclined   = "DECLINED"
	PullRequestSuperseded = "SUPERSEDED"
)

// PullRequest is a full pull request. Source, destination and merge commit hashes are
// 12-character abbreviations: resolve them against the mirrored git data.
type PullRequest struct {
	Type              string            `json:"type"`
	ID                int64             `json:"id"`
	Title             string            `json:"title"`
	Description       string            `json:"description"`
	Summary           Rendered          `json:"summary"`
	State             string            `json:"state"`
	Draft             bool              `json:"draft"`
	Author            *User             `json:"author"`
	Source            PullRequestBranch `json:"source"`
	Destination       PullRequestBranch `json:"destination"`
	MergeCommit       *CommitRef        `json:"merge_commit"`
	CloseSourceBranch bool              `json:"close_source_branch"`
	ClosedBy          *User             `json:"closed_by"`
	Reason            string            `json:"reason"`
	CreatedOn         time.Time         `json:"created_on"`
	UpdatedOn         time.Time         `json:"updated_on"`
	CommentCount      int               `json:"comment_count"`
	TaskCount         int               `json:"task_count"`
	Reviewers         []User            `json:"reviewers"`
	Participants      []Participant     `json:"participants"`
	Links             Links             `json:"links"`

	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the exact upstream document in Raw.
func (p *PullRequest) UnmarshalJSON(data []byte) error {
	type plain PullRequest
	var v plain
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*p = PullRequest(v)
	p.Raw = keepRaw(data)
	return nil
}

// PullRequestRef is the stub of a pull request embedded in comments and activity.
type PullRequestRef struct {
	Type  string `json:"type"`
	ID    int64  `json:"id"`
	Title string `json:"title"`
	Links Links  `json:"links"`
}

// InlineAnchor places a code comment on a file line.
type InlineAnchor struct {
	Path     string `json:"path"`
	From     *int   `json:"from"`
	To       *int   `json:"to"`
	Outdated bool   `json:"outdated"`
}

// CommentParent points a reply at the comment it answers.
type CommentParent struct {
	ID int64 `json:"id"`
}

// Comment is a pull request comment; deleted comments stay listed with Deleted set.
type Comment struct {
	Type        string          `json:"type"`
	ID          int64           `json:"id"`
	Content     Rendered        `json:"content"`
	User        *User           `json:"user"`
	CreatedOn   time.Time       `json:"created_on"`
	UpdatedOn   time.Time       `json:"updated_on"`
	Deleted     bool            `json:"deleted"`
	Pending     bool            `json:"pending"`
	Inline      *InlineAnchor   `json:"inline,omitempty"`
	Parent      *CommentParent  `json:"parent,omitempty"`
	PullRequest *PullRequestRef `json:"pullrequest,omitempty"`
	// Resolution is set while the comment thread is resolved.
	Resolution *CommentResolution `json:"resolution,omitempty"`
	Links      Links              `json:"links"`

	Raw json.RawMessage `json:"-"`
}

// CommentResolution says who resolved a comment thread and when (Atlassian's
// comment_resolution schema; no public recording exists).
type CommentResolution struct {
	Type      string    `json:"type"`
	User      *User     `json:"user"`
	CreatedOn time.Time `json:"created_on"`
}

// Task states.
const (
	TaskResolved   = "RESOLVED"
	TaskUnresolved = "UNRESOLVED"
)

// TaskComment is the comment a task is anchored on.
type TaskComment struct {
	Type  string `json:"type,omitempty"`
	ID    int64  `json:"id"`
	Links Links  `json:"links"`
}

// Task is a pull request task (Atlassian's pullrequest_comment_task schema; no public
// recording exists). ResolvedOn/ResolvedBy are set on resolved tasks, Comment on tasks
// created on a comment.
type Task struct {
	Type       string       `json:"type,omitempty"`
	ID         int64        `json:"id"`
	State      string       `json:"state"`
	Content    Rendered     `json:"content"`
	Creator    *User        `json:"creator"`
	Pending    bool         `json:"pending"`
	CreatedOn  time.Time    `json:"created_on"`
	UpdatedOn  time.Time    `json:"updated_on"`
	ResolvedOn *time.Time   `json:"resolved_on,omitempty"`
	ResolvedBy *User        `json:"resolved_by,omitempty"`
	Comment    *TaskComment `json:"comment,omitempty"`
	Links      Links        `json:"links"`

	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the exact upstream document in Raw.
func (t *Task) UnmarshalJSON(data []byte) error {
	type plain Task
	var v plain
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*t = Task(v)
	t.Raw = keepRaw(data)
	return nil
}

// UnmarshalJSON keeps the exact upstream document in Raw.
func (c *Comment) UnmarshalJSON(data []byte) error {
	type plain Comment
	var v plain
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*c = Comment(v)
	c.Raw = keepRaw(data)
	return nil
}

// PullRequestUpdate is the "update" kind of activity entry.
type PullRequestUpdate struct {
	State       string            `json:"state"`
	Title       string            `json:"title"`
	Description string            `json:"description"`
	Reason      string            `json:"reason"`
	Date        time.Time         `json:"date"`
	Author      *User             `json:"author"`
	Source      PullRequestBranch `json:"source"`
	Destination PullRequestBranch `json:"destination"`
}

// Approval is an approval or a changes-request: who and when.
type Approval struct {
	Date time.Time `json:"date"`
	User *User     `json:"user"`
}

// Activity is one entry of a pull request's activity log; exactly one of Update, Approval,
// Comment or ChangesRequested is set.
type Activity struct {
	PullRequest      PullRequestRef     `json:"pull_request"`
	Update           *PullRequestUpdate `json:"update,omitempty"`
	Approval         *Approval          `json:"approval,omitempty"`
	Comment          *Comment           `json:"comment,omitempty"`
	ChangesRequested *Approval          `json:"changes_requested,omitempty"`

	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the exact upstream document in Raw.
func (a *Activity) UnmarshalJSON(data []byte) error {
	type plain Activity
	var v plain
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*a = Activity(v)
	a.Raw = keepRaw(data)
	return nil
}

// Kind names which entry kind is set: "update", "approval", "comment", "changes_requested"
// or "" for a kind this package does not model (still preserved in Raw).
func (a Activity) Kind() string {
	switch {
	case a.Update != nil:
		return "update"
	case a.Approval != nil:
		return "approval"
	case a.Comment != nil:
		return "comment"
	case a.ChangesRequested != nil:
		return "changes_requested"
	}
	return ""
}

// DiffStatFile is one side of a diffstat entry; nil for added (Old) or removed (New) files.
type DiffStatFile struct {
	Type        string `json:"type"`
	Path        string `json:"path"`
	EscapedPath string `json:"escaped_path,omitempty"`
	Links       Links  `json:"links"`
}

// DiffStat is one file's change summary.
type DiffStat struct {
	Type         string        `json:"type"`
	Status       string        `json:"status"`
	LinesAdded   int           `json:"lines_added"`
	LinesRemoved int           `json:"lines_removed"`
	Old          *DiffStatFile `json:"old"`
	New          *DiffStatFile `json:"new"`
}

// keepRaw copies data, because the decoder reuses its buffer, and drops a bare null.
func keepRaw(data []byte) json.RawMessage {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return nil
	}
	return append(json.RawMessage(nil), trimmed...)
}
