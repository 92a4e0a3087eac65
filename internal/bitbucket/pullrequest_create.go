package bitbucket

import (
	"context"
	"fmt"
	"net/http"
)

// CreatePullRequestRequest is the body of POST /2.0/repositories/{workspace}/{slug}/pullrequests
// for a pull request between two branches of that repository (restore). An empty
// DestinationBranch means the repository's main branch, as Bitbucket does.
type CreatePullRequestRequest struct {
	Title             string
	Description       string
	SourceBranch      string
	DestinationBranch string
	CloseSourceBranch bool
	Draft             bool
}

type branchName struct {
	Name string `json:"name"`
}

type prEndpointBody struct {
	Branch branchName `json:"branch"`
}

type createPullRequestBody struct {
	Title             string          `json:"title"`
	Description       string          `json:"description,omitempty"`
	Source            prEndpointBody  `json:"source"`
	Destination       *prEndpointBody `json:"destination,omitempty"`
	CloseSourceBranch bool            `json:"close_source_branch"`
	Draft             bool            `json:"draft"`
}

// CreatePullRequest opens a pull request and returns it (201). Like every POST it is retried
// only on 429, which Bitbucket answers before doing any work: after a 5xx or a lost answer the
// pull request may exist, and only the caller can tell whether to try again.
func (w *Writer) CreatePullRequest(ctx context.Context, workspace, slug string, req CreatePullRequestRequest) (*PullRequest, error) {
	body := createPullRequestBody{Title: req.Title, Description: req.Description,
		Source:            prEndpointBody{Branch: branchName{Name: req.SourceBranch}},
		CloseSourceBranch: req.CloseSourceBranch, Draft: req.Draft}
	if req.DestinationBranch != "" {
		body.Destination = &prEndpointBody{Branch: branchName{Name: req.DestinationBranch}}
	}
	var pr PullRequest
	if err := w.do(ctx, call{method: http.MethodPost, target: repositoryPath(workspace, slug) + "/pullrequests", body: body, out: &pr}); err != nil {
		return nil, fmt.Errorf("create pull request %s -> %s in %s/%s: %w", req.SourceBranch, req.DestinationBranch, workspace, slug, err)
	}
	return &pr, nil
}
