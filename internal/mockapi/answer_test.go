package mockapi

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

func decodeCompletion(t *testing.T, b []byte) testCompletion {
	t.Helper()
	var c testCompletion
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("completion %s: %v", b, err)
	}
	return c
}

func TestDeterministicAnswers(t *testing.T) {
	s := New(Config{})
	tests := []struct {
		name          string
		model         string
		user          string
		extra         map[string]any
		wantChoices   int
		wantFinish    string
		wantTokens    int // per choice; 0 = 16..63
		wantReasoning bool
	}{
		{"plain", "grok-3-mini", "What is the capital of France?", nil, 1, "stop", 0, false},
		{"reasoning model", "grok-4", "What is the capital of France?", nil, 1, "stop", 0, true},
		{"reasoning in name", "my-reasoning-model", "hello", nil, 1, "stop", 0, true},
		{"max_tokens truncates", "grok-3-mini", "Tell me a story", map[string]any{"max_tokens": 5}, 1, "length", 5, false},
		{"max_completion_tokens truncates", "grok-3-mini", "Tell me a story", map[string]any{"max_completion_tokens": 3}, 1, "length", 3, false},
		{"large max_tokens does not pad", "grok-3-mini", "Tell me a story", map[string]any{"max_tokens": 4096}, 1, "stop", 0, false},
		{"n choices", "grok-3-mini", "Give options", map[string]any{"n": 3}, 3, "stop", 0, false},
		{"long unicode prompt", "grok-3-mini", strings.Repeat("héllo wörld ", 40), nil, 1, "stop", 0, false},
	}
	prefix := regexp.MustCompile(`^mock answer #[0-9a-f]{8}: `)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := reqBody(t, tt.model, tt.user, tt.extra)
			r1, r2 := recordChat(s, body), recordChat(s, body)
			if r1.Code != 200 || r2.Code != 200 {
				t.Fatalf("status %d/%d: %s", r1.Code, r2.Code, r1.Body)
			}
			c1, c2 := decodeCompletion(t, r1.Body.Bytes()), decodeCompletion(t, r2.Body.Bytes())
			if c1.ID == c2.ID || !strings.HasPrefix(c1.ID, "chatcmpl-") {
				t.Errorf("ids %q and %q should be distinct chatcmpl- ids", c1.ID, c2.ID)
			}
			if c1.Object != "chat.completion" || c1.Model != tt.model || c1.Created == 0 || c1.SystemFingerprint == "" {
				t.Errorf("envelope %+v", c1)
			}
			if len(c1.Choices) != tt.wantChoices {
				t.Fatalf("%d choices, want %d", len(c1.Choices), tt.wantChoices)
			}
			if c1.Usage != c2.Usage {
				t.Errorf("usage differs: %+v vs %+v", c1.Usage, c2.Usage)
			}
			sumTokens, sumReasoning := 0, 0
			for i, ch := range c1.Choices {
				if ch.Message != c2.Choices[i].Message {
					t.Errorf("choice %d differs between identical requests", i)
				}
				if ch.Index != i || ch.Message.Role != "assistant" || ch.FinishReason != tt.wantFinish {
					t.Errorf("choice %d: %+v", i, ch)
				}
				n := len(strings.Fields(ch.Message.Content))
				sumTokens += n
				if tt.wantTokens > 0 && n != tt.wantTokens {
					t.Errorf("choice %d has %d words, want %d", i, n, tt.wantTokens)
				}
				if tt.wantTokens == 0 && (n < 16 || n > 63) {
					t.Errorf("choice %d has %d words, want 16..63", i, n)
				}
				if tt.wantTokens == 0 {
					want := strings.Join(strings.Fields(truncateRunes(tt.user, 60)), " ")
					if !prefix.MatchString(ch.Message.Content) || !strings.HasPrefix(prefix.ReplaceAllString(ch.Message.Content, ""), want) {
						t.Errorf("content %q does not start with the mock prefix and %q", ch.Message.Content, want)
					}
				}
				r := len(strings.Fields(ch.Message.ReasoningContent))
				sumReasoning += r
				if tt.wantReasoning != (r > 0) {
					t.Errorf("reasoning_content %q, want reasoning %v", ch.Message.ReasoningContent, tt.wantReasoning)
				}
			}
			if tt.wantChoices > 1 && c1.Choices[0].Message.Content == c1.Choices[1].Message.Content {
				t.Errorf("choices 0 and 1 are identical")
			}
			u := c1.Usage
			wantPrompt := (len([]rune("You are helpful."+tt.user))+3)/4 + 8
			if u.PromptTokens != wantPrompt || u.CompletionTokens != sumTokens ||
				u.CompletionTokensDetails.ReasoningTokens != sumReasoning ||
				u.TotalTokens != u.PromptTokens+u.CompletionTokens+sumReasoning {
				t.Errorf("usage %+v, want prompt %d completion %d reasoning %d", u, wantPrompt, sumTokens, sumReasoning)
			}
		})
	}

	t.Run("different requests differ", func(t *testing.T) {
		a := decodeCompletion(t, recordChat(s, reqBody(t, "grok-4", "one", nil)).Body.Bytes())
		b := decodeCompletion(t, recordChat(s, reqBody(t, "grok-4", "two", nil)).Body.Bytes())
		c := decodeCompletion(t, recordChat(s, reqBody(t, "grok-3-mini", "one", nil)).Body.Bytes())
		if a.Choices[0].Message.Content == b.Choices[0].Message.Content || a.Choices[0].Message.Content == c.Choices[0].Message.Content {
			t.Fatal("different requests gave the same content")
		}
	})
	t.Run("same across servers", func(t *testing.T) {
		body := reqBody(t, "grok-4", "stable", map[string]any{"temperature": 0.7})
		a := decodeCompletion(t, recordChat(s, body).Body.Bytes())
		b := decodeCompletion(t, recordChat(New(Config{Seed: 99}), body).Body.Bytes())
		if a.Choices[0].Message != b.Choices[0].Message || a.Usage != b.Usage {
			t.Fatal("content depends on the server, not only on the request")
		}
	})
	t.Run("fixed completion tokens", func(t *testing.T) {
		s := New(Config{CompletionTokens: 200})
		c := decodeCompletion(t, recordChat(s, reqBody(t, "grok-3-mini", "x", nil)).Body.Bytes())
		if c.Usage.CompletionTokens != 200 || len(strings.Fields(c.Choices[0].Message.Content)) != 200 {
			t.Fatalf("usage %+v", c.Usage)
		}
	})
}

func TestSplitDeltasRoundTrip(t *testing.T) {
	for _, text := range []string{"", "a", "a b", "a b c", "a b c d e f g", "mock answer #0123abcd: hi"} {
		got := strings.Join(splitDeltas(text, wordsPerDelta), "")
		if got != text {
			t.Errorf("splitDeltas(%q) joins to %q", text, got)
		}
	}
}
