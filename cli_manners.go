package main

// The CLI's manners: `version`, help that lists each flag's environment variable and a human
// default, one clear error for a bad flag with a "did you mean", durations that say a unit is
// missing, and --db errors that name the path or the host and the cause.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/store"
)

// helpOut is where -h prints; run sets it to its stdout.
var helpOut io.Writer = os.Stdout

// commands are the command lines run knows, for "did you mean".
var commands = []string{"serve", "migrate", "tenant create", "user create", "projections rebuild",
	"token revoke", "backup", "ca init", "agent", "loadgen", "version", "help"}

// usageError is a mistake on the command line: printed as is, exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// unknownCommand explains args that name no command, suggesting the nearest one.
func unknownCommand(args []string) error {
	// Compare the one- or two-word form the user most likely meant.
	words := args[:1]
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		for _, c := range commands {
			if strings.HasPrefix(c, args[0]+" ") {
				words = args[:2]
				break
			}
		}
	}
	typed := strings.Join(words, " ")
	msg := fmt.Sprintf("unknown command %q", typed)
	var sub []string // "tenant" alone: its subcommands
	for _, c := range commands {
		if strings.HasPrefix(c, typed+" ") {
			sub = append(sub, fmt.Sprintf("%q", c))
		}
	}
	if len(sub) > 0 {
		msg += "; did you mean " + strings.Join(sub, " or ") + "?"
	} else if s := suggest(typed, commands); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return &usageError{msg + "\nrun 'oneprotect -h' for the list of commands"}
}

// suggest returns the candidate nearest to typed, or "" when none is close.
func suggest(typed string, candidates []string) string {
	best, bestD := "", 0
	for _, c := range candidates {
		d := editDistance(typed, c)
		if best == "" || d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" || bestD > max(2, len(typed)/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance, with a transposition counted as one edit.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return "ONEPROTECT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// durationFlag wraps a flag.Duration value so that a bare number says which unit is missing.
type durationFlag struct{ flag.Value }

func (d durationFlag) Set(s string) error {
	if err := d.Value.Set(s); err != nil {
		if _, numErr := strconv.ParseFloat(strings.TrimSpace(s), 64); numErr == nil {
			return fmt.Errorf("missing unit, e.g. %ss", strings.TrimSpace(s))
		}
		return errors.New("want a duration such as 90s, 5m or 1h30m")
	}
	return nil
}

func (d durationFlag) Get() any { return d.Value.(flag.Getter).Get() }

func isDuration(v flag.Value) bool {
	g, ok := v.(flag.Getter)
	if !ok {
		return false
	}
	_, ok = g.Get().(time.Duration)
	return ok
}

// prepareFlags quiets the flag package (parse reports errors itself) and wraps durations.
func prepareFlags(fs *flag.FlagSet) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.VisitAll(func(f *flag.Flag) {
		if _, done := f.Value.(durationFlag); !done && isDuration(f.Value) {
			f.Value = durationFlag{f.Value}
		}
	})
}

// flagError turns an error of fs.Parse into one line naming the flag, a suggestion for an
// unknown one, and a pointer to -h.
func flagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	const undefined = "flag provided but not defined: -"
	if name, ok := strings.CutPrefix(msg, undefined); ok {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		msg = "unknown flag --" + name
		if s := suggest(name, names); s != "" {
			msg += fmt.Sprintf("; did you mean --%s?", s)
		}
	} else {
		// "invalid value "5" for flag -offline-after: ..." and "flag needs an argument: -name"
		msg = strings.Replace(msg, "flag -", "flag --", 1)
		msg = strings.Replace(msg, "argument: -", "argument: --", 1)
	}
	return &usageError{fmt.Sprintf("%s\nrun 'oneprotect %s -h' for its flags", msg, fs.Name())}
}

