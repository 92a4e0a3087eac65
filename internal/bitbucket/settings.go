package bitbucket

import (
	"context"
	"fmt"
	"net/http"
)

// Group is a workspace group named in a branch restriction.
type Group struct {
	Slug     string `json:"slug"`
	Name     string `json:"name"`
	FullSlug string `json:"full_slug,omitempty"`
}

// BranchRestriction is a branch permission or merge check (Atlassian's branchrestriction
// schema). Reading them needs repository admin rights: a read-only token gets 403.
type BranchRestriction struct {
	Type            string  `json:"type,omitempty"`
	ID              int64   `json:"id"`
	Kind            string  `json:"kind"`
	BranchMatchKind string  `json:"branch_match_kind"`
	BranchType      string  `json:"branch_type,omitempty"`
	Pattern         string  `json:"pattern"`
	Value           *int    `json:"value,omitempty"`
	Users           []User  `json:"users"`
	Groups          []Group `json:"groups"`
	Links           Links   `json:"links"`
}

// BranchingModelBranch is the development or production branch of a branching model. Name is
// empty (null upstream) when the branch tracks the main branch; IsValid is false while a named
// branch does not exist.
type BranchingModelBranch struct {
	Name          string `json:"name"`
	UseMainbranch bool   `json:"use_mainbranch"`
	IsValid       bool   `json:"is_valid"`
	Enabled       *bool  `json:"enabled,omitempty"`
}

// BranchType is one prefix of a branching model (feature/, release/, ...).
type BranchType struct {
	Kind    string `json:"kind"`
	Prefix  string `json:"prefix"`
	Enabled *bool  `json:"enabled,omitempty"`
}

// BranchingModel is a repository's effective branching model settings.
type BranchingModel struct {
	Type        string                `json:"type,omitempty"`
	Development *BranchingModelBranch `json:"development,omitempty"`
	Production  *BranchingModelBranch `json:"production,omitempty"`
	BranchTypes []BranchType          `json:"branch_types"`
}

// ListBranchRestrictions returns the branch permissions of a repository.
func (c *Client) ListBranchRestrictions(ctx context.Context, workspace, slug string) ([]BranchRestriction, error) {
	all, err := listAll[BranchRestriction](ctx, c, repositoryPath(workspace, slug)+"/branch-restrictions", pagelenQuery(pagelenRefs))
	if err != nil {
		return nil, fmt.Errorf("list branch restrictions of %s/%s: %w", workspace, slug, err)
	}
	return all, nil
}

// GetBranchingModelSettings returns the repository's branching model settings (the effective
// model when the repository inherits its project's).
func (c *Client) GetBranchingModelSettings(ctx context.Context, workspace, slug string) (*BranchingModel, error) {
	var m BranchingModel
	if err := c.do(ctx, call{method: http.MethodGet, target: repositoryPath(workspace, slug) + "/branching-model/settings", out: &m}); err != nil {
		return nil, fmt.Errorf("get branching model of %s/%s: %w", workspace, slug, err)
	}
	return &m, nil
}

// ListDefaultReviewers returns the repository's default reviewers.
func (c *Client) ListDefaultReviewers(ctx context.Context, workspace, slug string) ([]User, error) {
	all, err := listAll[User](ctx, c, repositoryPath(workspace, slug)+"/default-reviewers", pagelenQuery(pagelenRefs))
	if err != nil {
		return nil, fmt.Errorf("list default reviewers of %s/%s: %w", workspace, slug, err)
	}
	return all, nil
}

// GetCommit returns one commit; hash may be abbreviated (Bitbucket answers with the full one).
func (c *Client) GetCommit(ctx context.Context, workspace, slug, hash string) (*Commit, error) {
	var cm Commit
	if err := c.do(ctx, call{method: http.MethodGet, target: repositoryPath(workspace, slug) + "/commit/" + escapeSegment(hash), out: &cm}); err != nil {
		return nil, fmt.Errorf("get commit %s of %s/%s: %w", hash, workspace, slug, err)
	}
	return &cm, nil
}
