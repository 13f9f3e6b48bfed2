package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// usageError is a mistake on the command line: main prints it on one line,
// then a pointer to the command's --help, and exits 2, the conventional
// status of a usage error. Nothing else is printed: the usage is one
// --help away, not forty lines above the error.
type usageError struct {
	cmd string // "" for sluice itself, else the subcommand
	err error
}

func (e usageError) Error() string {
	if e.cmd == "" {
		return e.err.Error()
	}
	return e.cmd + ": " + e.err.Error()
}

func (e usageError) Unwrap() error { return e.err }

// helpHint is the line after a usage error.
func (e usageError) helpHint() string {
	if e.cmd == "" {
		return "Run 'sluice --help' for usage."
	}
	return fmt.Sprintf("Run 'sluice %s --help' for usage.", e.cmd)
}

// usagef returns a usageError of command cmd.
func usagef(cmd, format string, args ...any) error {
	return usageError{cmd: cmd, err: fmt.Errorf(format, args...)}
}

// parseFlags parses args with fs. -h/--help writes fs.Usage to helpOut and
// returns flag.ErrHelp (exit 0); a bad flag or value returns a usageError
// and writes nothing.
func parseFlags(fs *flag.FlagSet, args []string, helpOut io.Writer) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(helpOut)
		fs.Usage()
		fs.SetOutput(out)
		return flag.ErrHelp
	}
	return usageError{cmd: fs.Name(), err: err}
}

// noArgs rejects positional arguments of a command that takes none.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usagef(fs.Name(), "unexpected argument %q (it takes flags only)", fs.Arg(0))
	}
	return nil
}

// atLeast rejects an integer flag below lowest.
func atLeast(fs *flag.FlagSet, name string, v, lowest int) error {
	if v < lowest {
		return usagef(fs.Name(), "--%s must be at least %d, got %d", name, lowest, v)
	}
	return nil
}

// exitStatus reports err as main does: the lines for stderr and the
// process's exit status.
func exitStatus(err error) (lines []string, status int) {
	var ue usageError
	var ec exitCode
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return nil, 0
	case errors.As(err, &ec):
		return nil, int(ec)
	case errors.As(err, &ue) && ue.cmd == "":
		return []string{"sluice: " + ue.err.Error(), ue.helpHint()}, 2
	case errors.As(err, &ue):
		return []string{"sluice " + ue.Error(), ue.helpHint()}, 2
	}
	return []string{"sluice: " + err.Error()}, 1
}

// exit ends the process as exitStatus says.
func exit(err error) {
	lines, status := exitStatus(err)
	for _, l := range lines {
		fmt.Fprintln(os.Stderr, l)
	}
	os.Exit(status)
}
