package gitmirror

import (
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Progress is a snapshot of a running fetch, for activity heartbeats.
type Progress struct {
	// Phase is the server's current step ("Enumerating objects", "Counting
	// objects", "Compressing objects"), then "Receiving objects" while pack
	// bytes arrive, "Resolving deltas" when the git CLI indexes the pack,
	// then "Done".
	Phase string
	// Objects and TotalObjects come from the server's progress lines;
	// TotalObjects is 0 until the server has said it.
	Objects      int64
	TotalObjects int64
	// Bytes is how many pack bytes have been written to disk so far; while
	// the git CLI clones it is git's own rounded figure, and "Done" always
	// carries the exact size of the new packs.
	Bytes int64
}

// ProgressInterval bounds how often Fetch calls its progress callback, except
// for phase changes, which are always reported.
var ProgressInterval = time.Second

var (
	// "Counting objects:  45% (9/20)" and "Counting objects: 100% (20/20), done."
	percentLine = regexp.MustCompile(`^([A-Z][A-Za-z ]+):\s+\d+%\s+\((\d+)/(\d+)\)`)
	// "Enumerating objects: 20, done."
	countLine = regexp.MustCompile(`^([A-Z][A-Za-z ]+):\s+(\d+)(?:,|$)`)
	// "Total 20 (delta 3), reused 0 (delta 0), pack-reused 0"
	totalLine = regexp.MustCompile(`^Total (\d+)`)
	// The git CLI's "Receiving objects:  45% (9/20), 1.20 MiB | 2.00 MiB/s" (a fetch) and
	// "Writing objects: ..." (a push).
	receivedBytes = regexp.MustCompile(`^(?:Receiving|Writing) objects:.*?, ([\d.]+) (bytes|KiB|MiB|GiB)`)
)

var byteUnits = map[string]float64{"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}

// progressReporter turns go-git's sideband progress text and the pack byte
// count into rate-limited Progress callbacks.
type progressReporter struct {
	mu       sync.Mutex
	callback func(Progress)
	now      func() time.Time
	state    Progress
	last     time.Time
	partial  string
	// bytesFromText takes Bytes from git's receiving lines, when no pack
	// writer of ours counts them.
	bytesFromText bool
}

func newProgressReporter(callback func(Progress)) *progressReporter {
	return &progressReporter{callback: callback, now: time.Now}
}

// Write receives the server's progress messages. Lines end in \r (updates of
// one line) or \n.
func (p *progressReporter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	text := p.partial + string(b)
	for {
		i := strings.IndexAny(text, "\r\n")
		if i < 0 {
			break
		}
		p.parseLine(strings.TrimSpace(text[:i]))
		text = text[i+1:]
	}
	p.partial = text
	return len(b), nil
}

func (p *progressReporter) parseLine(line string) {
	line = strings.TrimPrefix(line, "remote: ")
	if p.bytesFromText {
		if m := receivedBytes.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseFloat(m[1], 64)
			p.state.Bytes = int64(n * byteUnits[m[2]])
		}
	}
	if m := percentLine.FindStringSubmatch(line); m != nil {
		done, _ := strconv.ParseInt(m[2], 10, 64)
		total, _ := strconv.ParseInt(m[3], 10, 64)
		p.update(m[1], done, total)
		return
	}
	if m := totalLine.FindStringSubmatch(line); m != nil {
		total, _ := strconv.ParseInt(m[1], 10, 64)
		p.update(p.state.Phase, total, total)
		return
	}
	if m := countLine.FindStringSubmatch(line); m != nil {
		n, _ := strconv.ParseInt(m[2], 10, 64)
		p.update(m[1], n, n)
	}
}

// addBytes counts pack bytes as they are written.
func (p *progressReporter) addBytes(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state.Bytes += int64(n)
	phase := p.state.Phase
	if !strings.HasPrefix(phase, "Receiving") {
		phase = "Receiving objects"
	}
	p.update(phase, p.state.Objects, p.state.TotalObjects)
}

func (p *progressReporter) update(phase string, objects, total int64) {
	changed := phase != p.state.Phase
	p.state.Phase, p.state.Objects, p.state.TotalObjects = phase, objects, total
	if p.callback == nil {
		return
	}
	now := p.now()
	if !changed && now.Sub(p.last) < ProgressInterval {
		return
	}
	p.last = now
	p.callback(p.state)
}

// finish always reports the final state, with the size of the new packs.
func (p *progressReporter) finish(bytes int64) Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state.Phase = "Done"
	p.state.Bytes = bytes
	if p.callback != nil {
		p.callback(p.state)
	}
	return p.state
}
