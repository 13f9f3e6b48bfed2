package mockapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/sluice-dev/sluice/internal/mockapi"
)

func Example() {
	mock := mockapi.New(mockapi.Config{Models: []string{"grok-3-mini"}, Seed: 1})
	srv := httptest.NewServer(mock)
	defer srv.Close()
	defer mock.Close()

	body := `{"model":"grok-3-mini","messages":[{"role":"user","content":"Hello, mock!"}],"max_tokens":6}`
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var out struct {
		Choices []struct {
			Message      struct{ Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusCode, out.Choices[0].FinishReason)
	fmt.Println(out.Choices[0].Message.Content)
	fmt.Println(out.Usage.PromptTokens, out.Usage.CompletionTokens)
	fmt.Println(mock.Stats().Requests)
	// Output:
	// 200 length
	// mock answer #fe972408: Hello, mock! ut
	// 7 6
	// 1
}
