package api

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// The API's response bodies. They are the contract scripts and the dashboard read (the OpenAPI
// document is checked against them), so they are declared here and filled from store rows,
// never taken from the store's types: a new column must not become a public field by accident.
// TestResponseShapesArePinned pins their JSON.

// Health is GET /healthz.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
}

// Readiness is GET /readyz: one status word per dependency.
type Readiness struct {
	Status string                 `json:"status"`
	Checks map[string]CheckResult `json:"checks"`
}

// CheckResult is what an unauthenticated caller may see of a dependency: a status word and a
// duration. The error itself names hosts, ports and database users, so it goes to the log.
type CheckResult struct {
	Status     string `json:"status"`
	DurationMS int64  `json:"duration_ms"`
}

// Tenant is the caller's tenant.
type Tenant struct {
	ID        uuid.UUID `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Me is GET /api/v1/me.
type Me struct {
	Tenant Tenant `json:"tenant"`
	// OpenAlerts counts GET /api/v1/alerts (a failed restore drill, for one), so a client that
	// only ever asks who it is still notices them.
	OpenAlerts int `json:"open_alerts"`
}

// CreatedToken is POST /api/v1/tokens: the only response that ever holds the token.
type CreatedToken struct {
	Token         string    `json:"token"`
	ID            uuid.UUID `json:"id"`
	Name          string    `json:"name"`
	DisplayPrefix string    `json:"display_prefix"`
	CreatedAt     time.Time `json:"created_at"`
	Note          string    `json:"note"`
}

// AuditEvent is one entry of the tenant's audit trail.
type AuditEvent struct {
	ID         int64           `json:"id"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	TargetType string          `json:"target_type,omitempty"`
	TargetID   string          `json:"target_id,omitempty"`
	Details    json.RawMessage `json:"details"`
	CreatedAt  time.Time       `json:"created_at"`
}

// AuditEvents is GET /api/v1/audit-events, newest first.
type AuditEvents struct {
	AuditEvents []AuditEvent `json:"audit_events"`
	NextCursor  string       `json:"next_cursor,omitempty"`
}

