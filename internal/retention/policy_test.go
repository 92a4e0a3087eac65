package retention

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// forty days of daily snapshots at noon (2026-01-01 .. 2026-02-09), plus an earlier one on each
// of the last three days.
func simulatedDays() []Snapshot {
	var snaps []Snapshot
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for d := range 40 {
		at := start.AddDate(0, 0, d)
		snaps = append(snaps, Snapshot{ID: at.Format("Jan02-15h"), Time: at})
		if d >= 37 {
			early := at.Add(-4 * time.Hour)
			snaps = append(snaps, Snapshot{ID: early.Format("Jan02-15h"), Time: early})
		}
	}
	return snaps
}

func kept(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		if d.Keep {
			out = append(out, d.ID)
		}
	}
	return out
}

func TestGrandfatherFatherSonKeepsExactlyTheExpectedSnapshots(t *testing.T) {
	ds := Decide(simulatedDays(), Policy{KeepDaily: 7, KeepWeekly: 3, KeepMonthly: 2})
	if len(ds) != 43 {
		t.Fatalf("%d decisions for 43 snapshots", len(ds))
	}
	// Daily: Feb 3-9 at noon (not the early ones). Weekly (ISO, Feb 9 is a Monday): Feb 9, Feb 8
	// (week of Feb 2-8) and Feb 1 (week of Jan 26 - Feb 1). Monthly: Feb 9 and Jan 31.
	want := []string{"Feb09-12h", "Feb08-12h", "Feb07-12h", "Feb06-12h", "Feb05-12h", "Feb04-12h", "Feb03-12h", "Feb01-12h", "Jan31-12h"}
	if got := kept(ds); !slices.Equal(got, want) {
		t.Fatalf("kept %v\nwant %v", got, want)
	}
	for _, d := range ds {
		if d.ID == "Feb01-12h" && !slices.Contains(d.Reasons, "weekly 2026-W05") {
			t.Errorf("Feb 1 kept for %v, want weekly 2026-W05", d.Reasons)
		}
	}
}

func TestNewestIsAlwaysKeptAndHoldsAreNeverForgotten(t *testing.T) {
	snaps := simulatedDays()
	snaps[5].Hold = "legal hold: case 42"
	got := kept(Decide(snaps, Policy{}))
	if want := []string{"Feb09-12h", snaps[5].ID}; !slices.Equal(got, want) {
		t.Fatalf("an empty policy kept %v, want the newest and the held one %v", got, want)
	}
}

func TestKeepLastAndKeepWithin(t *testing.T) {
	got := kept(Decide(simulatedDays(), Policy{KeepLast: 2, KeepWithin: 48 * time.Hour}))
	// Within 48 h of Feb 9 noon: Feb 7 noon and everything after it.
	want := []string{"Feb09-12h", "Feb09-08h", "Feb08-12h", "Feb08-08h", "Feb07-12h"}
	if !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
}

func TestPolicyRejectsNegativeValues(t *testing.T) {
	for _, p := range []Policy{{KeepLast: -1}, {KeepDaily: -3}, {KeepWithin: -time.Hour}} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v validated", p)
		}
	}
	if err := (Policy{KeepLast: -1}).Validate(); err == nil || err.Error() != fmt.Sprintf("--keep-last %d: want 0 or more", -1) {
		t.Errorf("error %v does not name --keep-last", err)
	}
}

func TestPolicyDocumentsAreStrictAndInheritInOrder(t *testing.T) {
	p, source, err := Effective(nil, nil)
	if err != nil || source != SourceDefault || p != DefaultPolicy() {
		t.Fatalf("no documents: %+v from %s, %v", p, source, err)
	}
	inst := []byte(`{"keep_last":0,"keep_daily":7,"keep_weekly":0,"keep_monthly":0,"keep_yearly":0,"keep_within":"2d","keep_before_destructive":false}`)
	p, source, err = Effective([]byte("null"), inst)
	if err != nil || source != SourceInstallation || p.KeepDaily != 7 || p.KeepWithin != 48*time.Hour {
		t.Fatalf("installation document: %+v from %s, %v", p, source, err)
	}
	p, source, err = Effective([]byte(`{"keep_last":3}`), inst)
	if err != nil || source != SourceRepository || p.KeepLast != 3 || p.KeepDaily != 0 {
		t.Fatalf("repository document: %+v from %s, %v", p, source, err)
	}
	round, err := json.Marshal(DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	var back Policy
	if err := json.Unmarshal(round, &back); err != nil || back != DefaultPolicy() {
		t.Fatalf("round trip of %s: %+v, %v", round, back, err)
	}
	for doc, want := range map[string]string{
		`{"keep_dayly":7}`:       "keep_dayly",
		`{"keep_within":"soon"}`: `"soon"`,
		`{"keep_last":"3"}`:      "keep_last",
	} {
		if _, _, err := Effective([]byte(doc), nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Effective(%s) = %v, want an error naming %s", doc, err, want)
		}
	}
	if _, _, err := Effective([]byte(`{"keep_daily":-2}`), nil); err == nil {
		t.Error("a negative count was accepted")
	}
}

func TestSnapshotBeforeADestructiveChangeIsKept(t *testing.T) {
	snaps := simulatedDays()
	snaps[5].Destructive = "deletion of refs/heads/feature in the next snapshot"
	ds := Decide(snaps, Policy{KeepLast: 1, KeepBeforeDestructive: true})
	if got := kept(ds); len(got) != 2 || !slices.Contains(got, snaps[5].ID) {
		t.Fatalf("kept %v, want the newest and %s", got, snaps[5].ID)
	}
	if got := kept(Decide(snaps, Policy{KeepLast: 1})); len(got) != 1 {
		t.Fatalf("without the rule kept %v", got)
	}
}