// printHelp lists fs's flags with their environment variable and a human default.
func printHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: oneprotect %s [flags]\n\nflags (each also read from the environment variable shown):\n", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		switch {
		case strings.Contains(arg, " "): // a back-quoted phrase in the usage, not a placeholder name
			arg = "value"
		case isDuration(f.Value):
			arg = "duration"
		case arg == "value":
			if _, ok := f.Value.(*byteSize); ok {
				arg = "size"
			}
		}
		head := "  --" + f.Name
		if arg != "" {
			head += " " + arg
		}
		fmt.Fprintf(w, "%s\n      %s\n      env %s", head, usage, envName(f.Name))
		if def := humanDefault(f); def != "" {
			fmt.Fprintf(w, ", default %s", def)
		}
		fmt.Fprintln(w)
	})
}

func isBool(v flag.Value) bool {
	b, ok := v.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// humanDefault renders a flag's default for people: 3m rather than 3m0s, 1MiB rather than 1048576.
func humanDefault(f *flag.Flag) string {
	if isDuration(f.Value) {
		d, _ := time.ParseDuration(f.DefValue)
		return humanDuration(d)
	}
	if f.DefValue == "" {
		return ""
	}
	return f.DefValue
}

func humanDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// humanBytes renders a size with the largest binary unit that divides it.
func humanBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// versionCommand prints the version, commit and Go version recorded in the build.
func versionCommand(args []string, stdout io.Writer) error {
	fs := newFlags("version")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	v := buildVersion()
	if *asJSON {
		return printJSON(stdout, v)
	}
	fmt.Fprintf(stdout, "oneprotect %s (commit %s", v.Version, v.Commit)
	if v.Modified {
		fmt.Fprint(stdout, ", modified")
	}
	fmt.Fprintf(stdout, ") %s\n", v.GoVersion)
	return nil
}

type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"go_version"`
}

// version and commit may be set at link time (make build does, from git) for builds without
// VCS stamping (-buildvcs=false); the build info's own values win when present.
var version, commit string

func buildVersion() versionInfo {
	v := versionInfo{Version: "(devel)", Commit: "unknown", GoVersion: runtime.Version()}
	if version != "" {
		v.Version = version
	}
	if commit != "" {
		v.Commit = commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.GoVersion = bi.GoVersion
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// checkDB catches the --db mistakes whose error from the driver says nothing useful: a SQLite
// file in a directory that does not exist, and (with mustExist, for the admin commands) a
// SQLite file that does not exist yet, which would otherwise be created empty.
func checkDB(db string, mustExist bool) error {
	if store.IsPostgres(db) || db == "" || strings.HasPrefix(db, "file:") || db == ":memory:" {
		return nil
	}
	dir := filepath.Dir(db)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("--db %s: the directory %s does not exist", db, dir)
	}
	if st, err := os.Stat(db); err == nil && st.IsDir() {
		return fmt.Errorf("--db %s: that is a directory; give a file path such as %s", db, filepath.Join(db, "oneprotect.db"))
	}
	if mustExist {
		if _, err := os.Stat(db); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--db %s: no database there yet; create it with 'oneprotect migrate --db %s' (or start 'oneprotect serve' on it), or check the path", db, db)
		}
	}
	return nil
}

// dbError names the database and the cause when it cannot be opened.
func dbError(db string, err error) error {
	if err == nil {
		return nil
	}
	if !store.IsPostgres(db) {
		var de *domain.Error
		if errors.As(err, &de) {
			return fmt.Errorf("--db %s: %s", db, de.Message)
		}
		return fmt.Errorf("--db %s: %w", db, err)
	}
	hostPort := pgHostPort(db)
	if domain.ErrorCode(err) == domain.CodeUnavailable {
		// The driver's cause is behind the domain error; a dial says what is wrong with the address.
		cause := "it does not answer"
		if c, dialErr := net.DialTimeout("tcp", hostPort, 2*time.Second); dialErr != nil {
			cause = dialErr.Error()
		} else {
			c.Close()
		}
		return fmt.Errorf("--db: PostgreSQL at %s cannot be reached: %s", hostPort, cause)
	}
	return fmt.Errorf("--db: PostgreSQL at %s: %w", hostPort, err)
}

// pgHostPort is the host:port of a PostgreSQL URL, with libpq's defaults.
func pgHostPort(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable URL)"
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host = "localhost"
	}
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(host, port)
}

// sortedKeys is for deterministic messages.
func sortedKeys(m map[string]time.Duration) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
