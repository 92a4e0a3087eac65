// Package retention decides which snapshots a retention policy keeps and which it forgets, and
// what forgetting them frees: a pack, idx or export object is freed only when no kept snapshot
// lists it (the backup format's rule). It reads storage and decides; it deletes nothing.
package retention

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Policy is a retention policy. Zero fields keep nothing by themselves; the newest snapshot is
// always kept, whatever the policy says.
type Policy struct {
	// KeepLast keeps the newest N snapshots.
	KeepLast int `json:"keep_last,omitempty"`
	// KeepDaily, KeepWeekly, KeepMonthly and KeepYearly keep the newest snapshot of each of the
	// newest N days, ISO weeks, months and years (UTC) that have snapshots.
	KeepDaily   int `json:"keep_daily,omitempty"`
	KeepWeekly  int `json:"keep_weekly,omitempty"`
	KeepMonthly int `json:"keep_monthly,omitempty"`
	KeepYearly  int `json:"keep_yearly,omitempty"`
	// KeepWithin keeps every snapshot taken within this long before the newest one (measured from
	// the newest snapshot, not the clock, so a repository nobody pushes to keeps its last week).
	KeepWithin time.Duration `json:"keep_within,omitempty"`
	// KeepBeforeDestructive keeps every snapshot that is the last one before a reference was
	// deleted or rewritten (force-pushed) upstream, so that what the change removed stays
	// recoverable for as long as the repository's backups exist.
	KeepBeforeDestructive bool `json:"keep_before_destructive,omitempty"`
}

// DefaultPolicy is what an installation without a policy of its own keeps: every snapshot of
// the last 7 days, the newest of each of the last 30 days and 12 months, and every snapshot
// before a destructive upstream change.
func DefaultPolicy() Policy {
	return Policy{KeepDaily: 30, KeepMonthly: 12, KeepWithin: 7 * 24 * time.Hour, KeepBeforeDestructive: true}
}

// Validate rejects negative counts and durations.
func (p Policy) Validate() error {
	for name, n := range map[string]int{"keep-last": p.KeepLast, "keep-daily": p.KeepDaily, "keep-weekly": p.KeepWeekly,
		"keep-monthly": p.KeepMonthly, "keep-yearly": p.KeepYearly} {
		if n < 0 {
			return fmt.Errorf("--%s %d: want 0 or more", name, n)
		}
	}
	if p.KeepWithin < 0 {
		return fmt.Errorf("--keep-within %s: want a positive duration", p.KeepWithin)
	}
	return nil
}

// policyDocument is a policy as the API and the database spell it: every field present, and
// keep_within as text ("168h0m0s"; "7d" is accepted on input).
type policyDocument struct {
	KeepLast              int    `json:"keep_last"`
	KeepDaily             int    `json:"keep_daily"`
	KeepWeekly            int    `json:"keep_weekly"`
	KeepMonthly           int    `json:"keep_monthly"`
	KeepYearly            int    `json:"keep_yearly"`
	KeepWithin            string `json:"keep_within"`
	KeepBeforeDestructive bool   `json:"keep_before_destructive"`
}

// MarshalJSON writes the policy document.
func (p Policy) MarshalJSON() ([]byte, error) {
	d := policyDocument{p.KeepLast, p.KeepDaily, p.KeepWeekly, p.KeepMonthly, p.KeepYearly, "", p.KeepBeforeDestructive}
	if p.KeepWithin > 0 {
		d.KeepWithin = p.KeepWithin.String()
	}
	return json.Marshal(d)
}

// UnmarshalJSON reads a policy document strictly: an unknown field (a misspelt rule would
// otherwise keep nothing) or a bad value is an error naming it.
func (p *Policy) UnmarshalJSON(data []byte) error {
	var d policyDocument
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("retention policy: %w", err)
	}
	q := Policy{KeepLast: d.KeepLast, KeepDaily: d.KeepDaily, KeepWeekly: d.KeepWeekly, KeepMonthly: d.KeepMonthly,
		KeepYearly: d.KeepYearly, KeepBeforeDestructive: d.KeepBeforeDestructive}
	if d.KeepWithin != "" {
		w, err := ParseWithin(d.KeepWithin)
		if err != nil {
			return err
		}
		q.KeepWithin = w
	}
	*p = q
	return nil
}

