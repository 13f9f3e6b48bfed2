package config

import (
	"fmt"
	"strconv"
	"strings"
)

// ModelBudget is one model's requests and tokens per minute (0 = none).
type ModelBudget struct {
	RPM, TPM int
}

// ModelLimits are per-model budgets, read from
// "grok-4=rpm:600,tpm:2000000;grok-3-mini=rpm:1200".
type ModelLimits map[string]ModelBudget

// Decode implements envconfig.Decoder.
func (m *ModelLimits) Decode(v string) error {
	out := ModelLimits{}
	for entry := range strings.SplitSeq(v, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		model, spec, ok := strings.Cut(entry, "=")
		model = strings.TrimSpace(model)
		if !ok || model == "" {
			return fmt.Errorf("%q: want model=rpm:N,tpm:N", entry)
		}
		if _, dup := out[model]; dup {
			return fmt.Errorf("model %q is listed twice", model)
		}
		var b ModelBudget
		for kv := range strings.SplitSeq(spec, ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(kv), ":")
			n, err := strconv.Atoi(strings.TrimSpace(val))
			if !ok || err != nil || n <= 0 {
				return fmt.Errorf("%q: want rpm:N or tpm:N with N > 0, got %q", model, kv)
			}
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "rpm":
				b.RPM = n
			case "tpm":
				b.TPM = n
			default:
				return fmt.Errorf("%q: unknown budget %q (want rpm or tpm)", model, k)
			}
		}
		out[model] = b
	}
	*m = out
	return nil
}

// String formats the limits the way they are read (for --help defaults).
func (m ModelLimits) String() string {
	var parts []string
	for model, b := range m {
		var kv []string
		if b.RPM > 0 {
			kv = append(kv, "rpm:"+strconv.Itoa(b.RPM))
		}
		if b.TPM > 0 {
			kv = append(kv, "tpm:"+strconv.Itoa(b.TPM))
		}
		parts = append(parts, model+"="+strings.Join(kv, ","))
	}
	return strings.Join(parts, ";")
}
