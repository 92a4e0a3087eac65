package benchmark

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Report is what one run measured; bench-results.json is this, docs/benchmarks.md its tables.
type Report struct {
	Date            string       `json:"date"`
	Scale           string       `json:"scale"`
	Runs            int          `json:"runs"`
	Machine         Machine      `json:"machine"`
	DurationSeconds float64      `json:"duration_seconds"`
	Repositories    []Repository `json:"repositories"`
	Cases           []*Case      `json:"cases"`
	Settings        []string     `json:"settings"`
}

// Machine is where the run took place.
type Machine struct {
	CPU         string `json:"cpu,omitempty"`
	Cores       int    `json:"cores"`
	MemoryBytes int64  `json:"memory_bytes"`
	OS          string `json:"os"`
	GoVersion   string `json:"go"`
	GitVersion  string `json:"git"`
}

// Repository is one benchmark input as served by the emulator.
type Repository struct {
	Slug      string `json:"slug"`
	Source    string `json:"source"`
	Objects   int64  `json:"objects"`
	Refs      int    `json:"refs"`
	PackBytes int64  `json:"pack_bytes"`
}

// Case is one workload (or one variant of it) with its sides and ratios.
type Case struct {
	Workload string   `json:"workload"`
	Title    string   `json:"title"`
	Sides    []*Side  `json:"sides"`
	Ratios   []Ratio  `json:"ratios,omitempty"`
	Values   []Value  `json:"values,omitempty"`
	Notes    []string `json:"notes,omitempty"`
}

// Side is one contender of a case: every run's time, the peak RSS of its process tree over all
// runs, and what one run wrote and asked of the server.
type Side struct {
	Name    string    `json:"name"`
	Seconds []float64 `json:"seconds"`
	Median  float64   `json:"median_seconds"`
	Min     float64   `json:"min_seconds"`
	Max     float64   `json:"max_seconds"`
	PeakRSS int64     `json:"peak_rss_bytes,omitempty"`
	// Bytes is the median of what one run wrote (storage for GitSec, the repository on disk
	// for git).
	Bytes    int64           `json:"bytes_written"`
	Requests *countsSnapshot `json:"requests_per_run,omitempty"`
	bytes    []int64
}

// Ratio compares the medians of two sides.
type Ratio struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target,omitempty"`
	Met    *bool   `json:"met,omitempty"`
}

// Value is a measured quantity that is not a time (bytes stored, latency percentiles).
type Value struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

func newReport(o Options) *Report {
	return &Report{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), Scale: o.Scale, Runs: o.Runs}
}

func (c *Case) side(name string) *Side {
	for _, s := range c.Sides {
		if s.Name == name {
			return s
		}
	}
	s := &Side{Name: name}
	c.Sides = append(c.Sides, s)
	return s
}

func (s *Side) add(seconds float64, rss, bytes int64, req *countsSnapshot) {
	s.Seconds = append(s.Seconds, seconds)
	s.bytes = append(s.bytes, bytes)
	s.PeakRSS = max(s.PeakRSS, rss)
	if req != nil {
		s.Requests = req
	}
	sorted := slices.Clone(s.Seconds)
	slices.Sort(sorted)
	s.Min, s.Max, s.Median = sorted[0], sorted[len(sorted)-1], median(sorted)
	b := slices.Clone(s.bytes)
	slices.Sort(b)
	s.Bytes = b[len(b)/2]
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// ratio records a/b of two sides' medians; target, when set, is "<= X".
func (c *Case) ratio(name string, a, b *Side, target float64) {
	if b.Median == 0 {
		return
	}
	r := Ratio{Name: name, Value: a.Median / b.Median}
	if target > 0 {
		met := r.Value <= target
		r.Target, r.Met = fmt.Sprintf("<= %.2fx", target), &met
	}
	c.Ratios = append(c.Ratios, r)
}

func (rep *Report) addCase(workload, title string) *Case {
	c := &Case{Workload: workload, Title: title}
	rep.Cases = append(rep.Cases, c)
	return c
}

func (rep *Report) write(markdown, jsonPath string) error {
	if jsonPath != "" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := writeFile(jsonPath, append(data, '\n')); err != nil {
			return err
		}
	}
	if markdown != "" {
		if err := writeFile(markdown, []byte(rep.markdown())); err != nil {
			return err
		}
	}
	return nil
}

