// Package failure lets typed errors of the internal packages say which
// class of failure they are, so the command-line programs can turn it into
// a documented exit code, and what the operator should do about it.
package failure

import "errors"

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

// Classifier is implemented by errors that know their class, for example
// security refusals.
type Classifier interface {
	FailureKind() Kind
}

// Hinter is implemented by errors that carry advice for the operator.
type Hinter interface {
	FailureHint() string
}

// HintOf returns the first hint in err's chain, or "".
func HintOf(err error) string {
	var h Hinter
	if errors.As(err, &h) {
		return h.FailureHint()
	}
	return ""
}
