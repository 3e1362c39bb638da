package main

import (
	"os"
	"strings"
	"testing"
)

// docs/cli.md documents every command: a section or a row naming it.
func TestCLIDocListsEveryCommand(t *testing.T) {
	b, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, c := range commands {
		if !strings.Contains(doc, "\n## "+c.name+"\n") && !strings.Contains(doc, "`rampart "+c.name+" ") && !strings.Contains(doc, "`rampart "+c.name+"`") {
			t.Errorf("docs/cli.md does not document rampart %s", c.name)
		}
	}
}