// ParseWithin reads a keep-within duration: a Go duration (72h) or a number of days (7d).
func ParseWithin(s string) (time.Duration, error) {
	bad := fmt.Errorf("keep-within %q: want a positive number of days (7d) or a Go duration (72h)", s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return 0, bad
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, bad
	}
	return d, nil
}

// Snapshot is what a decision needs to know about one snapshot.
type Snapshot struct {
	ID   string
	Time time.Time
	// Hold is a reason the snapshot must be kept whatever the policy (a legal hold); "" for none.
	Hold string
	// Destructive says what the snapshot after this one deleted or rewrote ("" when nothing).
	Destructive string
}

// Decision is the outcome for one snapshot: kept with the reasons, or forgotten.
type Decision struct {
	ID      string   `json:"id"`
	Keep    bool     `json:"keep"`
	Reasons []string `json:"reasons,omitempty"`
}

// Decide applies the policy to the snapshots (any order) and returns one decision per snapshot,
// newest first.
func Decide(snaps []Snapshot, p Policy) []Decision {
	sorted := slices.Clone(snaps)
	slices.SortFunc(sorted, func(a, b Snapshot) int { return b.Time.Compare(a.Time) })
	out := make([]Decision, len(sorted))
	keep := func(i int, why string) {
		out[i].Keep = true
		out[i].Reasons = append(out[i].Reasons, why)
	}
	for i, s := range sorted {
		out[i].ID = s.ID
		if s.Hold != "" {
			keep(i, s.Hold)
		}
	}
	if len(sorted) == 0 {
		return out
	}
	keep(0, "newest")
	if p.KeepBeforeDestructive {
		for i, s := range sorted {
			if s.Destructive != "" {
				keep(i, "last before "+s.Destructive)
			}
		}
	}
	for i := range min(p.KeepLast, len(sorted)) {
		keep(i, "last")
	}
	if p.KeepWithin > 0 {
		from := sorted[0].Time.Add(-p.KeepWithin)
		for i, s := range sorted {
			if !s.Time.Before(from) {
				keep(i, "within "+p.KeepWithin.String())
			}
		}
	}
	buckets := []struct {
		n    int
		name string
		of   func(time.Time) string
	}{
		{p.KeepDaily, "daily", func(t time.Time) string { return t.UTC().Format("2006-01-02") }},
		{p.KeepWeekly, "weekly", func(t time.Time) string { y, w := t.UTC().ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{p.KeepMonthly, "monthly", func(t time.Time) string { return t.UTC().Format("2006-01") }},
		{p.KeepYearly, "yearly", func(t time.Time) string { return t.UTC().Format("2006") }},
	}
	for _, b := range buckets {
		seen := map[string]bool{}
		for i, s := range sorted {
			if len(seen) == b.n {
				break
			}
			// Newest first: the first snapshot of a period is that period's newest.
			if k := b.of(s.Time); !seen[k] {
				seen[k] = true
				keep(i, b.name+" "+k)
			}
		}
	}
	return out
}

// Where an effective policy comes from.
const (
	SourceRepository   = "repository"
	SourceInstallation = "installation"
	SourceDefault      = "default"
)

// Effective resolves a repository's policy from its own stored document, else its
// installation's, else DefaultPolicy (nil or empty documents inherit).
func Effective(repository, installation json.RawMessage) (Policy, string, error) {
	for _, c := range []struct {
		doc    json.RawMessage
		source string
	}{{repository, SourceRepository}, {installation, SourceInstallation}} {
		if len(c.doc) == 0 || string(c.doc) == "null" {
			continue
		}
		var p Policy
		if err := json.Unmarshal(c.doc, &p); err != nil {
			return Policy{}, c.source, fmt.Errorf("stored %s policy: %w", c.source, err)
		}
		return p, c.source, p.Validate()
	}
	return DefaultPolicy(), SourceDefault, nil
}
