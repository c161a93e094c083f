// Package complete writes shell completion scripts (bash, zsh) for the
// smqgw and smq commands from a Command tree whose flags are the
// commands' own flag sets, so that the scripts stay true to them.
package complete

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Command is a Command for completion: its flags, its subcommands, and
// the words its arguments may be.
type Command struct {
	Name  string
	Flags *flag.FlagSet // nil: none
	Sub   []Command
	Words []string
}

// node is a Command with its path from the root ("" for the root,
// "/certs/init" for smqgw certs init).
type node struct {
	key string
	cmd Command
}

func (c Command) walk(key string, f func(node)) {
	f(node{key, c})
	for _, s := range c.Sub {
		s.walk(key+"/"+s.Name, f)
	}
}

// candidates are the words completed after the Command: subcommands,
// argument words and flags.
func (n node) candidates() []string {
	var ws []string
	for _, s := range n.cmd.Sub {
		ws = append(ws, s.Name)
	}
	ws = append(ws, n.cmd.Words...)
	if n.cmd.Flags != nil {
		n.cmd.Flags.VisitAll(func(f *flag.Flag) { ws = append(ws, "-"+f.Name) })
		ws = append(ws, "-h")
	}
	return ws
}

// valueFlags are the Command's flags that take a value (the shell then
// completes file names).
func (n node) valueFlags() []string {
	var ws []string
	if n.cmd.Flags != nil {
		n.cmd.Flags.VisitAll(func(f *flag.Flag) {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
				ws = append(ws, "-"+f.Name)
			}
		})
	}
	return ws
}

// AllWords returns every command name and every word completed after a
// command (subcommands, argument words, flags), for tests.
func (c Command) AllWords() []string {
	var ws []string
	for _, n := range c.nodes() {
		ws = append(ws, n.cmd.Name)
		ws = append(ws, n.candidates()...)
	}
	return ws
}

func (c Command) nodes() []node {
	var ns []node
	c.walk("", func(n node) { ns = append(ns, n) })
	return ns
}

func (c Command) keys() string {
	var ks []string
	for _, n := range c.nodes()[1:] {
		ks = append(ks, n.key)
	}
	return strings.Join(ks, "|")
}

// Run runs "PROG completion bash|zsh"; usagef makes the command's usage
// errors.
func Run(prog string, root Command, args []string, stdout io.Writer, usagef func(format string, a ...any) error) error {
	if len(args) == 1 && slices.Contains([]string{"-h", "-help", "--help", "help"}, args[0]) {
		fmt.Fprintf(stdout, `usage: %[1]s completion bash|zsh

Prints a completion script for the shell. Install it with
  bash:  %[1]s completion bash > ~/.local/share/bash-completion/completions/%[1]s
  zsh:   %[1]s completion zsh > "${fpath[1]}/_%[1]s"
or load it in the running shell with  source <(%[1]s completion bash)
`, prog)
		return nil
	}
	if len(args) != 1 {
		return usagef("completion: want one shell, bash or zsh (see %s help completion)", prog)
	}
	switch args[0] {
	case "bash":
		writeBash(stdout, prog, root)
	case "zsh":
		writeZsh(stdout, prog, root)
	default:
		return usagef("completion: unknown shell %q: bash or zsh (see %s help completion)", args[0], prog)
	}
	return nil
}

func fn(prog string) string { return "_" + strings.ReplaceAll(prog, "-", "_") }

func writeBash(w io.Writer, prog string, root Command) {
	f := fn(prog)
	fmt.Fprintf(w, "# bash completion for %s, made by %s completion bash\n", prog, prog)
	fmt.Fprintf(w, "%s() {\n", f)
	fmt.Fprintf(w, "\tlocal cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\" key=\"\" i\n")
	fmt.Fprintf(w, "\tfor ((i = 1; i < COMP_CWORD; i++)); do\n")
	fmt.Fprintf(w, "\t\tcase \"$key/${COMP_WORDS[i]}\" in\n")
	fmt.Fprintf(w, "\t\t%s) key=\"$key/${COMP_WORDS[i]}\" ;;\n", root.keys())
	fmt.Fprintf(w, "\t\tesac\n\tdone\n")
	fmt.Fprintf(w, "\tcase \"$key:$prev\" in\n")
	for _, n := range root.nodes() {
		for _, v := range n.valueFlags() {
			fmt.Fprintf(w, "\t%q) COMPREPLY=(); return ;;\n", n.key+":"+v)
		}
	}
	fmt.Fprintf(w, "\tesac\n\tlocal words=\"\"\n\tcase \"$key\" in\n")
	for _, n := range root.nodes() {
		fmt.Fprintf(w, "\t%q) words=%q ;;\n", n.key, strings.Join(n.candidates(), " "))
	}
	fmt.Fprintf(w, "\tesac\n")
	fmt.Fprintf(w, "\tCOMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n}\n")
	fmt.Fprintf(w, "complete -o default -F %s %s\n", f, prog)
}

func writeZsh(w io.Writer, prog string, root Command) {
	f := fn(prog)
	fmt.Fprintf(w, "#compdef %s\n# zsh completion for %s, made by %s completion zsh\n", prog, prog, prog)
	fmt.Fprintf(w, "%s() {\n", f)
	fmt.Fprintf(w, "\tlocal key=\"\" i\n")
	fmt.Fprintf(w, "\tfor ((i = 2; i < CURRENT; i++)); do\n")
	fmt.Fprintf(w, "\t\tcase \"$key/${words[i]}\" in\n")
	fmt.Fprintf(w, "\t\t(%s) key=\"$key/${words[i]}\" ;;\n", root.keys())
	fmt.Fprintf(w, "\t\tesac\n\tdone\n")
	fmt.Fprintf(w, "\tcase \"$key:${words[CURRENT-1]}\" in\n")
	for _, n := range root.nodes() {
		for _, v := range n.valueFlags() {
			fmt.Fprintf(w, "\t(%q) _files; return ;;\n", n.key+":"+v)
		}
	}
	fmt.Fprintf(w, "\tesac\n\tlocal -a cands\n\tcase \"$key\" in\n")
	for _, n := range root.nodes() {
		fmt.Fprintf(w, "\t(%q) cands=(%s) ;;\n", n.key, strings.Join(n.candidates(), " "))
	}
	fmt.Fprintf(w, "\tesac\n\tcompadd -a cands\n}\n")
	fmt.Fprintf(w, "if [ \"$funcstack[1]\" = %q ]; then\n\t%s \"$@\"\nelse\n\tcompdef %s %s\nfi\n", f, f, f, prog)
}
