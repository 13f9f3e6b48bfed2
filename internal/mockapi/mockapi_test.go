package mockapi

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // substring naming the field; "" = valid
	}{
		{"default", func(*Config) {}, ""},
		{"zero value", func(c *Config) { *c = Config{} }, ""},
		{"all faults sum to one", func(c *Config) {
			c.Fail5xx, c.Overload429, c.Hang, c.Reset, c.Malformed, c.Quota, c.StreamStallProb = 0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1
		}, ""},
		{"negative latency", func(c *Config) { c.Latency = -time.Millisecond }, "Latency"},
		{"negative jitter", func(c *Config) { c.Jitter = -1 }, "Jitter"},
		{"negative ttft", func(c *Config) { c.TTFT = -1 }, "TTFT"},
		{"negative keepalive", func(c *Config) { c.KeepAlive = -1 }, "KeepAlive"},
		{"negative tps", func(c *Config) { c.TokensPerSecond = -1 }, "TokensPerSecond"},
		{"nan tps", func(c *Config) { c.TokensPerSecond = math.NaN() }, "TokensPerSecond"},
		{"negative completion tokens", func(c *Config) { c.CompletionTokens = -1 }, "CompletionTokens"},
		{"negative rpm", func(c *Config) { c.RPM = -1 }, "RPM"},
		{"negative tpm", func(c *Config) { c.TPM = -1 }, "TPM"},
		{"fail5xx above one", func(c *Config) { c.Fail5xx = 1.5 }, "Fail5xx"},
		{"hang negative", func(c *Config) { c.Hang = -0.1 }, "Hang"},
		{"quota nan", func(c *Config) { c.Quota = math.NaN() }, "Quota"},
		{"stall above one", func(c *Config) { c.StreamStallProb = 2 }, "StreamStallProb"},
		{"sum above one", func(c *Config) { c.Reset, c.Malformed = 0.6, 0.6 }, "sum to <= 1"},
		{"empty model", func(c *Config) { c.Models = []string{"grok-4", ""} }, "Models[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewPanicsOnInvalidConfig(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New with RPM=-1 did not panic")
		}
	}()
	New(Config{RPM: -1})
}

func TestDefaultConfigMatchesEnvconfigDefaults(t *testing.T) {
	var cfg Config
	if err := envconfig.Process(EnvPrefix, &cfg); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Fatalf("envconfig defaults %+v != DefaultConfig() %+v (is a %s_* variable set?)", cfg, DefaultConfig(), EnvPrefix)
	}
}

