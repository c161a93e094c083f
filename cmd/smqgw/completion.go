package main

import (
	"io"

	"github.com/smqgw/smqgw/internal/complete"
)

// commands is smqgw's command tree for completion, from the flag sets
// the commands parse.
func commands() complete.Command {
	var f rootFlags
	var i initFlags
	var c clientFlags
	var n nodeFlags
	names := []string{"certs", "version", "completion", "help"}
	return complete.Command{Name: "smqgw", Flags: newRootFlags(&f), Sub: []complete.Command{
		{Name: "certs", Sub: []complete.Command{
			{Name: "init", Flags: newInitFlags(&i)},
			{Name: "client", Flags: newClientFlags(&c)},
			{Name: "node", Flags: newNodeFlags(&n)},
			{Name: "help", Words: certsCommands},
		}},
		{Name: "version"},
		{Name: "completion", Words: []string{"bash", "zsh"}},
		{Name: "help", Words: names},
	}}
}

func runCompletionCmd(args []string, stdout io.Writer) error {
	return complete.Run("smqgw", commands(), args, stdout, usagef)
}
