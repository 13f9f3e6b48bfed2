// Package examples ships sample inputs: prompts.jsonl, ~50 prompts in the
// OpenAI Batch input format (and sluice's other two shapes), three of them
// deliberately invalid, used by `sluice demo`.
package examples

import _ "embed"

// Prompts is the content of prompts.jsonl.
//
//go:embed prompts.jsonl
var Prompts []byte
