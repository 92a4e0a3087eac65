// Package repoexport exports what a repository has besides git data (pull requests with their
// comments, tasks, activity and commits, and the repository's settings) from Bitbucket into the
// backup format's export objects (internal/archive). Exports are incremental: after the first
// one, only pull requests updated since the previous export's high-water mark are fetched and
// merged into the previous records, and an unchanged export is the previous object.
package repoexport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/gitmirror"
)

// Settings tune the export step.
type Settings struct {
	// FullEvery re-lists every pull request on every FullEvery-th export (a reconciliation that
	// finds what incremental listings missed, and PRs deleted upstream). Default 24.
	FullEvery int
	// Overlap is subtracted from the high-water mark when listing updated pull requests, so a
	// PR updated while the previous export ran is not missed. Default 2 minutes.
	Overlap time.Duration
	// MaxDuration bounds one export step; what is not fetched by then (rate limits) is left to
	// the next run and the export is marked incomplete. Default 10 minutes.
	MaxDuration time.Duration
	// Concurrency is how many pull requests are fetched at once. Default 4.
	Concurrency int
}

func (s Settings) withDefaults() Settings {
	if s.FullEvery <= 0 {
		s.FullEvery = 24
	}
	if s.Overlap <= 0 {
		s.Overlap = 2 * time.Minute
	}
	if s.MaxDuration <= 0 {
		s.MaxDuration = 10 * time.Minute
	}
	if s.Concurrency <= 0 {
		s.Concurrency = 4
	}
	return s
}

// Request is one export of one repository.
type Request struct {
	Repo            archive.RepoKey
	Workspace, Slug string
	// Previous is the latest committed snapshot (nil: none); its exports are the base of an
	// incremental export.
	Previous *archive.Manifest
	// Refs are the refs of the snapshot being made: full hashes that Bitbucket's 12-character
	// abbreviations resolve against, and the branches whose absence makes a PR's source worth
	// pinning.
	Refs gitmirror.RefMap
	// Pins are the snapshot's pins: a record whose source commit is pinned names its ref.
	Pins gitmirror.RefMap
	// PullRequests are PRs a webhook named: fetched again even when their updated_on did not
	// move (an approval, for example).
	PullRequests []int64
	// Progress, when set, is told how many PRs are fetched of how many to fetch.
	Progress func(done, total int)
}

// Result is what an export step produced.
type Result struct {
	// Exports are the manifest entries (pull requests, metadata) for the new snapshot.
	Exports []archive.Export
	// RESTCalls counts every Bitbucket request of the step.
	RESTCalls int64
}

// Exporter runs export steps against one installation's client.
type Exporter struct {
	Client   *bitbucket.Client
	Archive  *archive.Store
	Settings Settings
	Logger   *slog.Logger
}

// Run exports the repository's pull requests and metadata. Failures talking to Bitbucket never
// fail the step: they leave an incomplete export saying why. Only storage failures are errors.
func (e *Exporter) Run(ctx context.Context, req Request) (Result, error) {
	set := e.Settings.withDefaults()
	log := e.Logger
	if log == nil {
		log = slog.Default()
	}
	counter := &bitbucket.RequestCounter{}
	apiCtx, cancel := context.WithTimeout(bitbucket.WithRequestCounter(ctx, counter), set.MaxDuration)
	defer cancel()

	var res Result
	md, mdErr := e.exportMetadata(apiCtx, req)
	prs, err := e.exportPullRequests(apiCtx, ctx, req, set, log)
	if err != nil {
		return res, err
	}
	res.RESTCalls = counter.Count()
	prs.entry.Run.RESTCalls = int(counter.Count())

	if md != nil {
		data, err := archive.EncodeMetadata(md)
		if err != nil {
			return res, err
		}
		entry, _, err := e.Archive.PutExport(ctx, req.Repo, archive.ExportMetadata, data)
		if err != nil {
			return res, err
		}
		entry.Records, entry.Complete = 1, mdErr == nil
		if mdErr != nil {
			entry.Reason = mdErr.Error()
		}
		res.Exports = append(res.Exports, entry)
	} else if prev := previousExport(req.Previous, archive.ExportMetadata); prev == nil {
		log.WarnContext(ctx, "repository metadata not exported", "repository", req.Workspace+"/"+req.Slug, "reason", mdErr)
	} else {
		// The repository could not be read at all: keep the previous settings, marked behind.
		kept := *prev
		kept.Complete, kept.Reason = false, "not refreshed: "+mdErr.Error()
		res.Exports = append(res.Exports, kept)
	}

	data, err := archive.EncodePullRequests(prs.records)
	if err != nil {
		return res, err
	}
	entry, written, err := e.Archive.PutExport(ctx, req.Repo, archive.ExportPullRequests, data)
	if err != nil {
		return res, err
	}
	run := prs.entry.Run
	run.Written = written
	prs.entry.Kind, prs.entry.Key, prs.entry.File, prs.entry.Format = entry.Kind, entry.Key, entry.File, entry.Format
	res.Exports = append(res.Exports, prs.entry)
	log.InfoContext(ctx, "export done", "repository", req.Workspace+"/"+req.Slug, "full", run.Full,
		"pull_requests", len(prs.records), "listed", run.Listed, "fetched", run.Fetched, "rest_calls", run.RESTCalls,
		"complete", prs.entry.Complete, "reason", prs.entry.Reason, "written", written, "bytes", entry.File.Size)
	return res, nil
}

