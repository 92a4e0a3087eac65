package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgconn"
	"go.temporal.io/api/serviceerror"

	"github.com/gitsec/gitsec/internal/store"
)

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// RequestID names the server's log line of a 5xx, so a caller can report it.
	RequestID string `json:"request_id,omitempty"`
}

// abortError ends the request with the project's error shape.
func abortError(c *gin.Context, status int, code, message string) {
	c.Set(ctxErrorCode, code)
	d := errorDetail{Code: code, Message: message}
	if status >= 500 {
		d.RequestID = c.GetString(ctxRequestID)
	}
	c.AbortWithStatusJSON(status, errorBody{Error: d})
}

// apiError is what a handler returns instead of writing an error itself; handle turns it into
// the response and the log line. A zero status means the cause decides: 503 when a dependency
// is unreachable, 500 for anything else.
type apiError struct {
	status  int
	code    string
	message string
	cause   error
}

func (e *apiError) Error() string {
	if e.cause == nil {
		return e.message
	}
	return e.message + ": " + e.cause.Error()
}

func (e *apiError) Unwrap() error { return e.cause }

func errNotFound(what, id string) error {
	return &apiError{status: http.StatusNotFound, code: "not_found", message: what + " " + id + " does not exist"}
}

// errInvalid is a 400 for input the caller can fix; the message names the bad value.
func errInvalid(code, message string) error {
	return &apiError{status: http.StatusBadRequest, code: code, message: message}
}

// errConflict is a 409: the request is valid but the resource's state refuses it.
func errConflict(code, message string) error {
	return &apiError{status: http.StatusConflict, code: code, message: message}
}

// failed says what could not be done; the cause decides the status (see classify) and is
// logged, never shown: driver errors name hosts and database users.
func failed(message string, cause error) error {
	return &apiError{message: message, cause: cause}
}

// responder writes an error answer: JSON (abortError) or, on the OAuth callback, a page.
type responder func(c *gin.Context, status int, code, message string)

// handle adapts a handler that returns its failure, so every error is mapped and logged in one
// place.
func (h *handlers) handle(fn func(*gin.Context) error) gin.HandlerFunc {
	return h.handleWith(abortError, fn)
}

func (h *handlers) handleWith(respond responder, fn func(*gin.Context) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := fn(c); err != nil {
			h.fail(c, respond, err)
		}
	}
}

// fail answers err and logs it: every 5xx at error level with its cause, a 4xx with a cause
// (for example a refused OAuth code) at warning level.
func (h *handlers) fail(c *gin.Context, respond responder, err error) {
	reqID := c.GetString(ctxRequestID)
	status, code, message := classify(err, reqID)
	attrs := []any{"route", c.FullPath(), "request_id", reqID, "status", status, "code", code, "error", err.Error()}
	var ae *apiError
	switch {
	case status >= 500:
		h.deps.Logger.ErrorContext(c.Request.Context(), "request failed", attrs...)
	case errors.As(err, &ae) && ae.cause != nil:
		h.deps.Logger.WarnContext(c.Request.Context(), "request refused", attrs...)
	}
	respond(c, status, code, message)
}

// classify maps an error to its answer. An explicit status wins; otherwise store sentinels
// give 404/409/400, an unreachable dependency 503 and anything else (a bug) 500.
func classify(err error, reqID string) (status int, code, message string) {
	message = "the request failed"
	var ae *apiError
	if errors.As(err, &ae) {
		if ae.status != 0 {
			return ae.status, ae.code, ae.message
		}
		message = ae.message
	}
	switch dep, down := dependencyDown(err); {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "not_found", message + ": not found"
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict, "conflict", message + ": it already exists"
	case errors.Is(err, store.ErrBadCursor):
		return http.StatusBadRequest, "invalid_parameter", message + ": the cursor is not one this API returned"
	case errors.Is(err, context.Canceled):
		// The caller went away; nobody reads the answer, the log line still says why.
		return 499, "cancelled", message + ": the request was cancelled"
	case down:
		return http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("%s: %s is unavailable; retry later (request id %s)", message, dep, reqID)
	default:
		return http.StatusInternalServerError, "internal", fmt.Sprintf("%s: internal error (request id %s)", message, reqID)
	}
}

// dependencyDown tells an unreachable or overloaded dependency (worth a retry: 503) from a
// failure a retry would not fix, and names the dependency for the caller.
func dependencyDown(err error) (string, bool) {
	var connect *pgconn.ConnectError
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &connect):
		return "the metadata store (Postgres)", true
	case errors.As(err, &pgErr):
		// 08 connection exception, 53 insufficient resources, 57P0x shutdown or starting up.
		if strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "53") || strings.HasPrefix(pgErr.Code, "57P0") {
			return "the metadata store (Postgres)", true
		}
		return "", false
	}
	var unavailable *serviceerror.Unavailable
	var deadline *serviceerror.DeadlineExceeded
	var exhausted *serviceerror.ResourceExhausted
	if errors.As(err, &unavailable) || errors.As(err, &deadline) || errors.As(err, &exhausted) {
		return "the workflow service (Temporal)", true
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) {
		return "a dependency", true
	}
	return "", false
}

const maxJSONBody = 1 << 20

// decodeJSON reads a JSON body of at most limit bytes strictly: unknown fields and trailing
// data are 400s, so a typo in a field name never silently does nothing.
func decodeJSON(c *gin.Context, dst any) error {
	return decodeJSONLimit(c, dst, maxJSONBody)
}

func decodeJSONLimit(c *gin.Context, dst any, limit int64) error {
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, limit+1))
	if err != nil {
		return errInvalid("bad_request", "could not read the request body")
	}
	if int64(len(body)) > limit {
		return &apiError{status: http.StatusRequestEntityTooLarge, code: "body_too_large", message: fmt.Sprintf("request body exceeds %d bytes", limit)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return errInvalid("invalid_json", describeJSONError(err))
	}
	if dec.More() {
		return errInvalid("invalid_json", "request body holds more than one JSON value")
	}
	return nil
}

func describeJSONError(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "request body is empty; a JSON object is required"
	case errors.As(err, &syntax):
		return fmt.Sprintf("malformed JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be %s", typ.Field, typ.Type)
	default:
		// json: unknown field "x"
		return err.Error()
	}
}
