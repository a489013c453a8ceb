package main

import (
	"flag"
	"io"
	"strings"
)

// helpError is what a command returns when its command line asks for
// its help (-h, --help): run prints text on standard output and exits 0.
type helpError struct{ text string }

func (e *helpError) Error() string { return "help requested" }

// secretFlags are the flags whose values are secrets.
var secretFlags = map[string]bool{"token": true, "s3-secret-key": true, "s3-access-key": true}

// isHelp reports a help flag, as the flag package takes them.
func isHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

// commandHelp is the help of the command name: its lines of the usage
// and, with fs, its flags.
func commandHelp(name string, fs *flag.FlagSet) error {
	var b strings.Builder
	b.WriteString("Usage:\n")
	b.WriteString(usageLines(name))
	if fs != nil {
		b.WriteString("\nFlags:\n")
		// A secret's default comes from the environment
		// (EDGECHAT_TOKEN, EDGECHAT_S3_*): say it is set, never what
		// it is.
		fs.VisitAll(func(f *flag.Flag) {
			if secretFlags[f.Name] && f.DefValue != "" {
				f.DefValue = ""
				f.Usage += " (set in the environment)"
			}
		})
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return &helpError{text: b.String()}
}

// usageLines are the lines of the usage of command name ("user add",
// "keys revoke"), else of its first word ("keys").
func usageLines(name string) string {
	pick := func(prefix string) string {
		var out strings.Builder
		for _, l := range strings.Split(usage, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				out.WriteString(l + "\n")
			}
		}
		return out.String()
	}
	if s := pick("edgechat " + name); s != "" {
		return s
	}
	first, _, _ := strings.Cut(name, " ")
	return pick("edgechat " + first + " ")
}

// positional takes the command line's first word when it is not a flag
// (a user name, a node, a key ID): "" and args otherwise, so that the
// flags, --help among them, are parsed before the word is asked for.
func positional(args []string) (word string, rest []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}
