// Package command owns what the command lines of rampart, rampart-server
// and rampart-agent share: finding a command from its words, one help
// layout for every program and command (usage, description, flags, an
// example, exit status), the version line, and the answers to help,
// version and unknown commands. Each program keeps its own flags and
// behaviour; what a user types to get help is the same everywhere.
package command

import (
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// Command is one command of a program.
type Command struct {
	// Name is the command's words after the program's: "serve", "repo sign".
	Name    string
	Summary string
	// Usage is the command's help page: a "Usage:" line, what it does,
	// "Flags:" and "Example:".
	Usage string
}

// Program is a program's commands and what its help pages share.
type Program struct {
	Name string
	// Intro is the first paragraph of the program's help.
	Intro    string
	Commands []*Command
	// ExitStatus ends every help page: one line per exit code.
	ExitStatus string
	// More is printed after the command list (a pointer to the docs).
	More string
}

// Lookup finds the command named by the leading words of args, the
// longest name winning, and returns it with the remaining arguments.
func (p *Program) Lookup(args []string) (*Command, []string) {
	var found *Command
	var rest []string
	for _, c := range p.Commands {
		words := strings.Fields(c.Name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.Name {
			if found == nil || len(words) > len(strings.Fields(found.Name)) {
				found, rest = c, args[len(words):]
			}
		}
	}
	return found, rest
}

// Usage writes the program's help page.
func (p *Program) Usage(w io.Writer) {
	fmt.Fprintf(w, "%s\n\nUsage:\n    %s COMMAND [ARGUMENTS] [FLAGS]\n\nCommands:\n", strings.TrimSpace(p.Intro), p.Name)
	width := 0
	for _, c := range p.Commands {
		width = max(width, len(c.Name))
	}
	for _, c := range p.Commands {
		fmt.Fprintf(w, "    %-*s  %s\n", width, c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nRun \"%s COMMAND --help\" for a command's flags and an example.\n", p.Name)
	if p.More != "" {
		fmt.Fprintf(w, "%s\n", strings.TrimSpace(p.More))
	}
	p.exitStatus(w)
}

// Help writes one command's help page.
func (p *Program) Help(w io.Writer, c *Command) {
	fmt.Fprint(w, strings.TrimLeft(c.Usage, "\n"))
	p.exitStatus(w)
}

// Group writes the commands whose first word is group.
func (p *Program) Group(w io.Writer, group string) bool {
	var subs []*Command
	for _, c := range p.Commands {
		if strings.HasPrefix(c.Name, group+" ") {
			subs = append(subs, c)
		}
	}
	if len(subs) == 0 {
		return false
	}
	fmt.Fprintf(w, "Usage: %s %s COMMAND ...\n\nCommands:\n", p.Name, group)
	for _, c := range subs {
		fmt.Fprintf(w, "    %-18s %s\n", c.Name, c.Summary)
	}
	p.exitStatus(w)
	return true
}

func (p *Program) exitStatus(w io.Writer) {
	if p.ExitStatus != "" {
		fmt.Fprintf(w, "\nExit status:\n%s\n", strings.TrimRight(p.ExitStatus, "\n"))
	}
}

// UnknownError is a command line naming no command.
type UnknownError struct {
	Program, Words string
	// Known lists the commands of the group the words start, if any.
	Known []string
}

func (e *UnknownError) Error() string {
	if len(e.Known) > 0 {
		return fmt.Sprintf("unknown command %q; %s %s has: %s", e.Words, e.Program, strings.Fields(e.Words)[0], strings.Join(e.Known, ", "))
	}
	return fmt.Sprintf("unknown command %q", e.Words)
}

// Hint says where the commands are listed.
func (e *UnknownError) Hint() string { return e.Program + " help lists the commands" }

// Resolve does what every program does before running a command. It
// answers help (no arguments, "help", "-h", "--help", "help COMMAND...")
// and version ("version", "--version") on stdout and returns done; it
// returns an *UnknownError for words that name no command; otherwise the
// command to run and its arguments.
func (p *Program) Resolve(args []string, stdout io.Writer) (c *Command, rest []string, done bool, err error) {
	if len(args) == 0 || isHelpWord(args[0]) {
		if len(args) > 1 {
			if c, _ := p.Lookup(args[1:]); c != nil {
				p.Help(stdout, c)
				return nil, nil, true, nil
			}
			if p.Group(stdout, args[1]) {
				return nil, nil, true, nil
			}
			return nil, nil, false, p.unknown(args[1:])
		}
		p.Usage(stdout)
		return nil, nil, true, nil
	}
	if args[0] == "version" || args[0] == "--version" {
		if c, _ := p.Lookup([]string{"version"}); c != nil && len(args) > 1 && isHelpWord(strings.TrimLeft(args[1], "-")) {
			p.Help(stdout, c)
		} else {
			fmt.Fprintln(stdout, p.Name, Version())
		}
		return nil, nil, true, nil
	}
	c, rest = p.Lookup(args)
	if c == nil {
		if len(args) == 1 && p.Group(stdout, args[0]) {
			return nil, nil, true, nil
		}
		return nil, nil, false, p.unknown(args)
	}
	return c, rest, false, nil
}

func (p *Program) unknown(args []string) error {
	words := args[0]
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		words += " " + args[1]
	}
	e := &UnknownError{Program: p.Name, Words: words}
	for _, c := range p.Commands {
		if rest, ok := strings.CutPrefix(c.Name, args[0]+" "); ok {
			e.Known = append(e.Known, rest)
		}
	}
	if len(e.Known) == 0 {
		e.Words = args[0]
	}
	return e
}

func isHelpWord(s string) bool { return s == "help" || s == "-h" || s == "--help" || s == "h" }

// IsHelp reports whether a flag parse error asks for the command's help.
func IsHelp(err error) bool { return err == flag.ErrHelp }

// Version is the build's module version, set at link time by the caller
// when it has one, else read from the build information.
func Version() string {
	if LinkVersion != "" {
		return LinkVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// LinkVersion is set with -ldflags "-X github.com/rampartfw/rampart/internal/command.LinkVersion=v1.2.3".
var LinkVersion = ""
