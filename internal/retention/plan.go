package retention

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/gitsec/gitsec/internal/archive"
)

// Plan is what a policy would do to one repository's snapshots.
type Plan struct {
	// Forget and Keep are snapshot ids, newest first.
	Forget []string `json:"forget"`
	Keep   []string `json:"keep"`
	// BytesFreed is the size of the manifests forgotten plus every pack, idx and export object
	// that no kept snapshot lists any more.
	BytesFreed int64      `json:"bytes_freed"`
	Decisions  []Decision `json:"-"`
}

// PlanRepository loads and verifies every manifest of the repository and applies the policy.
// It refuses to plan when any manifest does not load or verify: deciding from a tampered or
// unreadable manifest could free a pack that a snapshot still needs. holds maps snapshot ids
// under legal hold to the reason (nil for none).
//
// Bundle exports name the references of an intermediate bundle after the snapshot that
// introduced its pack, so a snapshot that introduced a pack some kept snapshot lists is kept too
// (until consolidation gives the chain a fresh full pack). Without consolidation that keeps every
// snapshot that brought objects, and only the manifests of the others are freed.
func PlanRepository(ctx context.Context, st *archive.Store, repo archive.RepoKey, p Policy, holds map[string]string) (*Plan, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	ids, err := st.ListSnapshots(ctx, repo)
	if err != nil {
		return nil, err
	}
	manifests := map[string]*archive.Manifest{}
	var snaps []Snapshot
	for _, id := range ids {
		m, err := st.LoadManifest(ctx, repo, id)
		if err != nil {
			return nil, fmt.Errorf("refusing to plan retention for %s: %w", repo, err)
		}
		at, err := archive.SnapshotTime(id)
		if err != nil {
			return nil, fmt.Errorf("refusing to plan retention for %s: %w", repo, err)
		}
		manifests[id] = m
		snaps = append(snaps, Snapshot{ID: id, Time: at, Hold: holds[id]})
	}
	if err := checkChain(manifests); err != nil {
		return nil, fmt.Errorf("refusing to plan retention for %s: %w", repo, err)
	}
	children := map[string]*archive.Manifest{}
	for _, m := range manifests {
		if m.Parent != "" {
			children[m.Parent] = m
		}
	}
	for i := range snaps {
		if child := children[snaps[i].ID]; child != nil {
			snaps[i].Destructive = destructiveChange(manifests[snaps[i].ID], child)
		}
	}
	decisions := Decide(snaps, p)
	byID := map[string]int{}
	for i, d := range decisions {
		byID[d.ID] = i
	}
	// Kept snapshots pull in the snapshots that introduced their packs (newest first, so one
	// pass reaches every such introducer: an introducer is always older than its users).
	for _, d := range decisions {
		if !d.Keep {
			continue
		}
		for _, pk := range manifests[d.ID].Packs {
			if i, ok := byID[pk.Snapshot]; ok && !decisions[i].Keep {
				decisions[i].Keep = true
				decisions[i].Reasons = append(decisions[i].Reasons, "introduced "+pk.Name+", which "+d.ID+" needs")
			}
		}
	}
	plan := &Plan{Forget: []string{}, Keep: []string{}, Decisions: decisions}
	kept := map[string]bool{}
	for _, d := range decisions {
		if !d.Keep {
			continue
		}
		plan.Keep = append(plan.Keep, d.ID)
		m := manifests[d.ID]
		for _, pk := range m.Packs {
			kept["pack:"+pk.Name] = true
		}
		for _, e := range m.Exports {
			kept["export:"+e.Key] = true
		}
	}
	counted := map[string]bool{}
	for _, d := range decisions {
		if d.Keep {
			continue
		}
		plan.Forget = append(plan.Forget, d.ID)
		size, err := st.ManifestBytes(ctx, repo, d.ID)
		if err != nil {
			return nil, err
		}
		plan.BytesFreed += size
		m := manifests[d.ID]
		for _, pk := range m.Packs {
			if k := "pack:" + pk.Name; !kept[k] && !counted[k] {
				counted[k] = true
				plan.BytesFreed += pk.Pack.Size + pk.Idx.Size
			}
		}
		for _, e := range m.Exports {
			if k := "export:" + e.Key; !kept[k] && !counted[k] {
				counted[k] = true
				plan.BytesFreed += e.File.Size
			}
		}
	}
	return plan, nil
}

// destructiveChange says what the snapshot m deleted or rewrote of its parent's references, or
// "" when it did neither.
func destructiveChange(parent, m *archive.Manifest) string {
	var deleted []string
	for name := range parent.Refs {
		if _, ok := m.Refs[name]; !ok {
			deleted = append(deleted, name)
		}
	}
	slices.Sort(deleted)
	var parts []string
	if len(deleted) > 0 {
		parts = append(parts, "deletion of "+summarize(deleted))
	}
	if len(m.Rewritten) > 0 {
		parts = append(parts, "rewrite of "+summarize(m.Rewritten))
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, " and ") + " in " + m.ID
}

func summarize(names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:3], ", "), len(names)-3)
}

// checkChain cross-checks the manifests: a snapshot lists its parent's packs and then only packs
// it introduced (a consolidated one just its own), and every manifest that lists a pack agrees
// on its size and checksum. A manifest edited on its own breaks one of these, and retention
// must not decide what is unreferenced from it.
func checkChain(manifests map[string]*archive.Manifest) error {
	files := map[string]archive.Pack{}
	for _, m := range manifests {
		for _, p := range m.Packs {
			if seen, ok := files[p.Name]; ok && (seen.Pack != p.Pack || seen.Idx != p.Idx || seen.Snapshot != p.Snapshot) {
				return fmt.Errorf("snapshot %s and another snapshot disagree about pack %s: %w", m.ID, p.Name, archive.ErrInvalidManifest)
			}
			files[p.Name] = p
		}
		parent, ok := manifests[m.Parent]
		if !ok || m.Consolidated {
			continue
		}
		if len(m.Packs) < len(parent.Packs) {
			return fmt.Errorf("snapshot %s lists fewer packs than its parent %s: %w", m.ID, parent.ID, archive.ErrInvalidManifest)
		}
		for i, p := range m.Packs {
			if i < len(parent.Packs) && p.Name != parent.Packs[i].Name || i >= len(parent.Packs) && p.Snapshot != m.ID {
				return fmt.Errorf("snapshot %s does not list its parent %s's packs followed by its own: %w", m.ID, parent.ID, archive.ErrInvalidManifest)
			}
		}
	}
	return nil
}
