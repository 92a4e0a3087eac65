package api_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/gitsec/gitsec/api"
)

var ginParam = regexp.MustCompile(`:([a-zA-Z]+)`)

// Every registered /api/v1 route is in the OpenAPI document, and the document describes no route
// that does not exist: a route added without its description fails here.
func TestOpenAPIDocumentCoversEveryRoute(t *testing.T) {
	h := api.NewHandler(api.Deps{})
	routes, ok := h.(interface{ Routes() gin.RoutesInfo })
	if !ok {
		t.Fatalf("the handler %T does not list its routes", h)
	}
	registered := map[string]bool{}
	for _, r := range routes.Routes() {
		if !strings.HasPrefix(r.Path, "/api/v1/") {
			continue
		}
		path := ginParam.ReplaceAllString(strings.ReplaceAll(r.Path, `\:`, "\x00"), "{$1}")
		registered[strings.ToLower(r.Method)+" "+strings.ReplaceAll(path, "\x00", ":")] = true
	}
	if len(registered) < 35 {
		t.Fatalf("only %d /api/v1 routes found: %v", len(registered), registered)
	}
	doc := api.OpenAPIDocument()
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("the document does not encode: %v", err)
	}
	var parsed struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &parsed); err != nil || parsed.OpenAPI != "3.1.0" {
		t.Fatalf("document: %v %q", err, parsed.OpenAPI)
	}
	described := map[string]bool{}
	for path, ops := range parsed.Paths {
		for method := range ops {
			described[method+" "+path] = true
		}
	}
	var missing, extra []string
	for k := range registered {
		if !described[k] {
			missing = append(missing, k)
		}
	}
	for k := range described {
		if !registered[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("OpenAPI drift:\n registered but not described: %v\n described but not registered: %v", missing, extra)
	}
	// Every $ref points at a component the document has.
	var full struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	json.Unmarshal(raw, &full)
	for _, m := range regexp.MustCompile(`"#/components/schemas/([A-Za-z0-9]+)"`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := full.Components.Schemas[m[1]]; !ok {
			t.Errorf("$ref to missing component %s", m[1])
		}
	}
}

// The document is served without a token, as JSON.
func TestOpenAPIDocumentIsServed(t *testing.T) {
	f := newFixture(t)
	f.serve(t)
	resp, err := http.Get(f.srv.URL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != http.StatusOK || doc["openapi"] != "3.1.0" {
		t.Fatalf("GET /api/v1/openapi.json = %d %v", resp.StatusCode, err)
	}
	paths := doc["paths"].(map[string]any)
	restores := paths["/api/v1/restores"].(map[string]any)["post"].(map[string]any)
	if restores["requestBody"] == nil {
		t.Fatalf("POST /api/v1/restores has no request body: %v", restores)
	}
}
