package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Duration is a time.Duration that reads and writes JSON as "250ms" (or a number of
// milliseconds).
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var ms float64
	if err := json.Unmarshal(b, &ms); err != nil {
		return fmt.Errorf("duration must be a string like \"250ms\" or milliseconds: %w", err)
	}
	*d = Duration(time.Duration(ms * float64(time.Millisecond)))
	return nil
}

// FaultRule injects a failure into matching requests (Target "http", the default) or
// webhook deliveries (Target "webhook").
//
// HTTP kinds: "429" (text/plain body, no Retry-After unless RetryAfter > 0, exactly like
// Bitbucket), "5xx" (Status, default 503), "4xx" (Status, default 403: an answer Bitbucket gives
// for one repository, such as a permission taken away; 401 carries WWW-Authenticate), "latency"
// (sleep Latency, then continue), "drop" (send part of the response, then close the connection).
//
// Webhook kinds: "drop" (the delivery is lost), "latency" (delayed by Latency), "duplicate"
// (the same delivery, with the same X-Request-UUID, body and attempt numbers, is POSTed twice
// in a row, as a redelivery would be) and "reorder" (the delivery is held back until the next
// delivery to the same hook URL has been sent, then sent right after it; if none comes within
// Hold, default 5 s, it is sent then). Latency rules add up and combine with the others; of
// the other kinds the first rule that fires wins.
//
// Matching: Method ("" = any), Path (glob where * matches any run of characters, including
// "/") or PathRegex, Event (webhook event key glob). Count > 0 makes the rule a burst that
// fires on the next Count matches only; otherwise Fraction in (0,1] fires at random, and
// neither means every match.
type FaultRule struct {
	ID             string   `json:"id,omitempty"`
	Target         string   `json:"target,omitempty"`
	Method         string   `json:"method,omitempty"`
	Path           string   `json:"path,omitempty"`
	PathRegex      string   `json:"path_regex,omitempty"`
	Event          string   `json:"event,omitempty"`
	Kind           string   `json:"kind"`
	Fraction       float64  `json:"fraction,omitempty"`
	Count          int      `json:"count,omitempty"`
	Status         int      `json:"status,omitempty"`
	Latency        Duration `json:"latency,omitempty"`
	RetryAfter     int      `json:"retry_after,omitempty"`
	DropAfterBytes int      `json:"drop_after_bytes,omitempty"`
	Hold           Duration `json:"hold,omitempty"`      // reorder: longest hold (default 5 s)
	Remaining      *int     `json:"remaining,omitempty"` // read only: burst left
	Fired          int      `json:"fired"`               // read only
}

type compiledRule struct {
	FaultRule
	pathRE  *regexp.Regexp
	eventRE *regexp.Regexp
	left    int
}

type faultSet struct {
	mu     sync.Mutex
	rules  []*compiledRule
	nextID int
}