func TestEnvconfigReadsVariables(t *testing.T) {
	t.Setenv("SLUICE_MOCK_RPM", "600")
	t.Setenv("SLUICE_MOCK_FAIL_5XX", "0.25")
	t.Setenv("SLUICE_MOCK_MODELS", "a,b")
	t.Setenv("SLUICE_MOCK_TTFT", "150ms")
	t.Setenv("SLUICE_MOCK_STREAM_STALL", "0.5")
	var cfg Config
	if err := envconfig.Process(EnvPrefix, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.RPM != 600 || cfg.Fail5xx != 0.25 || !reflect.DeepEqual(cfg.Models, []string{"a", "b"}) ||
		cfg.TTFT != 150*time.Millisecond || cfg.StreamStallProb != 0.5 {
		t.Fatalf("unexpected config %+v", cfg)
	}
}

func TestRoutesAndAuth(t *testing.T) {
	_, srv := startServer(t, Config{APIKey: "sk-good", Models: []string{"grok-4", "grok-3-mini"}})
	ok := reqBody(t, "grok-4", "hi", nil)
	bearer := func(k string) http.Header { return http.Header{"Authorization": {"Bearer " + k}} }
	tests := []struct {
		name     string
		path     string
		body     string
		header   http.Header
		status   int
		wantType string
		wantCode string
	}{
		{"good key", "/v1/chat/completions", ok, bearer("sk-good"), 200, "", ""},
		{"without v1 prefix", "/chat/completions", ok, bearer("sk-good"), 200, "", ""},
		{"missing key", "/v1/chat/completions", ok, nil, 401, "invalid_request_error", "invalid_api_key"},
		{"wrong key", "/v1/chat/completions", ok, bearer("sk-bad"), 401, "invalid_request_error", "invalid_api_key"},
		{"not bearer", "/v1/chat/completions", ok, http.Header{"Authorization": {"sk-good"}}, 401, "invalid_request_error", "invalid_api_key"},
		{"bad json", "/v1/chat/completions", `{"model":`, bearer("sk-good"), 400, "invalid_request_error", ""},
		{"not an object", "/v1/chat/completions", `[1,2]`, bearer("sk-good"), 400, "invalid_request_error", ""},
		{"trailing garbage", "/v1/chat/completions", ok + "x", bearer("sk-good"), 400, "invalid_request_error", ""},
		{"missing messages", "/v1/chat/completions", `{"model":"grok-4"}`, bearer("sk-good"), 400, "invalid_request_error", ""},
		{"empty messages", "/v1/chat/completions", `{"model":"grok-4","messages":[]}`, bearer("sk-good"), 400, "invalid_request_error", ""},
		{"missing model", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`, bearer("sk-good"), 400, "invalid_request_error", ""},
		{"model not a string", "/v1/chat/completions", `{"model":1,"messages":[{"role":"user","content":"x"}]}`, bearer("sk-good"), 400, "invalid_request_error", ""},
		{"missing role", "/v1/chat/completions", `{"model":"grok-4","messages":[{"content":"x"}]}`, bearer("sk-good"), 400, "invalid_request_error", ""},
		{"bad content", "/v1/chat/completions", `{"model":"grok-4","messages":[{"role":"user","content":5}]}`, bearer("sk-good"), 400, "invalid_request_error", ""},
		{"content parts", "/v1/chat/completions", `{"model":"grok-4","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`, bearer("sk-good"), 200, "", ""},
		{"bad n", "/v1/chat/completions", reqBody(t, "grok-4", "x", map[string]any{"n": 0}), bearer("sk-good"), 400, "invalid_request_error", ""},
		{"bad max_tokens", "/v1/chat/completions", reqBody(t, "grok-4", "x", map[string]any{"max_tokens": 0}), bearer("sk-good"), 400, "invalid_request_error", ""},
		{"stream_options without stream", "/v1/chat/completions", reqBody(t, "grok-4", "x", map[string]any{"stream_options": map[string]any{"include_usage": true}}), bearer("sk-good"), 400, "invalid_request_error", ""},
		{"unknown model", "/v1/chat/completions", reqBody(t, "gpt-9", "x", nil), bearer("sk-good"), 404, "invalid_request_error", "model_not_found"},
		{"unknown path", "/v1/images/generations", ok, bearer("sk-good"), 404, "invalid_request_error", "unknown_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := post(context.Background(), t, srv.URL+tt.path, tt.body, tt.header)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.status, b)
			}
			if tt.path != "/v1/images/generations" && !strings.HasPrefix(resp.Header.Get("x-request-id"), "req_") {
				t.Errorf("x-request-id = %q", resp.Header.Get("x-request-id"))
			}
			if tt.status == 200 {
				var c testCompletion
				if err := json.Unmarshal(b, &c); err != nil || c.Object != "chat.completion" {
					t.Fatalf("bad completion %s: %v", b, err)
				}
				return
			}
			e := decodeError(t, b)
			if e.Error.Type != tt.wantType || e.code() != tt.wantCode || e.Error.Message == "" {
				t.Fatalf("error %+v, want type %q code %q", e.Error, tt.wantType, tt.wantCode)
			}
		})
	}

	t.Run("models", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer sk-good")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var list struct {
			Object string `json:"object"`
			Data   []struct {
				ID, Object, OwnedBy string
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || list.Object != "list" || len(list.Data) != 2 || list.Data[0].ID != "grok-4" || list.Data[0].Object != "model" {
			t.Fatalf("models: %d %+v", resp.StatusCode, list)
		}
	})
	for _, path := range []string{"/healthz", "/stats"} {
		t.Run(path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s: %d", path, resp.StatusCode)
			}
			if path == "/stats" {
				var st Stats
				if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
					t.Fatal(err)
				}
				if st.Requests == 0 || st.ByStatus[401] != 3 {
					t.Fatalf("stats %+v", st)
				}
			}
		})
	}
}

func TestAnyModelWhenModelsEmpty(t *testing.T) {
	rec := recordChat(New(Config{}), reqBody(t, "whatever-model", "x", nil))
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}

func TestRequestIDsUnique(t *testing.T) {
	s := New(Config{})
	seen := map[string]bool{}
	for range 100 {
		rec := recordChat(s, reqBody(t, "grok-4", "x", nil))
		id := rec.Header().Get("x-request-id")
		if !strings.HasPrefix(id, "req_") || seen[id] {
			t.Fatalf("request id %q duplicate or malformed", id)
		}
		seen[id] = true
	}
}

// Embeddings are deterministic unit vectors with usage, one per input.
func TestEmbeddings(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(New(Config{}))
	t.Cleanup(srv.Close)
	post := func(body string) (int, []byte) {
		resp, err := http.Post(srv.URL+"/v1/embeddings", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	status, a := post(`{"model":"e","input":["12345678","abcd"],"dimensions":4}`)
	_, b := post(`{"model":"e","input":["12345678","abcd"],"dimensions":4}`)
	var out struct {
		Data []struct {
			Index     int
			Embedding []float64
		}
		Usage struct{ PromptTokens, TotalTokens int } `json:"usage"`
	}
	if err := json.Unmarshal(a, &out); err != nil || status != 200 || string(a) != string(b) {
		t.Fatalf("status %d, %s (again %s): %v", status, a, b, err)
	}
	if len(out.Data) != 2 || len(out.Data[1].Embedding) != 4 || out.Data[1].Index != 1 {
		t.Fatalf("%s", a)
	}
	sum := 0.0
	for _, x := range out.Data[0].Embedding {
		sum += x * x
	}
	if sum < 0.999 || sum > 1.001 {
		t.Errorf("|v|^2 = %v, want 1", sum)
	}
	if status, _ := post(`{"model":"e","input":[]}`); status != 400 {
		t.Errorf("empty input: status %d, want 400", status)
	}
}
