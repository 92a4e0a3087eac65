package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"
)

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// abortError ends the request with the project's error shape.
func abortError(c *gin.Context, status int, code, message string) {
	c.AbortWithStatusJSON(status, errorBody{Error: errorDetail{Code: code, Message: message}})
}

const maxJSONBody = 1 << 20

// decodeJSON reads a JSON body strictly: unknown fields and trailing data are 400s, so a typo in
// a field name never silently does nothing. It reports false after answering the error.
func decodeJSON(c *gin.Context, dst any) bool {
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, maxJSONBody+1))
	if err != nil {
		abortError(c, http.StatusBadRequest, "bad_request", "could not read the request body")
		return false
	}
	if len(body) > maxJSONBody {
		abortError(c, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", maxJSONBody))
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		abortError(c, http.StatusBadRequest, "invalid_json", describeJSONError(err))
		return false
	}
	if dec.More() {
		abortError(c, http.StatusBadRequest, "invalid_json", "request body holds more than one JSON value")
		return false
	}
	return true
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