func globToRegexp(glob string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range glob {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

func compileRule(r FaultRule) (*compiledRule, error) {
	c := &compiledRule{FaultRule: r, left: r.Count}
	if c.Target == "" {
		c.Target = "http"
	}
	switch c.Target {
	case "http":
		switch c.Kind {
		case "429", "4xx", "5xx", "latency", "drop":
		default:
			return nil, fmt.Errorf("unknown fault kind %q (want 429, 4xx, 5xx, latency or drop)", c.Kind)
		}
	case "webhook":
		switch c.Kind {
		case "drop", "latency", "duplicate", "reorder":
		default:
			return nil, fmt.Errorf("unknown webhook fault kind %q (want drop, latency, duplicate or reorder)", c.Kind)
		}
		if c.Kind == "reorder" && c.Hold == 0 {
			c.Hold = Duration(defaultReorderHold)
		}
	default:
		return nil, fmt.Errorf("unknown fault target %q (want http or webhook)", c.Target)
	}
	if c.Kind == "5xx" && c.Status == 0 {
		c.Status = http.StatusServiceUnavailable
	}
	if c.Kind == "5xx" && (c.Status < 500 || c.Status > 599) {
		return nil, fmt.Errorf("5xx fault needs a status between 500 and 599, got %d", c.Status)
	}
	if c.Kind == "4xx" && c.Status == 0 {
		c.Status = http.StatusForbidden
	}
	// 429 has its own kind, whose body and headers follow Bitbucket's rate limiter.
	if c.Kind == "4xx" && (c.Status < 400 || c.Status > 499 || c.Status == http.StatusTooManyRequests) {
		return nil, fmt.Errorf("4xx fault needs a status between 400 and 499 other than 429, got %d", c.Status)
	}
	if c.Latency < 0 || c.Hold < 0 {
		return nil, fmt.Errorf("latency and hold must not be negative")
	}
	if c.Fraction < 0 || c.Fraction > 1 {
		return nil, fmt.Errorf("fraction must be within [0,1]")
	}
	var err error
	switch {
	case c.PathRegex != "":
		c.pathRE, err = regexp.Compile(c.PathRegex)
	case c.Path != "":
		c.pathRE, err = globToRegexp(c.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("fault path pattern: %w", err)
	}
	if c.Event != "" {
		if c.eventRE, err = globToRegexp(c.Event); err != nil {
			return nil, fmt.Errorf("fault event pattern: %w", err)
		}
	}
	return c, nil
}

func newFaultSet(rules []FaultRule) (*faultSet, error) {
	f := &faultSet{}
	for _, r := range rules {
		if _, err := f.add(r); err != nil {
			return nil, fmt.Errorf("emulator: invalid fault rule in Options.Faults: %w", err)
		}
	}
	return f, nil
}

func (f *faultSet) add(r FaultRule) (FaultRule, error) {
	c, err := compileRule(r)
	if err != nil {
		return FaultRule{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	if c.ID == "" {
		c.ID = "fault-" + strconv.Itoa(f.nextID)
	}
	f.rules = append(f.rules, c)
	return c.snapshot(), nil
}

func (c *compiledRule) snapshot() FaultRule {
	r := c.FaultRule
	if c.Count > 0 {
		left := c.left
		r.Remaining = &left
	}
	return r
}

func (f *faultSet) list() []FaultRule {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []FaultRule{}
	for _, c := range f.rules {
		out = append(out, c.snapshot())
	}
	return out
}

func (f *faultSet) clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// fire decides whether a matching rule triggers now, consuming bursts.
func (c *compiledRule) fire() bool {
	switch {
	case c.Count > 0:
		if c.left <= 0 {
			return false
		}
		c.left--
	case c.Fraction > 0:
		if rand.Float64() >= c.Fraction {
			return false
		}
	}
	c.Fired++
	return true
}

// httpFaults returns the latency to apply and the first failure rule that fires.
func (f *faultSet) httpFaults(r *http.Request) (time.Duration, *FaultRule) {
	return f.firing(func(c *compiledRule) bool {
		return c.Target == "http" && (c.Method == "" || strings.EqualFold(c.Method, r.Method)) &&
			(c.pathRE == nil || c.pathRE.MatchString(r.URL.Path))
	})
}

// defaultReorderHold bounds how long a "reorder" fault holds a delivery back when no other
// delivery to the same URL comes.
const defaultReorderHold = 5 * time.Second

// webhookFaults returns the latency to add to a delivery and the first drop, duplicate or
// reorder rule that fires for it.
func (f *faultSet) webhookFaults(event, url string) (time.Duration, *FaultRule) {
	return f.firing(func(c *compiledRule) bool {
		return c.Target == "webhook" && (c.eventRE == nil || c.eventRE.MatchString(event)) &&
			(c.pathRE == nil || c.pathRE.MatchString(url))
	})
}

// firing walks the rules in order: latency rules that match and fire add up, and the first
// other rule that matches and fires ends the walk (later rules keep their bursts).
func (f *faultSet) firing(match func(*compiledRule) bool) (time.Duration, *FaultRule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var latency time.Duration
	for _, c := range f.rules {
		if !match(c) || !c.fire() {
			continue
		}
		if c.Kind == "latency" {
			latency += time.Duration(c.Latency)
			continue
		}
		rule := c.FaultRule
		return latency, &rule
	}
	return latency, nil
}

const rateLimitBody = "Rate limit for this resource has been exceeded"

// writeRateLimited answers like Bitbucket: text/plain, no Retry-After unless asked for.
func writeRateLimited(w http.ResponseWriter, retryAfter *int) {
	w.Header().Set("Content-Type", "text/plain")
	if retryAfter != nil && *retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(*retryAfter))
	}
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write([]byte(rateLimitBody))
}

func (s *Server) withFaults(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
	latency, rule := s.faults.httpFaults(r)
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	if rule == nil {
		next(w, r)
		return
	}
	s.log.Debug("fault injected", "kind", rule.Kind, "rule", rule.ID, "method", r.Method, "path", r.URL.Path)
	switch rule.Kind {
	case "429":
		writeRateLimited(w, &rule.RetryAfter)
	case "5xx":
		writeError(w, rule.Status, "Something went wrong (injected fault)", nil)
	case "4xx":
		msg := http.StatusText(rule.Status) + " (injected fault)"
		if strings.HasPrefix(r.URL.Path, "/2.0/") {
			writeError(w, rule.Status, msg, nil)
		} else {
			gitDenied(w, rule.Status, msg)
		}
	case "drop":
		dw := &dropWriter{ResponseWriter: w, limit: rule.DropAfterBytes}
		if dw.limit <= 0 {
			dw.limit = 32 * 1024
		}
		next(dw, r)
		dw.finish()
	}
}

// dropWriter forwards at most limit bytes (or half of a shorter body), then hijacks and
// closes the connection so the client sees a response cut mid-body.
type dropWriter struct {
	http.ResponseWriter
	limit   int
	status  int
	buf     []byte
	dropped bool
}

var errDropped = errors.New("connection dropped by fault injection")

func (d *dropWriter) WriteHeader(status int) {
	if d.status == 0 {
		d.status = status
	}
}

func (d *dropWriter) Write(p []byte) (int, error) {
	if d.dropped {
		return 0, errDropped
	}
	if d.status == 0 {
		d.status = http.StatusOK
	}
	d.buf = append(d.buf, p...)
	if len(d.buf) >= d.limit {
		d.cut(d.limit)
		return 0, errDropped
	}
	return len(p), nil
}

func (d *dropWriter) Flush() {}

func (d *dropWriter) finish() {
	if d.dropped {
		return
	}
	if d.status == 0 {
		d.status = http.StatusOK
	}
	d.cut(len(d.buf) / 2)
}

func (d *dropWriter) cut(n int) {
	d.dropped = true
	h := d.ResponseWriter.Header()
	h.Del("Content-Length")
	d.ResponseWriter.WriteHeader(d.status)
	_, _ = d.ResponseWriter.Write(d.buf[:n])
	if fl, ok := d.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	hj, ok := d.ResponseWriter.(http.Hijacker)
	if !ok {
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// RateLimits are per-user budgets over a rolling window (default one hour), like
// bitbucket.org: REST calls under /2.0/repositories/ and git HTTP requests. Zero disables a
// budget.
type RateLimits struct {
	REST   int      `json:"rest"`
	Git    int      `json:"git"`
	Window Duration `json:"window,omitempty"`
}

const (
	budgetREST = "rest"
	budgetGit  = "git"
)

type rateLimiter struct {
	mu     sync.Mutex
	limits RateLimits
	hits   map[string][]time.Time
}

func newRateLimiter(l *RateLimits) *rateLimiter {
	rl := &rateLimiter{hits: map[string][]time.Time{}}
	if l != nil {
		rl.set(*l)
	}
	return rl
}

func (rl *rateLimiter) set(l RateLimits) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if l.Window <= 0 {
		l.Window = Duration(time.Hour)
	}
	rl.limits = l
	rl.hits = map[string][]time.Time{}
}

func (rl *rateLimiter) get() RateLimits {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.limits
}

func (rl *rateLimiter) allow(user, budget string, now time.Time) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	limit := rl.limits.REST
	if budget == budgetGit {
		limit = rl.limits.Git
	}
	if limit <= 0 {
		return true
	}
	key := budget + "\x00" + user
	cutoff := now.Add(-time.Duration(rl.limits.Window))
	hits := rl.hits[key]
	i := 0
	for i < len(hits) && !hits[i].After(cutoff) {
		i++
	}
	hits = hits[i:]
	if len(hits) >= limit {
		rl.hits[key] = hits
		return false
	}
	rl.hits[key] = append(hits, now)
	return true
}
