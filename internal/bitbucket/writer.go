package bitbucket

import (
	"context"
	"fmt"
	"net/http"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// Writer is a client holding the Restore App's write grant. The backup app's *Client has no
// method that changes a repository, so a backup code path cannot write to Bitbucket even by
// mistake: only code handed a Writer (built from the restore grant) can create repositories,
// change their settings, open pull requests or push. It reads like a Client too.
type Writer struct {
	*Client
}

// NewWriter builds the Restore App's client; opts.TokenSource must carry the restore grant.
func NewWriter(opts Options) *Writer { return &Writer{Client: New(opts)} }

// PushAuth returns the credentials of one push (x-token-auth + the restore token), spending
// one unit of the git budget; see GitAuth.
func (w *Writer) PushAuth(ctx context.Context) (*githttp.BasicAuth, error) {
	return w.GitAuth(ctx)
}

// WithPushAuth runs one push or ls-remote with the restore token; a 401 forces one refresh as
// WithGitAuth does.
func (w *Writer) WithPushAuth(ctx context.Context, op func(*githttp.BasicAuth) error) error {
	return w.WithGitAuth(ctx, op)
}

type createRepositoryBody struct {
	SCM string `json:"scm"`
	CreateRepositoryRequest
	Project *struct {
		Key string `json:"key"`
	} `json:"project,omitempty"`
}

// CreateRepository creates an empty git repository (restore). It is not retried on 5xx: the
// repository may exist already, which the caller detects by GetRepository.
func (w *Writer) CreateRepository(ctx context.Context, workspace, slug string, req CreateRepositoryRequest) (*Repository, error) {
	body := createRepositoryBody{SCM: "git", CreateRepositoryRequest: req}
	if req.ProjectKey != "" {
		body.Project = &struct {
			Key string `json:"key"`
		}{Key: req.ProjectKey}
	}
	var repo Repository
	if err := w.do(ctx, call{method: http.MethodPost, target: repositoryPath(workspace, slug), body: body, out: &repo}); err != nil {
		return nil, fmt.Errorf("create repository %s/%s: %w", workspace, slug, err)
	}
	return &repo, nil
}

// UpdateRepositoryRequest changes a repository's settings; nil fields are left as they are.
type UpdateRepositoryRequest struct {
	Description *string     `json:"description,omitempty"`
	MainBranch  *branchName `json:"mainbranch,omitempty"`
}

// MainBranchName sets UpdateRepositoryRequest.MainBranch.
func MainBranchName(name string) *branchName { return &branchName{Name: name} }

// UpdateRepository changes an existing repository's description or main branch (restore).
// A PUT of the same values is idempotent, so it is retried like a read.
func (w *Writer) UpdateRepository(ctx context.Context, workspace, slug string, req UpdateRepositoryRequest) (*Repository, error) {
	var repo Repository
	if err := w.do(ctx, call{method: http.MethodPut, target: repositoryPath(workspace, slug), body: req, out: &repo}); err != nil {
		return nil, fmt.Errorf("update repository %s/%s: %w", workspace, slug, err)
	}
	return &repo, nil
}

// CreateBranchRestrictionRequest is one branch permission as the backup recorded it.
type CreateBranchRestrictionRequest struct {
	Kind            string `json:"kind"`
	BranchMatchKind string `json:"branch_match_kind"`
	BranchType      string `json:"branch_type,omitempty"`
	Pattern         string `json:"pattern,omitempty"`
	Value           *int   `json:"value,omitempty"`
	Users           []User `json:"users"`
	Groups          []any  `json:"groups"`
}

// CreateBranchRestriction adds a branch permission (restore); it needs repository:admin and
// admin rights on the repository.
func (w *Writer) CreateBranchRestriction(ctx context.Context, workspace, slug string, req CreateBranchRestrictionRequest) (*BranchRestriction, error) {
	if req.Users == nil {
		req.Users = []User{}
	}
	if req.Groups == nil {
		req.Groups = []any{}
	}
	var out BranchRestriction
	if err := w.do(ctx, call{method: http.MethodPost, target: repositoryPath(workspace, slug) + "/branch-restrictions", body: req, out: &out}); err != nil {
		return nil, fmt.Errorf("create branch restriction %s %s in %s/%s: %w", req.Kind, req.Pattern, workspace, slug, err)
	}
	return &out, nil
}
