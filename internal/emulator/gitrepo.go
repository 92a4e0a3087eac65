package emulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const emptyTree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

// gitEnv isolates git from the user's configuration so results do not depend on the host.
func gitEnv() []string {
	env := os.Environ()
	return append(env, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0", "LC_ALL=C")
}

func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

type gitRef struct {
	Name   string // full ref name
	Hash   string // commit the ref points at (peeled)
	Object string // object the ref points at (tag object for annotated tags)
	// Annotated tag data.
	Annotated   bool
	TaggerName  string
	TaggerEmail string
	TaggerDate  time.Time
	Message     string
}

func (r gitRef) shortName() string {
	for _, p := range []string{"refs/heads/", "refs/tags/"} {
		if strings.HasPrefix(r.Name, p) {
			return strings.TrimPrefix(r.Name, p)
		}
	}
	return r.Name
}

// listRefs reads branches and tags (prefix "refs/heads/", "refs/tags/" or "refs/").
func listRefs(ctx context.Context, dir, prefix string) ([]gitRef, error) {
	format := "%(refname)%00%(objectname)%00%(objecttype)%00%(*objectname)%00%(taggername)%00%(taggeremail)%00%(taggerdate:iso-strict)%00%(contents)%1e"
	out, err := gitOutput(ctx, dir, "for-each-ref", "--format="+format, prefix)
	if err != nil {
		return nil, err
	}
	var refs []gitRef
	for _, rec := range strings.Split(out, "\x1e") {
		rec = strings.TrimPrefix(rec, "\n")
		if rec == "" {
			continue
		}
		f := strings.SplitN(rec, "\x00", 8)
		if len(f) < 8 {
			continue
		}
		r := gitRef{Name: f[0], Object: f[1], Hash: f[1]}
		if f[2] == "tag" {
			r.Annotated = true
			r.Hash = f[3]
			r.TaggerName = f[4]
			r.TaggerEmail = strings.Trim(f[5], "<>")
			r.TaggerDate, _ = time.Parse(time.RFC3339, f[6])
			r.Message = f[7]
		} else if f[2] != "commit" {
			continue
		}
		refs = append(refs, r)
	}
	return refs, nil
}

// refMap is the ref snapshot used to compute push changes.
func refMap(ctx context.Context, dir string) (map[string]gitRef, error) {
	refs, err := listRefs(ctx, dir, "refs/")
	if err != nil {
		return nil, err
	}
	m := make(map[string]gitRef, len(refs))
	for _, r := range refs {
		if strings.HasPrefix(r.Name, "refs/heads/") || strings.HasPrefix(r.Name, "refs/tags/") {
			m[r.Name] = r
		}
	}
	return m, nil
}

type gitCommit struct {
	Hash        string
	Parents     []string
	AuthorName  string
	AuthorEmail string
	Date        time.Time
	Message     string
}

const logFormat = "--format=%H%x00%P%x00%an%x00%ae%x00%aI%x00%B%x1e"

func parseLog(out string) []gitCommit {
	var commits []gitCommit
	for _, rec := range strings.Split(out, "\x1e") {
		rec = strings.TrimPrefix(rec, "\n")
		if rec == "" {
			continue
		}
		f := strings.SplitN(rec, "\x00", 6)
		if len(f) < 6 {
			continue
		}
		c := gitCommit{Hash: f[0], AuthorName: f[2], AuthorEmail: f[3], Message: f[5]}
		if f[1] != "" {
			c.Parents = strings.Fields(f[1])
		}
		c.Date, _ = time.Parse(time.RFC3339, f[4])
		commits = append(commits, c)
	}
	return commits
}

// readCommits returns the given commits in the given order.
func readCommits(ctx context.Context, dir string, hashes []string) (map[string]gitCommit, error) {
	out := map[string]gitCommit{}
	if len(hashes) == 0 {
		return out, nil
	}
	args := append([]string{"log", "--no-walk=unsorted", logFormat}, hashes...)
	text, err := gitOutput(ctx, dir, args...)
	if err != nil {
		return nil, err
	}
	for _, c := range parseLog(text) {
		out[c.Hash] = c
	}
	return out, nil
}

// logRange lists commits reachable from include and not from exclude, newest first.
func logRange(ctx context.Context, dir string, include, exclude []string, skip, limit int) ([]gitCommit, error) {
	args := []string{"log", logFormat, "--skip=" + strconv.Itoa(skip), "--max-count=" + strconv.Itoa(limit)}
	args = append(args, include...)
	for _, e := range exclude {
		args = append(args, "^"+e)
	}
	args = append(args, "--")
	text, err := gitOutput(ctx, dir, args...)
	if err != nil {
		return nil, err
	}
	return parseLog(text), nil
}

func resolveCommit(ctx context.Context, dir, rev string) (string, error) {
	if strings.HasPrefix(rev, "-") {
		return "", fmt.Errorf("invalid revision %q", rev)
	}
	out, err := gitOutput(ctx, dir, "rev-parse", "--verify", "-q", rev+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", rev, err)
	}
	return strings.TrimSpace(out), nil
}

func isAncestor(ctx context.Context, dir, older, newer string) bool {
	_, err := gitOutput(ctx, dir, "merge-base", "--is-ancestor", older, newer)
	return err == nil
}

type diffEntry struct {
	Status       string // added, removed, modified, renamed
	OldPath      string
	NewPath      string
	LinesAdded   int
	LinesRemoved int
}

// diffStat compares base and head like Bitbucket's diffstat.
func diffStat(ctx context.Context, dir, base, head string) ([]diffEntry, error) {
	ns, err := gitOutput(ctx, dir, "diff", "-z", "-M", "--name-status", base, head)
	if err != nil {
		return nil, err
	}
	num, err := gitOutput(ctx, dir, "diff", "-z", "-M", "--numstat", base, head)
	if err != nil {
		return nil, err
	}
	var entries []diffEntry
	f := strings.Split(ns, "\x00")
	for i := 0; i < len(f); {
		st := f[i]
		if st == "" {
			i++
			continue
		}
		e := diffEntry{}
		switch st[0] {
		case 'R', 'C':
			if i+2 >= len(f) {
				i = len(f)
				continue
			}
			e.Status, e.OldPath, e.NewPath = "renamed", f[i+1], f[i+2]
			i += 3
		default:
			if i+1 >= len(f) {
				i = len(f)
				continue
			}
			p := f[i+1]
			i += 2
			switch st[0] {
			case 'A':
				e.Status, e.NewPath = "added", p
			case 'D':
				e.Status, e.OldPath = "removed", p
			default:
				e.Status, e.OldPath, e.NewPath = "modified", p, p
			}
		}
		entries = append(entries, e)
	}
	// numstat -z: "added\tremoved\tpath\0" or "added\tremoved\t\0old\0new\0" for renames.
	nf := strings.Split(num, "\x00")
	k := 0
	for i := 0; i < len(nf) && k < len(entries); {
		rec := nf[i]
		if rec == "" {
			i++
			continue
		}
		parts := strings.SplitN(rec, "\t", 3)
		if len(parts) < 3 {
			i++
			continue
		}
		entries[k].LinesAdded, _ = strconv.Atoi(parts[0])
		entries[k].LinesRemoved, _ = strconv.Atoi(parts[1])
		k++
		if parts[2] == "" {
			i += 3
		} else {
			i++
		}
	}
	return entries, nil
}

// headBranch reads HEAD without spawning git: the default branch name, or "" when HEAD
// points at a branch that does not exist (empty repository).
func headBranch(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "HEAD"))
	if err != nil {
		return ""
	}
	line := strings.TrimSpace(string(b))
	if !strings.HasPrefix(line, "ref: refs/heads/") {
		return ""
	}
	ref := strings.TrimPrefix(line, "ref: ")
	if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(ref))); err == nil {
		return strings.TrimPrefix(ref, "refs/heads/")
	}
	packed, err := os.ReadFile(filepath.Join(dir, "packed-refs"))
	if err == nil {
		for _, l := range strings.Split(string(packed), "\n") {
			if strings.HasSuffix(l, " "+ref) {
				return strings.TrimPrefix(ref, "refs/heads/")
			}
		}
	}
	return ""
}

// dirSize is the repository's on-disk size, which is what Bitbucket reports as `size`.
func dirSize(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}
