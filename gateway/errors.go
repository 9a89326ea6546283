package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// apiError is Anthropic's error shape, used for every error the gateway itself writes.
// Upstream errors pass through unchanged.
type apiError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	// The original tool's details for "no compatible account", so clients show the reason.
	RequestedModel    string         `json:"requested_model,omitempty"`
	AvailableAccounts []accountBrief `json:"available_accounts,omitempty"`
}

type accountBrief struct {
	Name   string   `json:"name"`
	Plan   string   `json:"plan"`
	Models []string `json:"models"`
}

func newAPIError(errType, msg string) *apiError {
	e := &apiError{Type: "error"}
	e.Error.Type, e.Error.Message = errType, msg
	return e
}

func writeError(w http.ResponseWriter, status int, errType, msg string) {
	writeAPIError(w, status, newAPIError(errType, msg))
}

func writeAPIError(w http.ResponseWriter, status int, e *apiError) {
	b, _ := json.Marshal(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// errorTypeFor is the Anthropic error type of a status the gateway answers with.
func errorTypeFor(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_request_error"
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusGatewayTimeout:
		return "timeout_error"
	case 529:
		return "overloaded_error"
	}
	return "api_error"
}
