package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gitsec/gitsec/api"
)

// Every JSON answer the integration tests receive from /api/v1 is checked against the OpenAPI
// document: its operation must exist, the status must be described (or be an error in the
// shared error shape), and the body must fit the schema, with no field the document does not
// name. A handler that grows an undocumented field or status fails the tests that reach it.

type openAPIIndex struct {
	doc     map[string]any
	schemas map[string]any
	ops     []openAPIOp
}

type openAPIOp struct {
	method string
	path   string
	re     *regexp.Regexp
	op     map[string]any
}

var (
	openAPIIndexOnce sync.Once
	openAPIIdx       *openAPIIndex
)

func loadOpenAPIIndex() *openAPIIndex {
	openAPIIndexOnce.Do(func() {
		// Round-trip through JSON so the validator sees exactly what clients download.
		raw, _ := json.Marshal(api.OpenAPIDocument())
		var doc map[string]any
		_ = json.Unmarshal(raw, &doc)
		idx := &openAPIIndex{doc: doc, schemas: doc["components"].(map[string]any)["schemas"].(map[string]any)}
		for path, item := range doc["paths"].(map[string]any) {
			pattern := "^" + regexp.MustCompile(`\\\{[a-zA-Z]+\\\}`).ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`) + "$"
			for method, op := range item.(map[string]any) {
				idx.ops = append(idx.ops, openAPIOp{method: strings.ToUpper(method), path: path, re: regexp.MustCompile(pattern), op: op.(map[string]any)})
			}
		}
		// A literal segment beats a parameter (/repositories/{id} vs /installations/bitbucket/connect).
		sort.Slice(idx.ops, func(i, j int) bool { return strings.Count(idx.ops[i].path, "{") < strings.Count(idx.ops[j].path, "{") })
		openAPIIdx = idx
	})
	return openAPIIdx
}

// checkOpenAPI reports a response that the document does not describe.
func checkOpenAPI(t testing.TB, method, path string, status int, contentType string, raw []byte) {
	t.Helper()
	if !strings.HasPrefix(path, "/api/v1/") || !strings.HasPrefix(contentType, "application/json") {
		return
	}
	idx := loadOpenAPIIndex()
	var op *openAPIOp
	for i := range idx.ops {
		if idx.ops[i].method == method && idx.ops[i].re.MatchString(path) {
			op = &idx.ops[i]
			break
		}
	}
	if op == nil {
		if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
			return // no such route: the router's own answer, in the error shape (TestErrorShapes)
		}
		t.Errorf("OpenAPI: %s %s answered %d but the document has no such operation", method, path, status)
		return
	}
	responses := op.op["responses"].(map[string]any)
	resp, ok := responses[strconv.Itoa(status)].(map[string]any)
	if !ok {
		if status < 400 {
			t.Errorf("OpenAPI: %s %s (%s) answered %d, a status the document does not list", method, path, op.path, status)
			return
		}
		resp = responses["default"].(map[string]any)
	}
	content, _ := resp["content"].(map[string]any)
	media, _ := content["application/json"].(map[string]any)
	if media == nil {
		t.Errorf("OpenAPI: %s %s answered %d with JSON, but the document describes no JSON body", method, path, status)
		return
	}
	var body any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Errorf("OpenAPI: %s %s: body is not JSON: %v", method, path, err)
		return
	}
	if problems := idx.validate(media["schema"], body, "$", nil); len(problems) > 0 {
		t.Errorf("OpenAPI: %s %s (%s) answered %d with a body that does not fit the document:\n  %s", method, path, op.path, status, strings.Join(problems, "\n  "))
	}
}

func (idx *openAPIIndex) resolve(s map[string]any) map[string]any {
	for {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		s = idx.schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
	}
}

func (idx *openAPIIndex) validate(schemaAny any, v any, at string, problems []string) []string {
	s, _ := schemaAny.(map[string]any)
	if len(problems) > 20 || s == nil {
		return problems
	}
	s = idx.resolve(s)
	if alts, ok := s["anyOf"].([]any); ok {
		for _, alt := range alts {
			if len(idx.validate(alt, v, at, nil)) == 0 {
				return problems
			}
		}
		// "T or null" (a Go pointer) with a value: say what is wrong with it as a T.
		if len(alts) == 2 && v != nil {
			for _, alt := range alts {
				if m, _ := alt.(map[string]any); m["type"] != "null" {
					return idx.validate(alt, v, at, problems)
				}
			}
		}
		return append(problems, fmt.Sprintf("%s: %s fits none of the alternatives", at, short(v)))
	}
	types := map[string]bool{}
	switch t := s["type"].(type) {
	case string:
		types[t] = true
	case []any:
		for _, x := range t {
			types[x.(string)] = true
		}
	}
	if len(types) == 0 {
		return problems // an open schema (json.RawMessage)
	}
	kind := jsonKind(v)
	if !types[kind] && !(kind == "integer" && types["number"]) {
		return append(problems, fmt.Sprintf("%s: %s is %s; the document says %v", at, short(v), kind, s["type"]))
	}
	switch kind {
	case "object":
		obj := v.(map[string]any)
		props, _ := s["properties"].(map[string]any)
		for _, r := range asStrings(s["required"]) {
			if _, ok := obj[r]; !ok {
				problems = append(problems, fmt.Sprintf("%s: required field %q is missing", at, r))
			}
		}
		extra, _ := s["additionalProperties"].(map[string]any)
		for k, val := range obj {
			if ps, ok := props[k]; ok {
				problems = idx.validate(ps, val, at+"."+k, problems)
			} else if extra != nil {
				problems = idx.validate(extra, val, at+"."+k, problems)
			} else if props != nil {
				problems = append(problems, fmt.Sprintf("%s: field %q is not in the document", at, k))
			}
		}
	case "array":
		for i, item := range v.([]any) {
			problems = idx.validate(s["items"], item, fmt.Sprintf("%s[%d]", at, i), problems)
		}
	}
	return problems
}

func jsonKind(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		if x == float64(int64(x)) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}

func asStrings(v any) []string {
	var out []string
	for _, x := range asSlice(v) {
		out = append(out, x.(string))
	}
	return out
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

// TestOpenAPIConformanceCatchesDrift shows that the checker fails an undocumented field, a
// missing required one and an unlisted status, so its silence in the other tests means
// something.
func TestOpenAPIConformanceCatchesDrift(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"undocumented field", 200, `{"tenant":{"id":"x","name":"a","created_at":"2026-01-01T00:00:00Z"},"open_alerts":0,"secret":"x"}`, `field "secret" is not in the document`},
		{"missing field", 200, `{"tenant":{"id":"x","name":"a","created_at":"2026-01-01T00:00:00Z"}}`, `required field "open_alerts" is missing`},
		{"wrong type", 200, `{"tenant":{"id":"x","name":"a","created_at":"2026-01-01T00:00:00Z"},"open_alerts":"none"}`, `is string`},
		{"unlisted status", 201, `{}`, `a status the document does not list`},
		{"bad error shape", 500, `{"message":"x"}`, `required field "error" is missing`},
	}
	for _, tc := range cases {
		rec := &recordingT{TB: t}
		checkOpenAPI(rec, "GET", "/api/v1/me", tc.status, "application/json", []byte(tc.body))
		if !strings.Contains(rec.errors, tc.want) {
			t.Errorf("%s: checker said %q; want it to mention %q", tc.name, rec.errors, tc.want)
		}
	}
	rec := &recordingT{TB: t}
	checkOpenAPI(rec, "GET", "/api/v1/me", 200, "application/json", []byte(`{"tenant":{"id":"x","name":"a","created_at":"2026-01-01T00:00:00Z"},"open_alerts":2}`))
	if rec.errors != "" {
		t.Errorf("a valid /me body was refused: %s", rec.errors)
	}
}

type recordingT struct {
	testing.TB
	errors string
}

func (r *recordingT) Errorf(format string, args ...any) {
	r.errors += fmt.Sprintf(format, args...) + "\n"
}
func (r *recordingT) Helper() {}
