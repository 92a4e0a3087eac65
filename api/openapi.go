package api

import (
	"encoding/json"
	"net/http"
	"path"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/websession"
)

// The OpenAPI 3.1 document of /api/v1 is built from the same Go types the handlers answer with,
// so a field added to a response appears in the document without anyone editing it. What the
// types cannot say (routes, parameters, statuses) is the operation table below; a test walks
// the registered routes and fails when one is missing here or described but not registered.

type apiParam struct {
	name, in, description string
	schema                map[string]any
}

func query(name, description string) apiParam {
	return apiParam{name: name, in: "query", description: description, schema: map[string]any{"type": "string"}}
}

func queryInt(name, description string) apiParam {
	return apiParam{name: name, in: "query", description: description, schema: map[string]any{"type": "integer"}}
}

type apiOperation struct {
	method, path, summary string
	params                []apiParam
	// body is a value of the request body's type (nil: none); bodyOptional marks one that may
	// be left out.
	body         any
	bodyOptional bool
	// responses maps statuses to a value of the body's type (nil: no body).
	responses map[int]any
}

var (
	limitParam  = queryInt("limit", "page size")
	cursorParam = query("cursor", "the next_cursor of the previous page")
)

// apiOperations are the routes of /api/v1 with what the types cannot say.
var apiOperations = []apiOperation{
	{method: "GET", path: "/api/v1/me", summary: "The caller's tenant, token and open alerts", responses: map[int]any{200: Me{}}},
	{method: "GET", path: "/api/v1/audit-events", summary: "The tenant's audit log, newest first", params: []apiParam{limitParam, cursorParam}, responses: map[int]any{200: AuditEvents{}}},
	{method: "POST", path: "/api/v1/tokens", summary: "Create another API token (shown once)", body: createTokenRequest{}, responses: map[int]any{201: CreatedToken{}}},
	{method: "GET", path: "/api/v1/tokens", summary: "The tenant's API tokens (never the secrets)", responses: map[int]any{200: tokenList{}}},
	{method: "DELETE", path: "/api/v1/tokens/{id}", summary: "Revoke an API token (not the last one)", responses: map[int]any{200: tokenView{}}},

	{method: "POST", path: "/api/v1/installations/bitbucket/connect", summary: "A connect link for the read-only backup app (sets the binding cookie); the optional body's return_to sends the browser back to a dashboard page", body: connectRequest{}, bodyOptional: true, responses: map[int]any{200: ConnectLink{}}},
	{method: "POST", path: "/api/v1/installations/bitbucket/complete", summary: "Finish a connect whose callback landed in another browser", body: completeConnectRequest{}, responses: map[int]any{200: Connected{}, 201: Connected{}}},
	{method: "GET", path: "/api/v1/installations", summary: "The tenant's installations", responses: map[int]any{200: Installations{}}},
	{method: "GET", path: "/api/v1/installations/{id}", summary: "One installation: workspaces, progress, webhook health, Restore App", responses: map[int]any{200: InstallationDetail{}}},
	{method: "DELETE", path: "/api/v1/installations/{id}", summary: "Uninstall (backups are kept)", responses: map[int]any{202: WorkflowStarted{}}},
	{method: "POST", path: "/api/v1/installations/{id}/sync", summary: "Re-run discovery", responses: map[int]any{202: WorkflowStarted{}}},
	{method: "GET", path: "/api/v1/installations/{id}/webhook-deliveries", summary: "The installation's latest webhook deliveries", params: []apiParam{limitParam}, responses: map[int]any{200: WebhookDeliveries{}}},
	{method: "POST", path: "/api/v1/installations/{id}/repositories:bulk", summary: "Include or exclude repositories by glob pattern", body: bulkRequest{}, responses: map[int]any{200: BulkInclusion{}}},
	{method: "GET", path: "/api/v1/installations/{id}/retention-policy", summary: "The installation's retention policy (the default of its repositories), or GitSec's default", responses: map[int]any{200: RetentionPolicyView{}}},
	{method: "PUT", path: "/api/v1/installations/{id}/retention-policy", summary: "Set the installation's retention policy", body: RetentionPolicyDoc{}, responses: map[int]any{200: RetentionPolicyView{}}},
	{method: "DELETE", path: "/api/v1/installations/{id}/retention-policy", summary: "Go back to GitSec's default retention policy", responses: map[int]any{200: RetentionPolicyView{}}},
	{method: "POST", path: "/api/v1/installations/{id}/retention-runs", summary: "Run retention over the installation's repositories now (dry_run: report only)", body: retentionRunRequest{}, bodyOptional: true, responses: map[int]any{202: RetentionRunStarted{}}},
	{method: "POST", path: "/api/v1/installations/{id}/restore-app/connect", summary: "A connect link for the Restore App (write access)", responses: map[int]any{200: ConnectLink{}}},
	{method: "GET", path: "/api/v1/installations/{id}/restore-app", summary: "Whether the Restore App is installed, as whom, since when", responses: map[int]any{200: RestoreAppGrant{}}},
	{method: "DELETE", path: "/api/v1/installations/{id}/restore-app", summary: "Drop the Restore App's grant", responses: map[int]any{200: RestoreAppGrant{}}},

	{method: "POST", path: "/api/v1/restores", summary: "Restore a snapshot into a new or existing Bitbucket repository", body: CreateRestoreRequest{}, responses: map[int]any{202: RestoreView{}}},
	{method: "GET", path: "/api/v1/restores", summary: "Restores, newest first", params: []apiParam{query("repository_id", "only this repository's"), limitParam}, responses: map[int]any{200: RestoreList{}}},
	{method: "GET", path: "/api/v1/restores/{id}", summary: "One restore with its progress or result", responses: map[int]any{200: RestoreView{}}},
	{method: "POST", path: "/api/v1/restores/{id}/cancel", summary: "Stop a running restore", responses: map[int]any{202: RestoreView{}}},

	{method: "GET", path: "/api/v1/repositories", summary: "The tenant's repositories, paged", params: []apiParam{
		query("installation", "installation ID"), query("workspace", "workspace slug"), query("included", "true or false"),
		query("q", "substring of workspace/slug"),
		query("status", "last backup state, one or more of never, queued (waiting for the first backup), succeeded "+
			"(including a run that found nothing to back up) and failed, comma-separated; \"running\" is not a filter, "+
			"only GET /api/v1/repositories/{id}/backup-status knows a run is under way"),
		cursorParam, queryInt("limit", "page size, 1 to 500 (default 50)")}, responses: map[int]any{200: Repositories{}}},
	{method: "GET", path: "/api/v1/repositories/{id}", summary: "One repository", responses: map[int]any{200: RepositoryDetail{}}},
	{method: "PATCH", path: "/api/v1/repositories/{id}", summary: "Include or exclude one repository", body: patchRepositoryRequest{}, responses: map[int]any{200: RepositoryDetail{}}},
	{method: "POST", path: "/api/v1/repositories/{id}/backups", summary: "Queue a backup", responses: map[int]any{202: BackupQueued{}}},
	{method: "GET", path: "/api/v1/repositories/{id}/snapshots", summary: "The repository's snapshots, newest first", params: []apiParam{limitParam, cursorParam}, responses: map[int]any{200: Snapshots{}}},
	{method: "GET", path: "/api/v1/repositories/{id}/backup-status", summary: "The running backup's state, or the last one's", responses: map[int]any{200: BackupStatus{}}},
	{method: "GET", path: "/api/v1/repositories/{id}/retention", summary: "The repository's effective retention policy and its last retention run", responses: map[int]any{200: RepositoryRetention{}}},
	{method: "PUT", path: "/api/v1/repositories/{id}/retention-policy", summary: "Give the repository its own retention policy", body: RetentionPolicyDoc{}, responses: map[int]any{200: RepositoryRetention{}}},
	{method: "DELETE", path: "/api/v1/repositories/{id}/retention-policy", summary: "Let the repository inherit its installation's retention policy", responses: map[int]any{200: RepositoryRetention{}}},
	{method: "GET", path: "/api/v1/repositories/{id}/retention-plan", summary: "Dry run: the snapshots the effective policy would forget and keep (with reasons) and the bytes freed", responses: map[int]any{200: RetentionPlan{}}},
	{method: "POST", path: "/api/v1/repositories/{id}/drills", summary: "Drill the latest (or a named) snapshot", body: drillRequest{}, responses: map[int]any{202: DrillStarted{}}},
	{method: "GET", path: "/api/v1/repositories/{id}/drills", summary: "The repository's recent drills", params: []apiParam{limitParam}, responses: map[int]any{200: Drills{}}},
	{method: "GET", path: "/api/v1/drills/{id}", summary: "One drill with its step timings", responses: map[int]any{200: DrillDetail{}}},
	{method: "GET", path: "/api/v1/alerts", summary: "Open alerts (failed drills)", responses: map[int]any{200: Alerts{}}},
	{method: "GET", path: "/api/v1/activity", summary: "Recent backups across repositories, failing repositories first", params: []apiParam{
		queryInt("limit", "recent snapshots per page, 1 to 200 (default 50); the failing list is not paged (at most 100)"),
		query("cursor", "the next_cursor of the previous page (pages recent only)")}, responses: map[int]any{200: RecentActivity{}}},

	{method: "GET", path: "/api/v1/snapshots/{id}", summary: "One snapshot", responses: map[int]any{200: SnapshotDetail{}}},
	{method: "GET", path: "/api/v1/snapshots/{id}/pull-requests", summary: "The snapshot's pull requests", params: []apiParam{
		query("state", "OPEN, MERGED, DECLINED or SUPERSEDED"), query("q", "substring of title or description"), cursorParam, limitParam},
		responses: map[int]any{200: PullRequests{}}},
	{method: "GET", path: "/api/v1/snapshots/{id}/pull-requests/{number}", summary: "One pull request with comments, tasks, activity", responses: map[int]any{200: PullRequestDetail{}}},
	{method: "GET", path: "/api/v1/snapshots/{id}/metadata", summary: "The repository's settings as the snapshot exported them", responses: map[int]any{200: Metadata{}}},
	{method: "PUT", path: "/api/v1/snapshots/{id}/legal-hold", summary: "Put the snapshot under legal hold: retention never forgets it until released", body: legalHoldRequest{}, responses: map[int]any{200: SnapshotDetail{}}},
	{method: "DELETE", path: "/api/v1/snapshots/{id}/legal-hold", summary: "Release the snapshot's legal hold", responses: map[int]any{200: SnapshotDetail{}}},
	{method: "GET", path: "/api/v1/snapshots/{id}/archive", summary: "Download the snapshot as a tar (bundle chain or bare repository)", params: []apiParam{query("format", "bundle (default) or tar")},
		responses: map[int]any{200: archiveDownload{}}},
	{method: "GET", path: "/api/v1/openapi.json", summary: "This document", responses: map[int]any{200: json.RawMessage{}}},
}

