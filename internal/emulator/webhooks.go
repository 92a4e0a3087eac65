package emulator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Delivery rules from the reference: 10 s timeout, retry only on 5xx, at most 3 attempts
// in total without backoff, payloads above 256 KB silently dropped.
const (
	deliveryTimeout  = 10 * time.Second
	deliveryAttempts = 3
	maxPayloadBytes  = 256 * 1024
	pushCommitLimit  = 5
	deliveryLogSize  = 1000
)

// Delivery records one attempt (or a dropped delivery) for GET /_emulator/deliveries. Fault
// names the webhook fault that applied ("drop", "latency", "duplicate", "reorder");
// Duplicate marks the attempts of the second copy a "duplicate" fault sent.
type Delivery struct {
	RequestUUID string    `json:"request_uuid"`
	HookUUID    string    `json:"hook_uuid"`
	Event       string    `json:"event"`
	URL         string    `json:"url"`
	Attempt     int       `json:"attempt"`
	Status      int       `json:"status,omitempty"`
	Error       string    `json:"error,omitempty"`
	Dropped     string    `json:"dropped,omitempty"`
	Fault       string    `json:"fault,omitempty"`
	Duplicate   bool      `json:"duplicate,omitempty"`
	Bytes       int       `json:"bytes"`
	At          time.Time `json:"at"`
}

type deliverer struct {
	s        *Server
	client   *http.Client
	insecure *http.Client
	wg       sync.WaitGroup
	mu       sync.Mutex
	log      []Delivery
	held     map[string][]*heldJob // by hook URL: deliveries a "reorder" fault holds back
}

// job is one delivery to one hook, with the faults that apply to it.
type job struct {
	base      Delivery
	t         hookTarget
	body      []byte
	latency   time.Duration
	duplicate bool
}

// heldJob is a delivery held back by a "reorder" fault. released is closed when the next
// delivery to the same URL takes it over.
type heldJob struct {
	job      *job
	released chan struct{}
}

func newDeliverer(s *Server) *deliverer {
	return &deliverer{
		s:      s,
		client: &http.Client{Timeout: deliveryTimeout},
		insecure: &http.Client{Timeout: deliveryTimeout, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // only for hooks with skip_cert_verification
		}},
		held: map[string][]*heldJob{},
	}
}

func (d *deliverer) record(rec Delivery) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log = append(d.log, rec)
	if len(d.log) > deliveryLogSize {
		d.log = d.log[len(d.log)-deliveryLogSize:]
	}
}

func (d *deliverer) deliveries() []Delivery {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.log)
}

func (d *deliverer) wait(limit time.Duration) {
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
	}
}

type hookTarget struct {
	uuid, url, secret string
	skipVerify        bool
}

// emit sends event for repo to every matching active hook (repository hooks and the hooks
// of the repository's workspace). Callers hold s.mu; delivery is asynchronous.
func (s *Server) emit(event string, repo *repoRec, actor *userRec, payload obj) {
	ws := s.st.workspace(repo.Workspace)
	var targets []hookTarget
	for _, h := range s.st.Hooks {
		if !h.Active || !slices.Contains(h.Events, event) {
			continue
		}
		if (h.SubjectType == "repository" && h.SubjectUUID == repo.UUID) ||
			(h.SubjectType == "workspace" && ws != nil && h.SubjectUUID == ws.UUID) {
			targets = append(targets, hookTarget{h.UUID, h.URL, h.Secret, h.SkipCertVerification})
		}
	}
	if len(targets) == 0 {
		return
	}
	payload["repository"] = s.repoWebhook(repo)
	payload["actor"] = s.accountObj(actor)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(payload); err != nil {
		s.log.Error("encode webhook payload", "event", event, "err", err)
		return
	}
	body := bytes.TrimRight(buf.Bytes(), "\n")
	for _, t := range targets {
		s.hooks.enqueue(event, t, body)
	}
}

// enqueue starts one delivery. It runs synchronously up to the fault decision, so that
// deliveries are matched against "reorder" holds in the order they were emitted.
func (d *deliverer) enqueue(event string, t hookTarget, body []byte) {
	requestUUID := newUUID()
	base := Delivery{RequestUUID: requestUUID, HookUUID: t.uuid, Event: event, URL: t.url, Bytes: len(body), At: time.Now().UTC()}
	if len(body) > maxPayloadBytes {
		base.Dropped = "payload larger than 256 KB"
		d.record(base)
		return
	}
	latency, fault := d.s.faults.webhookFaults(event, t.url)
	j := &job{t: t, body: body, latency: latency}
	if latency > 0 {
		base.Fault = "latency"
	}
	if fault != nil {
		base.Fault = fault.Kind
	}
	j.base = base
	switch {
	case fault != nil && fault.Kind == "drop":
		j.base.Dropped = "fault injection"
		d.record(j.base)
		return
	case fault != nil && fault.Kind == "reorder":
		d.hold(j, time.Duration(fault.Hold))
		return
	case fault != nil && fault.Kind == "duplicate":
		j.duplicate = true
	}
	released := d.takeHeld(t.url)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.run(j)
		// Held deliveries go out right after this newer one: the receiver sees them late.
		for _, h := range released {
			d.run(h)
		}
	}()
}

