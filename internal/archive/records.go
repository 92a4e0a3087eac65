package archive

import (
	"encoding/json"
	"time"
)

// The records below are the exported form of Bitbucket's pull requests and
// repository settings: normalised (no links, no paging artefacts), with
// fields in a fixed order so that unchanged data encodes to the same bytes.
// Text is stored exactly as Bitbucket returned it (raw Markdown and its
// rendered HTML); every reader that displays it must escape it.

// Person is a Bitbucket account as it appeared in the data. A deleted
// account is a nil *Person (Bitbucket sends null).
type Person struct {
	UUID        string `json:"uuid,omitempty"`
	AccountID   string `json:"account_id,omitempty"`
	Nickname    string `json:"nickname,omitempty"`
	DisplayName string `json:"display_name,omitempty"`
}

// Name is how a reader shows the person ("deleted user" for nil).
func (p *Person) Name() string {
	switch {
	case p == nil:
		return "(deleted user)"
	case p.DisplayName != "":
		return p.DisplayName
	case p.Nickname != "":
		return p.Nickname
	}
	return p.UUID
}

// PullRequestRecord is one pull request with everything attached to it.
type PullRequestRecord struct {
	ID          int64  `json:"id"`
	Title       string `json:"title"`
	State       string `json:"state"`
	Draft       bool   `json:"draft"`
	Description string `json:"description"`
	// DescriptionHTML is Bitbucket's rendering of Description (untrusted).
	DescriptionHTML   string       `json:"description_html,omitempty"`
	Author            *Person      `json:"author"`
	Source            BranchRecord `json:"source"`
	Destination       BranchRecord `json:"destination"`
	MergeCommit       string       `json:"merge_commit,omitempty"`
	CloseSourceBranch bool         `json:"close_source_branch"`
	ClosedBy          *Person      `json:"closed_by,omitempty"`
	// Reason is the close (decline) reason.
	Reason    string    `json:"reason,omitempty"`
	CreatedOn time.Time `json:"created_on"`
	UpdatedOn time.Time `json:"updated_on"`
	// Participants are reviewers and participants with their review state;
	// Reviewers are the requested reviewers.
	Reviewers    []*Person           `json:"reviewers"`
	Participants []ParticipantRecord `json:"participants"`
	Comments     []CommentRecord     `json:"comments"`
	Tasks        []TaskRecord        `json:"tasks"`
	Activity     []ActivityRecord    `json:"activity"`
	Commits      []CommitRecord      `json:"commits"`
	// URL is the pull request's page on Bitbucket when it was exported.
	URL string `json:"url,omitempty"`
	// PinnedRef is the GitSec ref (refs/gitsec/pull/<id>/head) that keeps
	// the source commit restorable when its branch is gone or in a fork.
	PinnedRef string `json:"pinned_ref,omitempty"`
	// DeletedUpstream is set when Bitbucket no longer has the pull request
	// (404 when fetched, or missing from a full listing); the record keeps
	// what was last exported.
	DeletedUpstream bool `json:"deleted_upstream,omitempty"`
	// Gaps lists the parts that could not be exported and why (for
	// example the commit list of a pull request whose fork is gone).
	Gaps []string `json:"gaps,omitempty"`
}

// BranchRecord is a pull request's source or destination.
type BranchRecord struct {
	Branch string `json:"branch"`
	// Commit is the full hash when it could be resolved, else Bitbucket's
	// 12-character abbreviation (CommitResolved false).
	Commit         string `json:"commit,omitempty"`
	CommitResolved bool   `json:"commit_resolved"`
	Repository     string `json:"repository,omitempty"`
	RepositoryUUID string `json:"repository_uuid,omitempty"`
}

// ParticipantRecord is one reviewer or participant.
type ParticipantRecord struct {
	User *Person `json:"user"`
	// Role is REVIEWER or PARTICIPANT; State approved, changes_requested or
	// empty.
	Role           string     `json:"role"`
	Approved       bool       `json:"approved"`
	State          string     `json:"state,omitempty"`
	ParticipatedOn *time.Time `json:"participated_on,omitempty"`
}

// CommentRecord is one comment; replies name their parent.
type CommentRecord struct {
	ID        int64     `json:"id"`
	Parent    int64     `json:"parent,omitempty"`
	User      *Person   `json:"user"`
	Raw       string    `json:"raw"`
	HTML      string    `json:"html,omitempty"`
	CreatedOn time.Time `json:"created_on"`
	UpdatedOn time.Time `json:"updated_on"`
	Deleted   bool      `json:"deleted"`
	Pending   bool      `json:"pending"`
	// Inline anchors a code comment: From is the line in the old file, To in
	// the new one (either may be absent).
	Inline     *InlineRecord     `json:"inline,omitempty"`
	Resolution *ResolutionRecord `json:"resolution,omitempty"`
}

// InlineRecord is a code comment's anchor.
type InlineRecord struct {
	Path     string `json:"path"`
	From     *int   `json:"from,omitempty"`
	To       *int   `json:"to,omitempty"`
	Outdated bool   `json:"outdated,omitempty"`
}

// ResolutionRecord says who resolved a comment thread and when.
type ResolutionRecord struct {
	User      *Person   `json:"user"`
	CreatedOn time.Time `json:"created_on"`
}