// archiveDownload marks a binary tar response.
type archiveDownload struct{}

var (
	openAPIOnce sync.Once
	openAPIJSON []byte
)

// serveOpenAPI answers the document; it needs no token (it describes, it reveals nothing).
func serveOpenAPI(c *gin.Context) {
	openAPIOnce.Do(func() {
		openAPIJSON, _ = json.MarshalIndent(OpenAPIDocument(), "", "  ")
	})
	c.Data(http.StatusOK, "application/json", openAPIJSON)
}

var pathParam = regexp.MustCompile(`\{([a-zA-Z]+)\}`)

// OpenAPIDocument is the OpenAPI 3.1 description of /api/v1.
func OpenAPIDocument() map[string]any {
	r := &schemaReflector{components: map[string]any{}}
	errRef := r.schema(reflect.TypeOf(errorBody{}))
	paths := map[string]any{}
	for _, op := range apiOperations {
		item, _ := paths[op.path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[op.path] = item
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(op.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, p := range op.params {
			params = append(params, map[string]any{"name": p.name, "in": p.in, "description": p.description, "schema": p.schema})
		}
		responses := map[string]any{
			"default": map[string]any{"description": "an error: 4xx for bad input or state, 5xx when GitSec or a dependency failed",
				"content": map[string]any{"application/json": map[string]any{"schema": errRef}}},
		}
		for status, body := range op.responses {
			resp := map[string]any{"description": http.StatusText(status)}
			switch body.(type) {
			case nil:
			case archiveDownload:
				resp["content"] = map[string]any{"application/x-tar": map[string]any{"schema": map[string]any{"type": "string", "contentMediaType": "application/x-tar"}}}
			default:
				resp["content"] = map[string]any{"application/json": map[string]any{"schema": r.schema(reflect.TypeOf(body))}}
			}
			responses[itoa(status)] = resp
		}
		o := map[string]any{"summary": op.summary, "operationId": operationID(op), "responses": responses}
		if len(params) > 0 {
			o["parameters"] = params
		}
		if op.body != nil {
			o["requestBody"] = map[string]any{"required": !op.bodyOptional,
				"content": map[string]any{"application/json": map[string]any{"schema": r.schema(reflect.TypeOf(op.body))}}}
		}
		if op.path != "/api/v1/openapi.json" {
			o["security"] = []any{map[string]any{"bearer": []any{}}, map[string]any{"session": []any{}}}
		}
		item[strings.ToLower(op.method)] = o
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "GitSec API", "version": "1",
			"description": "Backups of Bitbucket Cloud accounts. Errors are {\"error\":{\"code\",\"message\"}}; another tenant's IDs answer 404."},
		"paths": paths,
		"components": map[string]any{
			"schemas": r.components,
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "an API token, gsk_..."},
				"session": map[string]any{"type": "apiKey", "in": "cookie", "name": websession.CookieName,
					"description": "the dashboard's session (sign in at /signin); requests other than GET, HEAD and OPTIONS must also send the page's CSRF token in X-CSRF-Token"},
			},
		},
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func operationID(op apiOperation) string {
	parts := strings.FieldsFunc(op.path, func(r rune) bool { return r == '/' || r == '{' || r == '}' || r == ':' || r == '-' || r == '.' })
	id := strings.ToLower(op.method)
	for _, p := range parts[2:] {
		id += strings.ToUpper(p[:1]) + p[1:]
	}
	return id
}

// schemaReflector turns Go types into JSON Schemas (the dialect of OpenAPI 3.1), named structs
// as components.
type schemaReflector struct {
	components map[string]any
	// owners is the Go type behind each component name: two packages may both have a
	// BackupStatus, and each must keep its own schema.
	owners map[string]reflect.Type
}

// componentName is t's name, qualified by its package when another type took the name first.
func (r *schemaReflector) componentName(t reflect.Type) string {
	name := typeName(t)
	if r.owners == nil {
		r.owners = map[string]reflect.Type{}
	}
	if owner, ok := r.owners[name]; ok && owner != t {
		pkg := path.Base(t.PkgPath())
		name = strings.ToUpper(pkg[:1]) + pkg[1:] + name
	}
	r.owners[name] = t
	return name
}

var (
	timeType = reflect.TypeOf(time.Time{})
	uuidType = reflect.TypeOf(uuid.UUID{})
	rawType  = reflect.TypeOf(json.RawMessage{})
)

func typeName(t reflect.Type) string {
	name := t.Name()
	if name == "" {
		return ""
	}
	return strings.ToUpper(name[:1]) + name[1:]
}

func (r *schemaReflector) schema(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == uuidType:
		return map[string]any{"type": "string", "format": "uuid"}
	case t == rawType:
		return map[string]any{}
	}
	switch t.Kind() {
	case reflect.Pointer:
		inner := r.schema(t.Elem())
		return map[string]any{"anyOf": []any{inner, map[string]any{"type": "null"}}}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": []any{"array", "null"}, "items": r.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": r.schema(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		name := typeName(t)
		if name != "" {
			name = r.componentName(t)
			if _, seen := r.components[name]; !seen {
				r.components[name] = map[string]any{} // recursion guard
				r.components[name] = r.object(t)
			}
			return map[string]any{"$ref": "#/components/schemas/" + name}
		}
		return r.object(t)
	}
	return map[string]any{}
}

func (r *schemaReflector) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	r.fields(t, props, &required)
	sort.Strings(required)
	out := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		out["required"] = required
	}
	return out
}

func (r *schemaReflector) fields(t reflect.Type, props map[string]any, required *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				r.fields(ft, props, required)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = r.schema(f.Type)
		if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
			*required = append(*required, name)
		}
	}
}
