// Package prsite writes a snapshot's pull requests and repository metadata
// as a static, self-contained web site: index.html and one pr/<id>.html per
// pull request. The pages load nothing (no script, no network: a strict
// Content-Security-Policy) and show every text as stored, escaped by
// html/template: raw Markdown as preformatted text, never Bitbucket's
// rendered HTML, which is untrusted.
package prsite

import (
	"bufio"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/gitsec/gitsec/internal/archive"
)

//go:embed templates/*.html
var templateFiles embed.FS

var funcs = template.FuncMap{
	"name":  func(p *archive.Person) string { return p.Name() },
	"stamp": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"short": archive.ShortHash,
	// httpURL keeps only absolute http(s) links; html/template would
	// neutralise other schemes anyway, this drops the link altogether.
	"httpURL": httpURL,
	"section": func(s archive.SectionStatus) string {
		switch s.Status {
		case archive.SectionNotPermitted:
			return "not permitted (the backup app may not read this setting)"
		case archive.SectionNotAvailable:
			return "not available (the feature is off)"
		case archive.SectionFailed:
			if s.Detail != "" {
				return "could not be read: " + s.Detail
			}
			return "could not be read"
		}
		return s.Status
	},
	"threads": archive.ThreadComments,
	"reviews": func(pr *archive.PullRequestRecord) []archive.Review { return pr.Reviews() },
	"resolvedTasks": func(pr *archive.PullRequestRecord) int {
		_, resolved := pr.TaskCounts()
		return resolved
	},
	"branch": func(b archive.BranchRecord) string {
		s := b.Branch
		if b.Repository != "" {
			s = b.Repository + ":" + s
		}
		if b.Commit != "" {
			s += " @ " + archive.ShortHash(b.Commit)
		}
		return s
	},
}

var (
	indexPage = template.Must(template.New("").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/index.html"))
	prPage    = template.Must(template.New("").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/pr.html"))
)

func httpURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	return u.String()
}

// page is what every page's header shows.
type page struct {
	Title      string
	Repository string
	Snapshot   string
	Created    string
	Exported   string
}

type prPageData struct {
	page
	PR       *archive.PullRequestRecord
	Complete bool
	Reason   string
}

// summary is one pull request in the index.
type summary struct {
	ID                  int64
	Title               string
	State               string
	Draft               bool
	DeletedUpstream     bool
	Author              *archive.Person
	Source, Destination string
	Comments            int
	Tasks               int
	TasksResolved       int
	Updated             string
}

type group struct {
	State        string
	PullRequests []summary
}

type indexData struct {
	page
	Export       *archive.Export
	Metadata     *archive.RepositoryMetadata
	MetadataNote string
	PullRequests []summary
	Groups       []group
}

// Result says what Write wrote.
type Result struct {
	Index        string
	PullRequests int
	Export       *archive.Export
	// Metadata is false when the snapshot has no metadata export.
	Metadata bool
}

// Write renders snapshot m into dir (created if needed), reading its
// exports from st one pull request at a time. It returns archive.ErrNoExport
// (wrapped) when the snapshot has no pull request export.
func Write(ctx context.Context, st *archive.Store, m *archive.Manifest, dir string) (Result, error) {
	prExport := m.FindExport(archive.ExportPullRequests)
	if prExport == nil {
		return Result{}, fmt.Errorf("snapshot %s: pull requests: %w", m.ID, archive.ErrNoExport)
	}
	if err := os.MkdirAll(filepath.Join(dir, "pr"), 0o755); err != nil {
		return Result{}, fmt.Errorf("export html: %w", err)
	}
	head := page{
		Repository: m.Repository.FullName,
		Snapshot:   m.ID,
		Created:    m.Created.UTC().Format("2006-01-02 15:04 UTC"),
		Exported:   time.Now().UTC().Format("2006-01-02 15:04 UTC"),
	}
	idx := indexData{page: head}
	idx.Title = m.Repository.FullName + " pull requests (GitSec snapshot " + m.ID + ")"
	md, err := st.LoadMetadata(ctx, m)
	switch {
	case errors.Is(err, archive.ErrNoExport):
		idx.MetadataNote = "This snapshot has no metadata export (it was taken before exports existed)."
	case err != nil:
		return Result{}, err
	default:
		idx.Metadata = md
	}

	var e *archive.Export
	byState := map[string][]summary{}
	e, err = st.WalkSnapshotPullRequests(ctx, m, func(pr *archive.PullRequestRecord) error {
		if pr.ID <= 0 {
			return fmt.Errorf("pull request export holds invalid id %d", pr.ID)
		}
		data := prPageData{page: head, PR: pr, Complete: prExport.Complete, Reason: prExport.Reason}
		data.Title = "#" + strconv.FormatInt(pr.ID, 10) + " " + pr.Title + " · " + m.Repository.FullName
		if err := writeFile(filepath.Join(dir, "pr", strconv.FormatInt(pr.ID, 10)+".html"), func(w io.Writer) error {
			return prPage.ExecuteTemplate(w, "pr.html", data)
		}); err != nil {
			return err
		}
		total, resolved := pr.TaskCounts()
		s := summary{ID: pr.ID, Title: pr.Title, State: pr.State, Draft: pr.Draft, DeletedUpstream: pr.DeletedUpstream, Author: pr.Author,
			Source: pr.SourceName(), Destination: pr.Destination.Branch,
			Comments: pr.CommentCount(), Tasks: total, TasksResolved: resolved,
			Updated: pr.UpdatedOn.UTC().Format("2006-01-02 15:04")}
		idx.PullRequests = append(idx.PullRequests, s)
		byState[pr.State] = append(byState[pr.State], s)
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	idx.Export = e
	for _, state := range archive.PullRequestStates {
		idx.Groups = append(idx.Groups, group{State: state, PullRequests: newestFirst(byState[state])})
		delete(byState, state)
	}
	for _, state := range slices.Sorted(maps.Keys(byState)) { // states this build does not know
		idx.Groups = append(idx.Groups, group{State: state, PullRequests: newestFirst(byState[state])})
	}
	index := filepath.Join(dir, "index.html")
	if err := writeFile(index, func(w io.Writer) error { return indexPage.ExecuteTemplate(w, "index.html", idx) }); err != nil {
		return Result{}, err
	}
	return Result{Index: index, PullRequests: len(idx.PullRequests), Export: e, Metadata: md != nil}, nil
}

// newestFirst reverses id order: the newest pull requests head each group.
func newestFirst(list []summary) []summary {
	out := make([]summary, len(list))
	for i, s := range list {
		out[len(list)-1-i] = s
	}
	return out
}

func writeFile(path string, render func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("export html: %w", err)
	}
	bw := bufio.NewWriter(f)
	if err := render(bw); err != nil {
		f.Close()
		return fmt.Errorf("render %s: %w", filepath.Base(path), err)
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("export html: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export html: %w", err)
	}
	return nil
}