// TaskRecord is one pull request task.
type TaskRecord struct {
	ID         int64      `json:"id"`
	State      string     `json:"state"`
	Raw        string     `json:"raw"`
	HTML       string     `json:"html,omitempty"`
	Creator    *Person    `json:"creator"`
	Pending    bool       `json:"pending"`
	CreatedOn  time.Time  `json:"created_on"`
	UpdatedOn  time.Time  `json:"updated_on"`
	ResolvedOn *time.Time `json:"resolved_on,omitempty"`
	ResolvedBy *Person    `json:"resolved_by,omitempty"`
	// Comment is the comment the task was created on (0: none).
	Comment int64 `json:"comment,omitempty"`
}

// Activity kinds.
const (
	ActivityUpdate           = "update"
	ActivityApproval         = "approval"
	ActivityChangesRequested = "changes_requested"
	ActivityComment          = "comment"
)

// ActivityRecord is one entry of a pull request's activity stream, newest
// first as Bitbucket lists it.
type ActivityRecord struct {
	Kind string     `json:"kind"`
	Date *time.Time `json:"date,omitempty"`
	User *Person    `json:"user"`
	// Update entries: the state, title and branches after the update.
	State             string `json:"state,omitempty"`
	Title             string `json:"title,omitempty"`
	Reason            string `json:"reason,omitempty"`
	SourceCommit      string `json:"source_commit,omitempty"`
	DestinationCommit string `json:"destination_commit,omitempty"`
	// Comment entries: the comment's id (its text is in Comments).
	Comment int64 `json:"comment,omitempty"`
	// Raw keeps an entry of a kind this format does not model.
	Raw json.RawMessage `json:"raw,omitempty"`
}

// CommitRecord is one commit of a pull request.
type CommitRecord struct {
	Hash    string    `json:"hash"`
	Date    time.Time `json:"date"`
	Author  string    `json:"author"`
	Message string    `json:"message"`
}

// RepositoryMetadata is a repository's settings at the time of the snapshot.
type RepositoryMetadata struct {
	Format      string     `json:"format"`
	UUID        string     `json:"uuid"`
	FullName    string     `json:"full_name"`
	Slug        string     `json:"slug"`
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Language    string     `json:"language,omitempty"`
	MainBranch  string     `json:"main_branch,omitempty"`
	IsPrivate   bool       `json:"is_private"`
	ForkPolicy  string     `json:"fork_policy,omitempty"`
	HasWiki     bool       `json:"has_wiki"`
	HasIssues   bool       `json:"has_issues"`
	Website     string     `json:"website,omitempty"`
	SCM         string     `json:"scm,omitempty"`
	CreatedOn   *time.Time `json:"created_on,omitempty"`
	UpdatedOn   *time.Time `json:"updated_on,omitempty"`
	// Parent is the repository this one was forked from ("" if none).
	Parent    string          `json:"parent,omitempty"`
	Workspace WorkspaceRecord `json:"workspace"`
	Project   *ProjectRecord  `json:"project,omitempty"`
	// The sections below need more than read access on some accounts; each
	// says whether it could be read.
	BranchRestrictions BranchRestrictionsSection `json:"branch_restrictions"`
	BranchingModel     BranchingModelSection     `json:"branching_model"`
	DefaultReviewers   DefaultReviewersSection   `json:"default_reviewers"`
}

// WorkspaceRecord is the workspace a repository belongs to.
type WorkspaceRecord struct {
	UUID string `json:"uuid,omitempty"`
	Slug string `json:"slug"`
	Name string `json:"name,omitempty"`
}

// ProjectRecord is the project a repository belongs to.
type ProjectRecord struct {
	UUID string `json:"uuid,omitempty"`
	Key  string `json:"key"`
	Name string `json:"name,omitempty"`
}

// Section states.
const (
	SectionOK           = "ok"
	SectionNotPermitted = "not_permitted"
	SectionNotAvailable = "not_available"
	SectionFailed       = "failed"
)

// SectionStatus says whether a section was read: ok, not_permitted (403),
// not_available (404: the feature is off) or failed (Detail says why).
type SectionStatus struct {
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// BranchRestrictionsSection holds the repository's branch permissions.
type BranchRestrictionsSection struct {
	SectionStatus
	Items []BranchRestrictionRecord `json:"items"`
}

// BranchRestrictionRecord is one branch permission or merge check.
type BranchRestrictionRecord struct {
	ID              int64     `json:"id"`
	Kind            string    `json:"kind"`
	BranchMatchKind string    `json:"branch_match_kind,omitempty"`
	BranchType      string    `json:"branch_type,omitempty"`
	Pattern         string    `json:"pattern,omitempty"`
	Value           *int      `json:"value,omitempty"`
	Users           []*Person `json:"users"`
	Groups          []string  `json:"groups"`
}

// BranchingModelSection holds the repository's branching model.
type BranchingModelSection struct {
	SectionStatus
	Development *BranchingModelBranch `json:"development,omitempty"`
	Production  *BranchingModelBranch `json:"production,omitempty"`
	BranchTypes []BranchTypeRecord    `json:"branch_types"`
}

// BranchingModelBranch is the development or production branch.
type BranchingModelBranch struct {
	Name          string `json:"name,omitempty"`
	UseMainbranch bool   `json:"use_mainbranch"`
	// Enabled is set for the production branch, which can be switched off.
	Enabled *bool `json:"enabled,omitempty"`
}

// BranchTypeRecord is one branch prefix of the branching model.
type BranchTypeRecord struct {
	Kind    string `json:"kind"`
	Prefix  string `json:"prefix"`
	Enabled bool   `json:"enabled"`
}

// DefaultReviewersSection lists the repository's default reviewers.
type DefaultReviewersSection struct {
	SectionStatus
	Users []*Person `json:"users"`
}
