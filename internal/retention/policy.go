// Package retention decides which snapshots a retention policy keeps and which it forgets, and
// what forgetting them frees: a pack, idx or export object is freed only when no kept snapshot
// lists it (the backup format's rule). It reads storage and decides; it deletes nothing.
package retention

import (
	"fmt"
	"slices"
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

// Snapshot is what a decision needs to know about one snapshot.
type Snapshot struct {
	ID   string
	Time time.Time
	// Hold is a reason the snapshot must be kept whatever the policy (a legal hold); "" for none.
	Hold string
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