// hold parks a delivery until the next delivery to the same URL takes it over (takeHeld) or
// bound passes, whichever comes first.
func (d *deliverer) hold(j *job, bound time.Duration) {
	h := &heldJob{job: j, released: make(chan struct{})}
	d.mu.Lock()
	d.held[j.t.url] = append(d.held[j.t.url], h)
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		timer := time.NewTimer(bound)
		defer timer.Stop()
		select {
		case <-h.released:
			return
		case <-timer.C:
		case <-d.s.ctx.Done():
		}
		if !d.unhold(h) {
			return // taken over by a newer delivery in the meantime
		}
		if d.s.ctx.Err() != nil {
			rec := j.base
			rec.Dropped = "emulator stopped while the delivery was held back"
			d.record(rec)
			return
		}
		d.run(j)
	}()
}

// takeHeld removes and returns the deliveries held back for url, oldest first.
func (d *deliverer) takeHeld(url string) []*job {
	d.mu.Lock()
	defer d.mu.Unlock()
	var jobs []*job
	for _, h := range d.held[url] {
		close(h.released)
		jobs = append(jobs, h.job)
	}
	delete(d.held, url)
	return jobs
}

// unhold removes h from the held list; false if takeHeld got it first.
func (d *deliverer) unhold(h *heldJob) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	list := d.held[h.job.t.url]
	i := slices.Index(list, h)
	if i < 0 {
		return false
	}
	list = slices.Delete(list, i, i+1)
	if len(list) == 0 {
		delete(d.held, h.job.t.url)
	} else {
		d.held[h.job.t.url] = list
	}
	return true
}

// run applies the job's latency, then delivers it (twice for a "duplicate" fault).
func (d *deliverer) run(j *job) {
	if j.latency > 0 {
		select {
		case <-time.After(j.latency):
		case <-d.s.ctx.Done():
			return
		}
	}
	d.deliver(j.base, j.t, j.body)
	if j.duplicate {
		dup := j.base
		dup.Duplicate = true
		d.deliver(dup, j.t, j.body)
	}
}

func (d *deliverer) deliver(base Delivery, t hookTarget, body []byte) {
	client := d.client
	if t.skipVerify {
		client = d.insecure
	}
	for attempt := 1; attempt <= deliveryAttempts; attempt++ {
		rec := base
		rec.Attempt = attempt
		rec.At = time.Now().UTC()
		status, err := d.post(client, t, base, attempt, body)
		rec.Status = status
		if err != nil {
			rec.Error = err.Error()
		}
		d.record(rec)
		if err != nil || status < 500 || status > 599 {
			if err != nil {
				d.s.log.Warn("webhook delivery failed", "event", base.Event, "hook", t.uuid, "attempt", attempt, "err", err)
			}
			return
		}
	}
}