// ConnectLink is POST /api/v1/installations/bitbucket/connect.
type ConnectLink struct {
	AuthorizeURL string    `json:"authorize_url"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// WorkflowStarted answers a request that started or woke a workflow.
type WorkflowStarted struct {
	InstallationID uuid.UUID `json:"installation_id"`
	Status         string    `json:"status,omitempty"`
	WorkflowID     string    `json:"workflow_id"`
	// Backups says what happens to existing snapshots (uninstall only).
	Backups string `json:"backups,omitempty"`
}

// Connected answers the OAuth callback (JSON clients); Reconnected says the account was
// already connected to this tenant and its installation was reused.
type Connected struct {
	InstallationID uuid.UUID `json:"installation_id"`
	Status         string    `json:"status"`
	WorkflowID     string    `json:"workflow_id"`
	Reconnected    bool      `json:"reconnected"`
}

// Installation is one connected provider account with its workspaces.
type Installation struct {
	ID              uuid.UUID        `json:"id"`
	Provider        string           `json:"provider"`
	AccountUUID     string           `json:"account_uuid"`
	AccountName     string           `json:"account_name"`
	Status          string           `json:"status"`
	StatusMessage   string           `json:"status_message"`
	DefaultIncluded bool             `json:"default_included"`
	Progress        json.RawMessage  `json:"progress"`
	CreatedAt       time.Time        `json:"created_at"`
	UpdatedAt       time.Time        `json:"updated_at"`
	Repositories    RepositoryCounts `json:"repositories"`
	Account         Account          `json:"account"`
	Workspaces      []Workspace      `json:"workspaces"`
	// Webhooks is the installation's webhook health (GET /api/v1/installations/{id} only).
	Webhooks *WebhookHealth `json:"webhooks,omitempty"`
	// RestoreApp says whether the Restore App is installed (GET /api/v1/installations/{id} only).
	RestoreApp *RestoreAppGrant `json:"restore_app,omitempty"`
}

// WebhookHealth is an installation's webhook traffic over the last 24 hours.
type WebhookHealth struct {
	LastDeliveryAt *time.Time `json:"last_delivery_at"`
	Deliveries24h  int        `json:"deliveries_24h"`
	// Unprocessed counts stored deliveries not acted on yet (waiting for Temporal).
	Unprocessed int `json:"unprocessed"`
	// Rejected24h counts refused deliveries by reason (rejected_signature, malformed, too_large).
	Rejected24h map[string]int `json:"rejected_24h"`
}

// WebhookDelivery is one received delivery (GET /api/v1/installations/{id}/webhook-deliveries).
type WebhookDelivery struct {
	ID             uuid.UUID  `json:"id"`
	Event          string     `json:"event"`
	HookUUID       string     `json:"hook_uuid"`
	Attempt        int        `json:"attempt"`
	RepositoryUUID string     `json:"repository_uuid,omitempty"`
	ReceivedAt     time.Time  `json:"received_at"`
	ProcessedAt    *time.Time `json:"processed_at"`
	Result         string     `json:"result"`
	Tries          int        `json:"tries"`
	LastError      string     `json:"last_error,omitempty"`
}

// WebhookDeliveries lists an installation's most recent deliveries, newest first.
type WebhookDeliveries struct {
	Deliveries []WebhookDelivery `json:"deliveries"`
}

// RepositoryCounts counts an installation's repositories.
type RepositoryCounts struct {
	Total           int64 `json:"total"`
	Included        int64 `json:"included"`
	DeletedUpstream int64 `json:"deleted_upstream"`
}

// Account is the provider account an installation acts as.
type Account struct {
	UUID string `json:"uuid"`
	Name string `json:"name"`
}

// Workspace is one provider workspace of an installation.
type Workspace struct {
	ID                uuid.UUID `json:"id"`
	UUID              string    `json:"uuid"`
	Slug              string    `json:"slug"`
	Name              string    `json:"name"`
	Admin             bool      `json:"admin"`
	Status            string    `json:"status"`
	StatusReason      string    `json:"status_reason,omitempty"`
	WebhookUUID       string    `json:"webhook_uuid,omitempty"`
	WebhookRegistered bool      `json:"webhook_registered"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// Installations is GET /api/v1/installations.
type Installations struct {
	Installations []Installation `json:"installations"`
}

// InstallationDetail is GET /api/v1/installations/{id}; ProgressSource says whether progress
// came from the running workflow or the database.
type InstallationDetail struct {
	Installation   Installation `json:"installation"`
	ProgressSource string       `json:"progress_source"`
}

// Repository is one repository of the tenant.
type Repository struct {
	ID               uuid.UUID `json:"id"`
	InstallationID   uuid.UUID `json:"installation_id"`
	Workspace        string    `json:"workspace"`
	UUID             string    `json:"uuid"`
	FullName         string    `json:"full_name"`
	Project          Project   `json:"project"`
	MainBranch       string    `json:"main_branch"`
	SizeBytes        int64     `json:"size_bytes"`
	IsPrivate        bool      `json:"is_private"`
	Included         bool      `json:"included"`
	Status           string    `json:"status"`
	LastBackupStatus string    `json:"last_backup_status"`
	// SnapshotCount counts the repository's recorded snapshots. StoredBytes is what its backups
	// cost in object storage: the sum of its snapshots' bytes_uploaded (each snapshot uploads
	// only the packs its fetch wrote), not the repository's size on Bitbucket (size_bytes).
	SnapshotCount int   `json:"snapshot_count"`
	StoredBytes   int64 `json:"stored_bytes"`
	// LastBackupError is why the last backup failed ("" after a good one).
	LastBackupError string     `json:"last_backup_error"`
	LastBackupAt    *time.Time `json:"last_backup_at"`
	LastCheckedAt   *time.Time `json:"last_checked_at"`
	LastSnapshotID  *string    `json:"last_snapshot_id"`
	// LastPushAt is when GitSec last received a push webhook; LastSnapshotAt when the latest
	// snapshot was committed. Behind is true while a push is not known to be in a snapshot (it
	// arrived after the last successful backup run started); excluded repositories are never
	// behind.
	LastPushAt     *time.Time `json:"last_push_at"`
	LastSnapshotAt *time.Time `json:"last_snapshot_at"`
	Behind         bool       `json:"behind"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
	// LastDrill is the repository's latest restore drill; null before the first.
	LastDrill *DrillStatus `json:"last_drill"`
}

// Project is the Bitbucket project a repository is in; both fields are "" while unknown.
type Project struct {
	Key  string `json:"key"`
	Name string `json:"name"`
}

// Repositories is GET /api/v1/repositories.
type Repositories struct {
	Repositories []Repository `json:"repositories"`
	// Total counts the repositories matching the filters on every page (the cursor aside).
	Total      int64  `json:"total"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// RepositoryDetail wraps one repository.
type RepositoryDetail struct {
	Repository Repository `json:"repository"`
}

// BulkInclusion is the outcome of POST .../repositories:bulk.
type BulkInclusion struct {
	MatchedInclude    int   `json:"matched_include"`
	MatchedExclude    int   `json:"matched_exclude"`
	ChangedToIncluded int64 `json:"changed_to_included"`
	ChangedToExcluded int64 `json:"changed_to_excluded"`
	DefaultIncluded   *bool `json:"default_included,omitempty"`
}

// BackupQueued is POST /api/v1/repositories/{id}/backups.
type BackupQueued struct {
	RepositoryID uuid.UUID `json:"repository_id"`
	WorkflowID   string    `json:"workflow_id"`
	Status       string    `json:"status"`
}

// BackupStatus is GET /api/v1/repositories/{id}/backup-status: the running workflow's state
// when one answers, else "idle" and the last outcome from the database.
type BackupStatus struct {
	RepositoryID     uuid.UUID               `json:"repository_id"`
	LastBackupStatus string                  `json:"last_backup_status"`
	LastBackupAt     *time.Time              `json:"last_backup_at"`
	LastSnapshotID   *string                 `json:"last_snapshot_id"`
	State            string                  `json:"state"`
	Live             *workflows.BackupStatus `json:"live,omitempty"`
}

// Snapshot is one recorded snapshot of a repository.
type Snapshot struct {
	ID            string    `json:"id"`
	RepositoryID  uuid.UUID `json:"repository_id"`
	ManifestKey   string    `json:"manifest_key"`
	Trigger       string    `json:"trigger"`
	ParentID      *string   `json:"parent_id"`
	Refs          int       `json:"refs"`
	Packs         int       `json:"packs"`
	BytesUploaded int64     `json:"bytes_uploaded"`
	TotalBytes    int64     `json:"total_bytes"`
	StartedAt     time.Time `json:"started_at"`
	FinishedAt    time.Time `json:"finished_at"`
	DurationMS    int64     `json:"duration_ms"`
	// PushedAt is when the oldest push a webhook-triggered snapshot covers was received (the
	// snapshot's recovery point lag is FinishedAt - PushedAt).
	PushedAt *time.Time `json:"pushed_at"`
	// PullRequests summarises the snapshot's pull request export (GET /api/v1/snapshots/{id}
	// only, and only when the snapshot has one).
	PullRequests *ExportStatus `json:"pull_requests,omitempty"`
	// LastDrill is the snapshot's latest restore drill; null when it was never drilled.
	LastDrill *DrillStatus `json:"last_drill"`
	// LegalHold is set while the snapshot is under legal hold (retention never forgets it);
	// null otherwise.
	LegalHold *LegalHold `json:"legal_hold"`
}

// LegalHold says who put a snapshot under legal hold, when and why.
type LegalHold struct {
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// DrillStatus says how a restore drill went (docs/restore.md#restore-drills): status running,
// passed or failed, and why it failed.
type DrillStatus struct {
	ID         uuid.UUID  `json:"id"`
	SnapshotID string     `json:"snapshot_id"`
	Status     string     `json:"status"`
	Trigger    string     `json:"trigger"`
	Reason     string     `json:"reason"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	DurationMS int64      `json:"duration_ms"`
}

// DrillStep is one step of a drill, in run order.
type DrillStep struct {
	Name       string `json:"name"`
	Status     string `json:"status"`
	DurationMS int64  `json:"duration_ms"`
	Detail     string `json:"detail"`
}

// Drill is one restore drill with its steps.
type Drill struct {
	DrillStatus
	RepositoryID uuid.UUID   `json:"repository_id"`
	FullName     string      `json:"full_name"`
	WorkflowID   string      `json:"workflow_id"`
	Steps        []DrillStep `json:"steps"`
}

// Drills is GET /api/v1/repositories/{id}/drills, newest first.
type Drills struct {
	Drills []Drill `json:"drills"`
}

// DrillDetail wraps one drill.
type DrillDetail struct {
	Drill Drill `json:"drill"`
}

// DrillStarted answers POST /api/v1/repositories/{id}/drills.
type DrillStarted struct {
	DrillID      uuid.UUID `json:"drill_id"`
	WorkflowID   string    `json:"workflow_id"`
	RepositoryID uuid.UUID `json:"repository_id"`
	SnapshotID   string    `json:"snapshot_id"`
	Status       string    `json:"status"`
}

// Alert is a condition someone should look at, listed until it clears.
type Alert struct {
	Kind         string    `json:"kind"`
	RepositoryID uuid.UUID `json:"repository_id"`
	FullName     string    `json:"full_name"`
	SnapshotID   string    `json:"snapshot_id"`
	DrillID      uuid.UUID `json:"drill_id"`
	Message      string    `json:"message"`
	Since        time.Time `json:"since"`
}

// Alerts is GET /api/v1/alerts, newest first.
type Alerts struct {
	Alerts []Alert `json:"alerts"`
}

// RecentActivity is GET /api/v1/activity: what needs attention, then what happened.
type RecentActivity struct {
	// Failing lists the backed-up repositories (included, active, installation not removed)
	// whose last backup failed, newest failure first, at most 100; FailingTotal counts them all.
	Failing      []FailingRepository `json:"failing"`
	FailingTotal int64               `json:"failing_total"`
	// Recent lists the snapshots of every repository, newest finished first, one page of them.
	Recent     []RecentBackup `json:"recent"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

// FailingRepository is a repository whose last backup failed: Error is the stored reason,
// FailedAt when it failed, LastBackupAt the last successful backup (null: never).
type FailingRepository struct {
	RepositoryID uuid.UUID  `json:"repository_id"`
	FullName     string     `json:"full_name"`
	Workspace    string     `json:"workspace"`
	LastBackupAt *time.Time `json:"last_backup_at"`
	FailedAt     *time.Time `json:"failed_at"`
	Error        string     `json:"error"`
}

// RecentBackup is one recorded snapshot in the activity feed.
type RecentBackup struct {
	SnapshotID    string    `json:"snapshot_id"`
	RepositoryID  uuid.UUID `json:"repository_id"`
	FullName      string    `json:"full_name"`
	Trigger       string    `json:"trigger"`
	StartedAt     time.Time `json:"started_at"`
	FinishedAt    time.Time `json:"finished_at"`
	DurationMS    int64     `json:"duration_ms"`
	RefsCount     int       `json:"refs_count"`
	BytesUploaded int64     `json:"bytes_uploaded"`
	TotalBytes    int64     `json:"total_bytes"`
}

// Snapshots is GET /api/v1/repositories/{id}/snapshots, newest first.
type Snapshots struct {
	Snapshots  []Snapshot `json:"snapshots"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// SnapshotDetail wraps one snapshot.
type SnapshotDetail struct {
	Snapshot Snapshot `json:"snapshot"`
}

// ExportStatus is a snapshot's pull request export at a glance: Complete is false when the
// backup run could not fetch everything (Reason says why); States counts pull requests per state.
type ExportStatus struct {
	Complete bool           `json:"complete"`
	Reason   string         `json:"reason"`
	States   map[string]int `json:"states"`
	Records  int            `json:"records"`
}

// The pull request responses reuse the backup format's records for branches, inline anchors and
// commits (docs/backup-format.md, versioned with the format), give people a fixed shape, and
// leave out Bitbucket's rendered HTML: it is untrusted, so clients render the raw Markdown.

// Person is a Bitbucket account as the export saw it; a deleted account is null. Name is how to
// show it (display name, else nickname, else UUID).
type Person struct {
	UUID        string `json:"uuid"`
	AccountID   string `json:"account_id"`
	Nickname    string `json:"nickname"`
	DisplayName string `json:"display_name"`
	Name        string `json:"name"`
}

// Participant is a reviewer or participant: Role REVIEWER or PARTICIPANT, State approved,
// changes_requested or "".
type Participant struct {
	User           *Person    `json:"user"`
	Role           string     `json:"role"`
	Approved       bool       `json:"approved"`
	State          string     `json:"state"`
	ParticipatedOn *time.Time `json:"participated_on"`
}

// Activity is one entry of a pull request's activity, newest first: Kind update, approval,
// changes_requested or comment (CommentID), or another kind Bitbucket sent, kept in Raw.
type Activity struct {
	Kind              string          `json:"kind"`
	Date              *time.Time      `json:"date"`
	User              *Person         `json:"user"`
	State             string          `json:"state"`
	Title             string          `json:"title"`
	Reason            string          `json:"reason"`
	SourceCommit      string          `json:"source_commit"`
	DestinationCommit string          `json:"destination_commit"`
	CommentID         int64           `json:"comment_id"`
	Raw               json.RawMessage `json:"raw,omitempty"`
}

// Resolution says who resolved a comment thread and when.
type Resolution struct {
	User      *Person   `json:"user"`
	CreatedOn time.Time `json:"created_on"`
}

// PullRequestSummary is one pull request in a listing: no comments, tasks or activity.
type PullRequestSummary struct {
	ID                int64                `json:"id"`
	Title             string               `json:"title"`
	State             string               `json:"state"`
	Draft             bool                 `json:"draft"`
	Author            *Person              `json:"author"`
	Source            archive.BranchRecord `json:"source"`
	Destination       archive.BranchRecord `json:"destination"`
	CreatedOn         time.Time            `json:"created_on"`
	UpdatedOn         time.Time            `json:"updated_on"`
	CommentCount      int                  `json:"comment_count"`
	TaskCount         int                  `json:"task_count"`
	ResolvedTaskCount int                  `json:"resolved_task_count"`
	Approvals         []*Person            `json:"approvals"`
	ChangesRequested  []*Person            `json:"changes_requested"`
	DeletedUpstream   bool                 `json:"deleted_upstream"`
}

// PullRequests is GET /api/v1/snapshots/{id}/pull-requests, in id order.
type PullRequests struct {
	PullRequests []PullRequestSummary `json:"pull_requests"`
	NextCursor   string               `json:"next_cursor,omitempty"`
	Export       ExportStatus         `json:"export"`
}

// PullRequest is one pull request with everything exported about it; Comments are the
// top-level comments, each with its replies nested.
type PullRequest struct {
	PullRequestSummary
	Description       string                 `json:"description"`
	MergeCommit       string                 `json:"merge_commit"`
	CloseSourceBranch bool                   `json:"close_source_branch"`
	ClosedBy          *Person                `json:"closed_by"`
	Reason            string                 `json:"reason"`
	Reviewers         []*Person              `json:"reviewers"`
	Participants      []Participant          `json:"participants"`
	Comments          []Comment              `json:"comments"`
	Tasks             []Task                 `json:"tasks"`
	Activity          []Activity             `json:"activity"`
	Commits           []archive.CommitRecord `json:"commits"`
	URL               string                 `json:"url"`
	PinnedRef         string                 `json:"pinned_ref"`
	// Gaps lists the parts that could not be exported and why.
	Gaps []string `json:"gaps"`
}

// Comment is one pull request comment with its replies.
type Comment struct {
	ID         int64                 `json:"id"`
	User       *Person               `json:"user"`
	Raw        string                `json:"raw"`
	CreatedOn  time.Time             `json:"created_on"`
	UpdatedOn  time.Time             `json:"updated_on"`
	Deleted    bool                  `json:"deleted"`
	Pending    bool                  `json:"pending"`
	Inline     *archive.InlineRecord `json:"inline"`
	Resolution *Resolution           `json:"resolution"`
	Replies    []Comment             `json:"replies"`
}

// Task is one pull request task; CommentID is the comment it was created on (0: none).
type Task struct {
	ID         int64      `json:"id"`
	State      string     `json:"state"`
	Raw        string     `json:"raw"`
	Creator    *Person    `json:"creator"`
	Pending    bool       `json:"pending"`
	CreatedOn  time.Time  `json:"created_on"`
	UpdatedOn  time.Time  `json:"updated_on"`
	ResolvedOn *time.Time `json:"resolved_on"`
	ResolvedBy *Person    `json:"resolved_by"`
	CommentID  int64      `json:"comment_id"`
}

// PullRequestDetail is GET /api/v1/snapshots/{id}/pull-requests/{number}.
type PullRequestDetail struct {
	PullRequest PullRequest  `json:"pull_request"`
	Export      ExportStatus `json:"export"`
}

// Metadata is GET /api/v1/snapshots/{id}/metadata: the repository's settings as exported.
type Metadata struct {
	Metadata *archive.RepositoryMetadata `json:"metadata"`
}

func exportStatusView(e *archive.Export) ExportStatus {
	states := map[string]int{}
	for k, v := range e.States {
		states[k] = v
	}
	return ExportStatus{Complete: e.Complete, Reason: e.Reason, States: states, Records: e.Records}
}

func pullRequestSummaryView(r *archive.PullRequestRecord) PullRequestSummary {
	total, resolved := r.TaskCounts()
	return PullRequestSummary{
		ID: r.ID, Title: r.Title, State: r.State, Draft: r.Draft, Author: personView(r.Author), Source: r.Source, Destination: r.Destination,
		CreatedOn: r.CreatedOn, UpdatedOn: r.UpdatedOn, CommentCount: r.CommentCount(), TaskCount: total, ResolvedTaskCount: resolved,
		Approvals: views(r.Approvers(), personView), ChangesRequested: views(r.ChangesRequesters(), personView), DeletedUpstream: r.DeletedUpstream,
	}
}

func pullRequestView(r *archive.PullRequestRecord) PullRequest {
	out := PullRequest{
		PullRequestSummary: pullRequestSummaryView(r),
		Description:        r.Description, MergeCommit: r.MergeCommit, CloseSourceBranch: r.CloseSourceBranch, ClosedBy: personView(r.ClosedBy),
		Reason: r.Reason, Reviewers: views(r.Reviewers, personView), Participants: views(r.Participants, participantView),
		Comments: commentViews(archive.ThreadComments(r.Comments)), Tasks: views(r.Tasks, taskView),
		Activity: views(r.Activity, activityView), Commits: orEmpty(r.Commits), URL: r.URL, PinnedRef: r.PinnedRef, Gaps: orEmpty(r.Gaps),
	}
	return out
}

func personView(p *archive.Person) *Person {
	if p == nil {
		return nil
	}
	return &Person{UUID: p.UUID, AccountID: p.AccountID, Nickname: p.Nickname, DisplayName: p.DisplayName, Name: p.Name()}
}

func participantView(p archive.ParticipantRecord) Participant {
	return Participant{User: personView(p.User), Role: p.Role, Approved: p.Approved, State: p.State, ParticipatedOn: p.ParticipatedOn}
}

func activityView(a archive.ActivityRecord) Activity {
	return Activity{Kind: a.Kind, Date: a.Date, User: personView(a.User), State: a.State, Title: a.Title, Reason: a.Reason,
		SourceCommit: a.SourceCommit, DestinationCommit: a.DestinationCommit, CommentID: a.Comment, Raw: a.Raw}
}

func taskView(t archive.TaskRecord) Task {
	return Task{ID: t.ID, State: t.State, Raw: t.Raw, Creator: personView(t.Creator), Pending: t.Pending, CreatedOn: t.CreatedOn,
		UpdatedOn: t.UpdatedOn, ResolvedOn: t.ResolvedOn, ResolvedBy: personView(t.ResolvedBy), CommentID: t.Comment}
}

func commentViews(threads []*archive.CommentThread) []Comment {
	out := make([]Comment, 0, len(threads))
	for _, th := range threads {
		c := th.Comment
		var res *Resolution
		if c.Resolution != nil {
			res = &Resolution{User: personView(c.Resolution.User), CreatedOn: c.Resolution.CreatedOn}
		}
		out = append(out, Comment{ID: c.ID, User: personView(c.User), Raw: c.Raw, CreatedOn: c.CreatedOn, UpdatedOn: c.UpdatedOn, Deleted: c.Deleted,
			Pending: c.Pending, Inline: c.Inline, Resolution: res, Replies: commentViews(th.Replies)})
	}
	return out
}

// orEmpty makes a nil list encode as [].
func orEmpty[T any](list []T) []T {
	if list == nil {
		return []T{}
	}
	return list
}

func tenantView(t store.Tenant) Tenant {
	return Tenant{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt}
}

func installationView(inst store.Installation, wss []store.Workspace) Installation {
	out := Installation{
		ID: inst.ID, Provider: inst.Provider, AccountUUID: inst.AccountUUID, AccountName: inst.AccountName,
		Status: inst.Status, StatusMessage: inst.StatusMessage, DefaultIncluded: inst.DefaultIncluded,
		Progress: inst.Progress, CreatedAt: inst.CreatedAt, UpdatedAt: inst.UpdatedAt,
		Repositories: RepositoryCounts{Total: inst.Repositories.Total, Included: inst.Repositories.Included, DeletedUpstream: inst.Repositories.Deleted},
		Account:      Account{UUID: inst.AccountUUID, Name: inst.AccountName},
		Workspaces:   make([]Workspace, 0, len(wss)),
	}
	for _, w := range wss {
		out.Workspaces = append(out.Workspaces, Workspace{
			ID: w.ID, UUID: w.ProviderUUID, Slug: w.Slug, Name: w.Name, Admin: w.IsAdmin, Status: w.Status,
			StatusReason: w.StatusReason, WebhookUUID: w.WebhookUUID, WebhookRegistered: w.WebhookRegistered, UpdatedAt: w.UpdatedAt,
		})
	}
	return out
}

func repositoryView(r store.Repository) Repository {
	return Repository{
		ID: r.ID, InstallationID: r.InstallationID, Workspace: r.Workspace, UUID: r.ProviderUUID, FullName: r.FullName,
		Project: Project{Key: r.ProjectKey, Name: r.ProjectName}, SnapshotCount: r.SnapshotCount, StoredBytes: r.StoredBytes,
		MainBranch: r.MainBranch, SizeBytes: r.SizeBytes, IsPrivate: r.IsPrivate, Included: r.Included, Status: r.Status,
		LastBackupStatus: r.LastBackupStatus, LastBackupError: r.LastBackupError, LastBackupAt: r.LastBackupAt, LastCheckedAt: r.LastCheckedAt,
		LastSnapshotID: r.LastSnapshotID, LastPushAt: r.LastPushAt, LastSnapshotAt: r.LastBackupAt, Behind: r.Included && r.Behind(),
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

func drillStatusView(d store.Drill) *DrillStatus {
	return &DrillStatus{ID: d.ID, SnapshotID: d.SnapshotID, Status: d.Status, Trigger: string(d.Trigger), Reason: d.Reason,
		StartedAt: d.StartedAt, FinishedAt: d.FinishedAt, DurationMS: d.DurationMS()}
}

func drillView(d store.Drill) Drill {
	steps := make([]DrillStep, 0, len(d.Steps))
	for _, s := range d.Steps {
		steps = append(steps, DrillStep{Name: s.Name, Status: s.Status, DurationMS: s.DurationMS, Detail: s.Detail})
	}
	return Drill{DrillStatus: *drillStatusView(d), RepositoryID: d.RepositoryID, FullName: d.FullName, WorkflowID: d.WorkflowID, Steps: steps}
}

func snapshotView(s store.Snapshot) Snapshot {
	return Snapshot{
		ID: s.ID, RepositoryID: s.RepositoryID, ManifestKey: s.ManifestKey, Trigger: string(s.Trigger), ParentID: s.ParentID,
		Refs: s.RefsCount, Packs: s.PacksCount, BytesUploaded: s.BytesUploaded, TotalBytes: s.TotalBytes,
		StartedAt: s.StartedAt, FinishedAt: s.FinishedAt, DurationMS: s.DurationMS, PushedAt: s.PushedAt,
		LegalHold: legalHoldView(s.LegalHold),
	}
}

func legalHoldView(h *store.LegalHold) *LegalHold {
	if h == nil {
		return nil
	}
	return &LegalHold{Reason: h.Reason, By: h.By, At: h.At}
}

func failingView(f store.FailingRepository) FailingRepository {
	return FailingRepository{RepositoryID: f.RepositoryID, FullName: f.FullName, Workspace: f.Workspace,
		LastBackupAt: f.LastBackupAt, FailedAt: f.FailedAt, Error: f.Error}
}

func recentBackupView(s store.RecentSnapshot) RecentBackup {
	return RecentBackup{
		SnapshotID: s.ID, RepositoryID: s.RepositoryID, FullName: s.FullName, Trigger: string(s.Trigger),
		StartedAt: s.StartedAt, FinishedAt: s.FinishedAt, DurationMS: s.DurationMS,
		RefsCount: s.RefsCount, BytesUploaded: s.BytesUploaded, TotalBytes: s.TotalBytes,
	}
}

func webhookDeliveryView(d store.WebhookDelivery) WebhookDelivery {
	return WebhookDelivery{
		ID: d.DeliveryUUID, Event: d.EventKey, HookUUID: d.HookUUID, Attempt: d.Attempt, RepositoryUUID: d.RepositoryUUID,
		ReceivedAt: d.ReceivedAt, ProcessedAt: d.ProcessedAt, Result: d.Result, Tries: d.Tries, LastError: d.LastError,
	}
}

func auditEventView(e store.AuditEvent) AuditEvent {
	return AuditEvent{ID: e.ID, Actor: e.Actor, Action: e.Action, TargetType: e.TargetType, TargetID: e.TargetID, Details: e.Details, CreatedAt: e.CreatedAt}
}

// views maps store rows to response items; the result is never nil, so lists encode as [].
func views[S, V any](rows []S, view func(S) V) []V {
	out := make([]V, 0, len(rows))
	for _, r := range rows {
		out = append(out, view(r))
	}
	return out
}