// Render rewrites the Markdown report from a bench-results.json, without measuring anything.
func Render(jsonPath, markdown string) error {
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		return err
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("%s: %w", jsonPath, err)
	}
	return writeFile(markdown, []byte(rep.markdown()))
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (rep *Report) markdown() string {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `make bench` (`gitsec bench`, `internal/benchmark`); do not edit by hand. Every workload runs GitSec\n")
	b.WriteString("and a stock-git baseline side by side in the same run, alternating them, on the real stack of the tests:\n")
	b.WriteString("the Bitbucket emulator serving real repositories through `git http-backend`, the Temporal dev server,\n")
	b.WriteString("Postgres, and versitygw as S3 storage. GitSec runs as a separate `gitsec worker` process. Ratios are\n")
	b.WriteString("GitSec's median over the baseline's median; below 1.00x GitSec is faster. Peak RSS is the largest\n")
	b.WriteString("resident size of the side's whole process tree (the worker with its git children; git with its helpers),\n")
	b.WriteString("sampled every 20 ms over all runs. What the numbers mean, the profile evidence and why targets are\n")
	b.WriteString("missed: [performance.md](performance.md).\n\n")
	fmt.Fprintf(&b, "- Date: %s; scale `%s`; %d runs per side; the whole run took %s.\n", rep.Date, rep.Scale, rep.Runs,
		(time.Duration(rep.DurationSeconds) * time.Second).String())
	m := rep.Machine
	fmt.Fprintf(&b, "- Machine: %d cores (%s), %s memory, %s, %s, git %s.\n", m.Cores, orUnknown(m.CPU), human(m.MemoryBytes), m.OS, m.GoVersion, m.GitVersion)
	for _, s := range rep.Settings {
		fmt.Fprintf(&b, "- %s\n", s)
	}
	b.WriteString("\n## Repositories\n\n| repository | source | objects | refs | pack |\n|---|---|---:|---:|---:|\n")
	for _, r := range rep.Repositories {
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %s |\n", r.Slug, r.Source, r.Objects, r.Refs, human(r.PackBytes))
	}
	last := ""
	for _, c := range rep.Cases {
		if c.Workload != last {
			fmt.Fprintf(&b, "\n## %s: %s\n", c.Workload, workloadTitles[c.Workload])
			last = c.Workload
		}
		fmt.Fprintf(&b, "\n### %s\n\n", c.Title)
		if len(c.Sides) > 0 {
			b.WriteString("| side | median | min | max | peak RSS | bytes written per run | requests per run (info/refs, upload-pack, REST) |\n|---|---:|---:|---:|---:|---:|---|\n")
			for _, s := range c.Sides {
				req := ""
				if s.Requests != nil {
					req = fmt.Sprintf("%d, %d, %d", s.Requests.GitList, s.Requests.GitFetch, s.Requests.REST)
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", s.Name, secs(s.Median), secs(s.Min), secs(s.Max), human(s.PeakRSS), human(s.Bytes), req)
			}
		}
		if len(c.Ratios) > 0 {
			b.WriteString("\n| ratio | value | target |\n|---|---:|---|\n")
			for _, r := range c.Ratios {
				target := r.Target
				if r.Met != nil {
					if *r.Met {
						target += " (met)"
					} else {
						target += " (missed)"
					}
				}
				fmt.Fprintf(&b, "| %s | %.2fx | %s |\n", r.Name, r.Value, target)
			}
		}
		if len(c.Values) > 0 {
			b.WriteString("\n| quantity | value |\n|---|---:|\n")
			for _, v := range c.Values {
				val := fmt.Sprintf("%.2f %s", v.Value, v.Unit)
				if v.Unit == "bytes" {
					val = human(int64(v.Value))
				}
				fmt.Fprintf(&b, "| %s | %s |\n", v.Name, val)
			}
		}
		for _, n := range c.Notes {
			fmt.Fprintf(&b, "\n%s\n", n)
		}
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown CPU"
	}
	return s
}

func secs(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
