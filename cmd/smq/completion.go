package main

import "github.com/smqgw/smqgw/internal/complete"

// commands is smq's command tree for completion, from the flag sets the
// commands parse.
func commands() complete.Command {
	names := []string{"sub", "pub", "ping", "demo-device", "bench"}
	root := complete.Command{Name: "smq", Words: []string{"-h", "-version"}}
	for _, n := range names {
		fs, _ := newCommand(n)
		root.Sub = append(root.Sub, complete.Command{Name: n, Flags: fs})
	}
	root.Sub = append(root.Sub,
		complete.Command{Name: "version"},
		complete.Command{Name: "completion", Words: []string{"bash", "zsh"}},
		complete.Command{Name: "help", Words: append(names, "version", "completion")},
	)
	return root
}