func previousExport(m *archive.Manifest, kind string) *archive.Export {
	if m == nil {
		return nil
	}
	return m.FindExport(kind)
}

type prOutcome struct {
	records []archive.PullRequestRecord
	entry   archive.Export
}

// listed is one pull request as the list endpoint shows it: enough to decide whether to fetch.
type listed struct {
	id      int64
	updated time.Time
	stub    bitbucket.PullRequest
}

func (e *Exporter) exportPullRequests(apiCtx, ctx context.Context, req Request, set Settings, log *slog.Logger) (prOutcome, error) {
	started := time.Now()
	out := prOutcome{entry: archive.Export{Run: &archive.ExportRun{}}}
	run := out.entry.Run
	prevEntry := previousExport(req.Previous, archive.ExportPullRequests)
	stored := map[int64]*archive.PullRequestRecord{}
	if prevEntry != nil {
		recs, _, err := e.Archive.LoadPullRequests(ctx, req.Previous)
		if err != nil {
			return out, fmt.Errorf("load previous pull request export: %w", err)
		}
		for i := range recs {
			stored[recs[i].ID] = &recs[i]
		}
	}
	full := prevEntry == nil || prevEntry.HighWater == nil || prevEntry.Sequence+1 >= set.FullEvery
	run.Full = full

	query := bitbucket.PullRequestQuery{States: bitbucket.AllPullRequestStates, Sort: "updated_on"}
	if !full {
		since := prevEntry.HighWater.Add(-set.Overlap).UTC()
		query.Q = "updated_on > " + since.Format("2006-01-02T15:04:05.000000-07:00")
	}
	// Oldest update first: the high-water mark is then the update time of the last PR done,
	// and a step cut short resumes exactly where it stopped.
	var list []listed
	listErr := e.Client.WalkPullRequests(apiCtx, req.Workspace, req.Slug, query, func(pr bitbucket.PullRequest) error {
		list = append(list, listed{id: pr.ID, updated: pr.UpdatedOn, stub: pr})
		return nil
	})
	run.Listed = len(list)
	sort.SliceStable(list, func(i, j int) bool { return list[i].updated.Before(list[j].updated) })

	forced := map[int64]bool{}
	for _, id := range req.PullRequests {
		forced[id] = true
	}
	inList := map[int64]bool{}
	var todo []int // indexes into list
	for i, l := range list {
		inList[l.id] = true
		rec := stored[l.id]
		if rec == nil || !rec.UpdatedOn.Equal(l.updated) || forced[l.id] || len(rec.Gaps) > 0 || rec.DeletedUpstream {
			todo = append(todo, i)
			// A reconciliation finding a PR whose update the incremental listings should
			// already have seen is drift; PRs updated since the high-water mark are not.
			if full && prevEntry != nil && prevEntry.HighWater != nil && !l.updated.After(*prevEntry.HighWater) &&
				(rec == nil || !rec.UpdatedOn.Equal(l.updated)) {
				run.Drift++
			}
		}
	}
	// Named by a webhook but not listed (its update is older than the overlap): fetched too.
	var extra []int64
	for id := range forced {
		if !inList[id] {
			extra = append(extra, id)
		}
	}
	sort.Slice(extra, func(i, j int) bool { return extra[i] < extra[j] })

	res := newResolver(req, stored)
	fetched := make([]*archive.PullRequestRecord, len(list))
	done := make([]bool, len(list))
	var stopErr error
	var mu sync.Mutex
	stop := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if stopErr == nil {
			stopErr = err
		}
	}
	stopped := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return stopErr != nil
	}
	total := len(todo) + len(extra)
	var progressed int
	report := func() {
		mu.Lock()
		progressed++
		n := progressed
		mu.Unlock()
		if req.Progress != nil {
			req.Progress(n, total)
		}
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < set.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if stopped() {
					continue
				}
				rec, err := e.fetchPullRequest(apiCtx, req, list[i].id, &list[i].stub, stored[list[i].id], res)
				if err != nil {
					stop(err)
					continue
				}
				mu.Lock()
				fetched[i], done[i] = rec, true
				if rec.DeletedUpstream {
					run.Missing++
				}
				run.Fetched++
				mu.Unlock()
				report()
			}
		}()
	}
	for _, i := range todo {
		if stopped() {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	for _, id := range extra {
		if stopErr != nil {
			break
		}
		rec, err := e.fetchPullRequest(apiCtx, req, id, nil, stored[id], res)
		if err != nil {
			stopErr = err
			break
		}
		if rec == nil {
			run.Missing++
			report()
			continue
		}
		if rec.DeletedUpstream {
			run.Missing++
		}
		run.Fetched++
		stored[id] = rec
		report()
	}

	// Merge: fetched records replace stored ones; the high-water mark moves to the last PR
	// (in update order) before the first one that could not be fetched.
	var hw *time.Time
	if prevEntry != nil && prevEntry.HighWater != nil {
		t := *prevEntry.HighWater
		hw = &t
	}
	todoSet := map[int]bool{}
	for _, i := range todo {
		todoSet[i] = true
	}
	cut := false
	for i, l := range list {
		if todoSet[i] && !done[i] {
			cut = true
		}
		if done[i] {
			stored[l.id] = fetched[i]
		}
		if !cut && (hw == nil || l.updated.After(*hw)) {
			t := l.updated.UTC()
			hw = &t
		}
	}
	complete := listErr == nil && stopErr == nil
	if full && listErr == nil {
		// A full listing names every PR Bitbucket has: the others were deleted upstream.
		for id, rec := range stored {
			if !inList[id] && !rec.DeletedUpstream && !forced[id] {
				rec.DeletedUpstream = true
				if prevEntry != nil {
					run.Drift++
				}
			}
		}
	}
	if hw == nil && complete {
		// Nothing at all to export yet: the next listing may still be incremental.
		t := started.UTC().Add(-set.Overlap)
		hw = &t
	}
	out.entry.HighWater = hw
	if full {
		out.entry.Sequence = 0
	} else {
		out.entry.Sequence = prevEntry.Sequence + 1
	}
	if !complete {
		// A cut-short reconciliation must run again: keep the sequence where it forces one.
		if full && prevEntry != nil {
			out.entry.Sequence = prevEntry.Sequence
		}
		reason := []string{}
		if listErr != nil {
			reason = append(reason, "listing pull requests: "+describe(listErr))
		}
		if stopErr != nil {
			left := 0
			for _, i := range todo {
				if !done[i] {
					left++
				}
			}
			reason = append(reason, fmt.Sprintf("%d pull request(s) left for the next run: %s", left, describe(stopErr)))
		}
		out.entry.Reason = strings.Join(reason, "; ")
		log.WarnContext(ctx, "pull request export incomplete", "repository", req.Workspace+"/"+req.Slug, "reason", out.entry.Reason)
	}
	out.entry.Complete = complete

	out.records = make([]archive.PullRequestRecord, 0, len(stored))
	states := map[string]int{}
	for _, rec := range stored {
		rec.PinnedRef = ""
		if ref := archive.PinRef(rec.ID); rec.Source.Commit != "" && req.Pins[ref] == rec.Source.Commit {
			rec.PinnedRef = ref
		}
		out.records = append(out.records, *rec)
		states[rec.State]++
	}
	out.entry.Records, out.entry.States = len(out.records), states
	run.DurationMillis = time.Since(started).Milliseconds()
	return out, nil
}

// describe turns an API failure into a reason for the manifest, without request bodies.
func describe(err error) string {
	var apiErr *bitbucket.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "the export step ran out of time (rate limit budget or a slow API)"
	case errors.As(err, &apiErr) && apiErr.Status == 429:
		return "rate limited by Bitbucket (429)"
	case errors.Is(err, bitbucket.ErrForbidden):
		return "not permitted (403): the installation lacks the pull request permission"
	}
	msg := err.Error()
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return msg
}

// PinCandidates lists the source commits worth pinning: those of PRs whose source branch is
// not a branch of refs (deleted) or lives in another repository (a fork).
func PinCandidates(recs []archive.PullRequestRecord, refs gitmirror.RefMap) gitmirror.RefMap {
	pins := gitmirror.RefMap{}
	for _, r := range recs {
		if !r.Source.CommitResolved || len(r.Source.Commit) != 40 {
			continue
		}
		if _, ok := refs["refs/heads/"+r.Source.Branch]; ok && !isFork(r) {
			continue
		}
		pins[archive.PinRef(r.ID)] = r.Source.Commit
	}
	return pins
}

func isFork(r archive.PullRequestRecord) bool {
	return r.Source.RepositoryUUID != "" && r.Destination.RepositoryUUID != "" &&
		archive.NormalizeUUID(r.Source.RepositoryUUID) != archive.NormalizeUUID(r.Destination.RepositoryUUID)
}
