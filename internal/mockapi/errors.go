package mockapi

import (
	"encoding/json"
	"net/http"
)

// apiError is an OpenAI-shaped error answer.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// errorBody is the OpenAI error envelope {"error":{...}}.
type errorBody struct {
	Error *apiError `json:"error"`
}

// strp returns a pointer to s, or nil for "" so it encodes as JSON null.
func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func newError(status int, typ, code, param, msg string) *apiError {
	return &apiError{Status: status, Message: msg, Type: typ, Param: strp(param), Code: strp(code)}
}

func invalidRequest(param, msg string) *apiError {
	return newError(http.StatusBadRequest, "invalid_request_error", "", param, msg)
}

// writeJSON writes v as a JSON answer with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // cannot happen for the types used here
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"message":"mockapi: encode answer","type":"server_error","param":null,"code":null}}`)
	}
	writeRaw(w, status, "application/json", b)
}

// writeRaw writes body with content type ct and the given status.
func writeRaw(w http.ResponseWriter, status int, ct string, body []byte) {
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError writes e in the OpenAI error shape.
func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.Status, errorBody{Error: e})
}
