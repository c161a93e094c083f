package main

import "io"

// commands is smqgw's command tree for completion, from the flag sets
// the commands parse.
func commands() command {
	var f rootFlags
	var i initFlags
	var c clientFlags
	names := []string{"certs", "version", "completion", "help"}
	return command{name: "smqgw", flags: newRootFlags(&f), sub: []command{
		{name: "certs", sub: []command{
			{name: "init", flags: newInitFlags(&i)},
			{name: "client", flags: newClientFlags(&c)},
			{name: "help", words: certsCommands},
		}},
		{name: "version"},
		{name: "completion", words: []string{"bash", "zsh"}},
		{name: "help", words: names},
	}}
}

func runCompletionCmd(args []string, stdout io.Writer) error {
	return runCompletion("smqgw", commands(), args, stdout)
}
