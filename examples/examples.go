// Package examples ships sample inputs: prompts.jsonl, ~55 prompts in the
// OpenAI Batch input format (and sluice's other two shapes), used by
// `sluice demo`. Most are chat completions; a few lines call each other
// endpoint (/v1/responses plain and streamed, with a string and a
// message-array input; /v1/embeddings; /v1/completions; /v1/moderations),
// and three are deliberately invalid.
package examples

import _ "embed"

// Prompts is the content of prompts.jsonl.
//
//go:embed prompts.jsonl
var Prompts []byte
