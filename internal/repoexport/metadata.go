package repoexport

import (
	"context"
	"errors"
	"fmt"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/bitbucket"
)

// exportMetadata reads the repository object and its settings. It returns nil metadata only
// when the repository itself could not be read; a settings section that could not be read is
// recorded in the section (403: not permitted, which a read-only backup app usually is) and,
// unless it was a permission answer, also returned as the reason the export is incomplete.
func (e *Exporter) exportMetadata(ctx context.Context, req Request) (*archive.RepositoryMetadata, error) {
	ws, slug := req.Workspace, req.Slug
	repo, err := e.Client.GetRepository(ctx, ws, slug)
	if err != nil {
		return nil, fmt.Errorf("repository: %s", describe(err))
	}
	md := &archive.RepositoryMetadata{
		Format: archive.MetadataFormat, UUID: archive.NormalizeUUID(repo.UUID), FullName: repo.FullName,
		Slug: repo.Slug, Name: repo.Name, Description: repo.Description, Language: repo.Language,
		IsPrivate: repo.IsPrivate, ForkPolicy: repo.ForkPolicy, HasWiki: repo.HasWiki, HasIssues: repo.HasIssues,
		Website: repo.Website, SCM: repo.SCM, CreatedOn: timePtr(repo.CreatedOn), UpdatedOn: timePtr(repo.UpdatedOn),
		Workspace:          archive.WorkspaceRecord{Slug: ws},
		BranchRestrictions: archive.BranchRestrictionsSection{Items: []archive.BranchRestrictionRecord{}},
		BranchingModel:     archive.BranchingModelSection{BranchTypes: []archive.BranchTypeRecord{}},
		DefaultReviewers:   archive.DefaultReviewersSection{Users: []*archive.Person{}},
	}
	if repo.MainBranch != nil {
		md.MainBranch = repo.MainBranch.Name
	}
	if repo.Parent != nil {
		md.Parent = repo.Parent.FullName
	}
	if w := repo.Workspace; w != nil {
		md.Workspace = archive.WorkspaceRecord{UUID: w.UUID, Slug: w.Slug, Name: w.Name}
	}
	if p := repo.Project; p != nil {
		md.Project = &archive.ProjectRecord{UUID: p.UUID, Key: p.Key, Name: p.Name}
	}

	var failures []error
	section := func(name string, err error) archive.SectionStatus {
		switch {
		case err == nil:
			return archive.SectionStatus{Status: archive.SectionOK}
		case errors.Is(err, bitbucket.ErrForbidden):
			return archive.SectionStatus{Status: archive.SectionNotPermitted, Detail: "the backup app's token may not read " + name}
		case errors.Is(err, bitbucket.ErrNotFound):
			return archive.SectionStatus{Status: archive.SectionNotAvailable}
		}
		failures = append(failures, fmt.Errorf("%s: %s", name, describe(err)))
		return archive.SectionStatus{Status: archive.SectionFailed, Detail: describe(err)}
	}

	restrictions, err := e.Client.ListBranchRestrictions(ctx, ws, slug)
	md.BranchRestrictions.SectionStatus = section("branch restrictions", err)
	for _, r := range restrictions {
		rec := archive.BranchRestrictionRecord{ID: r.ID, Kind: r.Kind, BranchMatchKind: r.BranchMatchKind, BranchType: r.BranchType,
			Pattern: r.Pattern, Value: r.Value, Users: []*archive.Person{}, Groups: []string{}}
		for i := range r.Users {
			rec.Users = append(rec.Users, person(&r.Users[i]))
		}
		for _, g := range r.Groups {
			rec.Groups = append(rec.Groups, g.Slug)
		}
		md.BranchRestrictions.Items = append(md.BranchRestrictions.Items, rec)
	}

	model, err := e.Client.GetBranchingModelSettings(ctx, ws, slug)
	md.BranchingModel.SectionStatus = section("branching model", err)
	if err == nil {
		conv := func(b *bitbucket.BranchingModelBranch) *archive.BranchingModelBranch {
			if b == nil {
				return nil
			}
			return &archive.BranchingModelBranch{Name: b.Name, UseMainbranch: b.UseMainbranch, Enabled: b.Enabled}
		}
		md.BranchingModel.Development, md.BranchingModel.Production = conv(model.Development), conv(model.Production)
		for _, t := range model.BranchTypes {
			md.BranchingModel.BranchTypes = append(md.BranchingModel.BranchTypes,
				archive.BranchTypeRecord{Kind: t.Kind, Prefix: t.Prefix, Enabled: t.Enabled == nil || *t.Enabled})
		}
	}

	reviewers, err := e.Client.ListDefaultReviewers(ctx, ws, slug)
	md.DefaultReviewers.SectionStatus = section("default reviewers", err)
	for i := range reviewers {
		md.DefaultReviewers.Users = append(md.DefaultReviewers.Users, person(&reviewers[i]))
	}
	return md, errors.Join(failures...)
}
