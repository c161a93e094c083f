package main

// commands is smq's command tree for completion, from the flag sets the
// commands parse.
func commands() command {
	names := []string{"sub", "pub", "ping", "demo-device", "bench"}
	root := command{name: "smq", words: []string{"-h", "-version"}}
	for _, n := range names {
		fs, _ := newCommand(n)
		root.sub = append(root.sub, command{name: n, flags: fs})
	}
	root.sub = append(root.sub,
		command{name: "version"},
		command{name: "completion", words: []string{"bash", "zsh"}},
		command{name: "help", words: append(names, "version", "completion")},
	)
	return root
}