func (d *deliverer) post(client *http.Client, t hookTarget, base Delivery, attempt int, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(d.s.ctx, deliveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Bitbucket-Webhooks/2.0")
	req.Header.Set("X-Event-Key", base.Event)
	req.Header.Set("X-Request-UUID", strings.Trim(base.RequestUUID, "{}"))
	req.Header.Set("X-Hook-UUID", strings.Trim(t.uuid, "{}"))
	req.Header.Set("X-Attempt-Number", fmt.Sprint(attempt))
	if t.secret != "" {
		mac := hmac.New(sha256.New, []byte(t.secret))
		mac.Write(body)
		req.Header.Set("X-Hub-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post webhook: %w", err)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// pushEventLocked turns a ref change into a repo:push event (and pullrequest:updated for
// open PRs whose source branch moved). Callers hold s.mu.
func (s *Server) pushEventLocked(repo *repoRec, actor *userRec, before, after map[string]gitRef) {
	var names []string
	for n := range before {
		names = append(names, n)
	}
	for n := range after {
		if _, ok := before[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	dir := s.gitDir(repo.Workspace, repo.Slug)
	var oldTips []string
	for _, r := range before {
		oldTips = append(oldTips, r.Hash)
	}
	slices.Sort(oldTips)
	oldTips = slices.Compact(oldTips)
	changes := []any{}
	movedBranches := map[string]string{}
	for _, n := range names {
		o, hadOld := before[n]
		nw, hasNew := after[n]
		if hadOld && hasNew && o.Object == nw.Object {
			continue
		}
		isTag := strings.HasPrefix(n, "refs/tags/")
		change := obj{"created": !hadOld, "closed": !hasNew, "forced": false, "truncated": false, "old": nil, "new": nil}
		hashes := []string{}
		if hadOld {
			hashes = append(hashes, o.Hash)
		}
		if hasNew {
			hashes = append(hashes, nw.Hash)
		}
		tips, err := readCommits(s.ctx, dir, hashes)
		if err != nil {
			s.log.Error("read pushed commits", "repository", repo.fullName(), "err", err)
		}
		if hadOld {
			change["old"] = s.webhookRef(repo, o, s.webhookCommit(repo, tips[o.Hash], false))
		}
		if hasNew {
			change["new"] = s.webhookRef(repo, nw, s.webhookCommit(repo, tips[nw.Hash], false))
			// Recorded deliveries list commits for branch changes only, never for tags.
			if !isTag {
				commits, err := logRange(s.ctx, dir, []string{nw.Hash}, oldTips, 0, pushCommitLimit+1)
				list := []any{}
				if err == nil {
					for i, c := range commits {
						if i == pushCommitLimit {
							change["truncated"] = true
							break
						}
						list = append(list, s.webhookCommit(repo, c, true))
					}
				}
				change["commits"] = list
			}
			if strings.HasPrefix(n, "refs/heads/") {
				movedBranches[strings.TrimPrefix(n, "refs/heads/")] = nw.Hash
			}
		}
		if hadOld && hasNew {
			change["forced"] = !isAncestor(s.ctx, dir, o.Hash, nw.Hash)
		}
		// Deletions carry neither commits nor links, tag creations only a commits link, as
		// recorded.
		api := s.repoAPI(repo)
		switch {
		case hadOld && hasNew:
			change["links"] = obj{
				"commits": href(api + "/commits?include=" + nw.Hash + "&exclude=" + o.Hash),
				"diff":    href(api + "/diff/" + nw.Hash + ".." + o.Hash),
				"html":    href(s.repoHTML(repo) + "/branches/compare/" + nw.Hash + ".." + o.Hash),
			}
		case hasNew && isTag:
			change["links"] = obj{"commits": href(api + "/commits/" + nw.Hash)}
		case hasNew:
			change["links"] = obj{
				"commits": href(api + "/commits?include=" + nw.Hash),
				"html":    href(s.repoHTML(repo) + "/branch/" + nw.shortName()),
			}
		}
		changes = append(changes, change)
	}
	if len(changes) == 0 {
		return
	}
	repo.UpdatedOn = time.Now().UTC()
	s.emit("repo:push", repo, actor, obj{"push": obj{"changes": changes}})
	for _, pr := range s.st.pullRequestsOf(repo.UUID) {
		if hash, ok := movedBranches[pr.SourceBranch]; ok && pr.State == "OPEN" && hash != pr.SourceCommit {
			pr.SourceCommit = hash
			s.touchPR(repo, pr, actor, "pullrequest:updated")
		}
	}
	_ = s.saveLocked()
}

// webhookCommit is a commit as push deliveries show it (recorded in 2025): no repository or
// participants, and empty committer, rendered and properties objects. Ref targets (full
// false) carry only the self and html links; entries of commits[] the REST link set.
func (s *Server) webhookCommit(r *repoRec, c gitCommit, full bool) obj {
	o := s.commitObj(r, c)
	delete(o, "repository")
	delete(o, "participants")
	o["committer"] = obj{}
	o["rendered"] = obj{}
	o["properties"] = obj{}
	if !full {
		links := o["links"].(obj)
		o["links"] = obj{"self": links["self"], "html": links["html"]}
	}
	return o
}

// webhookRef is a pushed branch or tag. Branches add the sync strategies and the
// pullrequest_create link recorded deliveries carry.
func (s *Server) webhookRef(r *repoRec, ref gitRef, target obj) obj {
	o := s.refObj(r, ref, target)
	if o["type"] == "branch" {
		o["sync_strategies"] = []string{"merge_commit", "rebase"}
		o["links"].(obj)["pullrequest_create"] = href(s.repoHTML(r) + "/pull-requests/new?source=" + ref.shortName() + "&t=1")
	}
	return o
}
