package gitmirror

import (
	"maps"
	"slices"
)

// RefMap maps full reference names (refs/heads/main, refs/tags/v1,
// refs/pull-requests/7/from) to the hex object id they point to. Symbolic
// references such as HEAD are kept apart, as a target name.
type RefMap map[string]string

// Equal reports whether both maps hold exactly the same names and ids; nil
// and empty maps are equal.
func (m RefMap) Equal(other RefMap) bool {
	return maps.Equal(m, other)
}

// Names returns the reference names in byte order, the order git sorts them.
func (m RefMap) Names() []string {
	return slices.Sorted(maps.Keys(m))
}

// Diff counts how other differs from m: names only in other (added), names in
// both with another id (updated) and names only in m (deleted).
func (m RefMap) Diff(other RefMap) (added, updated, deleted int) {
	for name, oid := range other {
		old, ok := m[name]
		switch {
		case !ok:
			added++
		case old != oid:
			updated++
		}
	}
	for name := range m {
		if _, ok := other[name]; !ok {
			deleted++
		}
	}
	return added, updated, deleted
}
