// Package failure classifies errors for the command-line programs: whether a
// failure is a refusal (the input was checked and found bad), an input or
// usage mistake, or a problem with the environment, and what the operator
// should do about it. The programs turn the class into an exit code.
package failure

import (
	"errors"
)

// Kind is the class of a failure. Its numeric value is the documented exit
// code of the rampart command.
type Kind int

const (
	// Refused means verification or a policy check refused the input.
	Refused Kind = 1
	// Input means the command line or an input file is wrong.
	Input Kind = 2
	// Environment means something outside the input failed: a file system,
	// an HSM module, a missing tool.
	Environment Kind = 3
)

// Error carries a failure class and an optional hint for the operator.
type Error struct {
	Kind Kind
	Err  error
	Hint string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Refusal, InputError and EnvError wrap err with a class and a hint.
func Refusal(err error, hint string) error    { return &Error{Kind: Refused, Err: err, Hint: hint} }
func InputError(err error, hint string) error { return &Error{Kind: Input, Err: err, Hint: hint} }
func EnvError(err error, hint string) error   { return &Error{Kind: Environment, Err: err, Hint: hint} }

// Classifier is implemented by typed errors of other packages (for example
// security refusals) that know their own class.
type Classifier interface {
	FailureKind() Kind
}

// Hinter is implemented by errors that carry advice for the operator.
type Hinter interface {
	FailureHint() string
}

// KindOf returns the class of err. Unclassified errors count as environment
// errors: the safe assumption is that the input was never judged.
func KindOf(err error) Kind {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if fe, ok := e.(*Error); ok && fe.Kind != 0 {
			return fe.Kind
		}
		if c, ok := e.(Classifier); ok {
			return c.FailureKind()
		}
	}
	return Environment
}

// HintOf returns the first hint found in err's chain, or "".
func HintOf(err error) string {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if fe, ok := e.(*Error); ok && fe.Hint != "" {
			return fe.Hint
		}
		if h, ok := e.(Hinter); ok && h.FailureHint() != "" {
			return h.FailureHint()
		}
	}
	return ""
}
