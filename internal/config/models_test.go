package config

import (
	"reflect"
	"testing"
)

func TestModelLimitsDecode(t *testing.T) {
	var m ModelLimits
	if err := m.Decode("grok-4=rpm:600,tpm:2000000; grok-3-mini=rpm:1200;"); err != nil {
		t.Fatal(err)
	}
	want := ModelLimits{"grok-4": {RPM: 600, TPM: 2000000}, "grok-3-mini": {RPM: 1200}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("Decode = %v, want %v", m, want)
	}
	var back ModelLimits
	if err := back.Decode(m.String()); err != nil || !reflect.DeepEqual(back, want) {
		t.Fatalf("String did not round-trip: %q -> %v, %v", m.String(), back, err)
	}
	for _, bad := range []string{
		"grok-4",           // no budgets
		"=rpm:5",           // no model
		"grok-4=rpm:0",     // not positive
		"grok-4=rpm:five",  // not a number
		"grok-4=rps:5",     // unknown budget
		"a=rpm:1;a=tpm:2",  // listed twice
		"grok-4=rpm:5,tpm", // no value
	} {
		var m ModelLimits
		if err := m.Decode(bad); err == nil {
			t.Errorf("Decode(%q) = %v, want an error", bad, m)
		}
	}
}

func TestModelLimitsFromEnv(t *testing.T) {
	t.Setenv("SLUICE_MODEL_LIMITS", "grok-4=tpm:5")
	t.Setenv("SLUICE_API_KEY", "k")
	c, err := LoadConsume()
	if err != nil {
		t.Fatal(err)
	}
	if c.ModelLimits["grok-4"].TPM != 5 {
		t.Fatalf("ModelLimits = %v", c.ModelLimits)
	}
	t.Setenv("SLUICE_MODEL_LIMITS", "grok-4=tpm:x")
	if _, err := LoadConsume(); err == nil {
		t.Fatal("a bad SLUICE_MODEL_LIMITS loaded")
	}
}
