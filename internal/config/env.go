package config

import (
	"errors"
	"fmt"

	"github.com/kelseyhightower/envconfig"
)

// EnvError turns an error of envconfig.Process into one line that names
// the variable and the form its value must take, e.g.
//
//	invalid configuration: SLUICE_DRAIN_TIMEOUT: "25" is not a duration; give a number with a unit, e.g. 25s, 500ms or 2m
//
// The result wraps ErrInvalid. Other errors are wrapped as they are; nil
// stays nil.
func EnvError(err error) error {
	if err == nil {
		return nil
	}
	var pe *envconfig.ParseError
	if !errors.As(err, &pe) {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	switch pe.TypeName {
	case "time.Duration":
		return fmt.Errorf("%w: %s: %q is not a duration; give a number with a unit, e.g. 25s, 500ms or 2m", ErrInvalid, pe.KeyName, pe.Value)
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return fmt.Errorf("%w: %s: %q is not a whole number", ErrInvalid, pe.KeyName, pe.Value)
	case "float32", "float64":
		return fmt.Errorf("%w: %s: %q is not a number", ErrInvalid, pe.KeyName, pe.Value)
	case "bool":
		return fmt.Errorf("%w: %s: %q is not true or false", ErrInvalid, pe.KeyName, pe.Value)
	}
	// A type of ours (its Decode explains the form), or a list.
	return fmt.Errorf("%w: %s: %w", ErrInvalid, pe.KeyName, pe.Err)
}
