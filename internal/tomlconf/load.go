// Package tomlconf loads TOML configuration strictly: unknown keys, wrong
// types and bad values are errors that name the file, the line and the key.
// It also provides the value types both daemons' configs share (Size,
// Duration). Validation code reports through Doc.Errorf so its messages carry
// the same position information as decoding errors.
package tomlconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"golang.org/x/sys/unix"
)

// Error is one problem in a configuration file.
type Error struct {
	File string
	Line int    // 0 when unknown
	Key  string // dotted, with [i] for arrays of tables: site[0].route[1].path
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": %s", e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file, in line order.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Err returns nil for an empty list, so callers can `return errs.Err()`.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].File != es[j].File {
			return es[i].File < es[j].File
		}
		return es[i].Line < es[j].Line
	})
	return es
}

// Doc is a decoded file and the line of every key in it, for validation
// messages.
type Doc struct {
	File   string
	lines  map[string]int // indexed key -> line
	plain  map[string][]int
	md     toml.MetaData
	mounts []mount // keys written in other files (drop-ins)
}

type mount struct {
	prefix    string
	doc       *Doc
	subPrefix string
}

// MaxFileSize caps a configuration file: a mistaken path (a log, a
// device) is refused instead of read into memory.
const MaxFileSize = 4 << 20

// ReadFile reads a configuration file: a regular file (symlinks to one
// are fine) of at most MaxFileSize bytes. Anything else is refused without
// reading it, so a symlink to /dev/zero or a FIFO cannot hang `-t`.
func ReadFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("reading configuration: %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Size() > MaxFileSize {
		return nil, fmt.Errorf("reading configuration: %s is %d bytes, more than a configuration file may be (%d)", path, fi.Size(), MaxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("reading configuration: %s grew past %d bytes while being read", path, MaxFileSize)
	}
	return data, nil
}

// Load reads (see ReadFile) and strictly decodes path into v.
func Load(path string, v any) (*Doc, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Decode(path, data, v)
}

var lineRE = regexp.MustCompile(`^toml: line (\d+)(?: \(last key "([^"]*)"\))?: (.*)$`)

// Decode strictly decodes data (read from file) into v, a pointer to a
// struct. The error lists every unknown key and every value of the wrong
// type, not only the first.
func Decode(file string, data []byte, v any) (*Doc, error) {
	doc := &Doc{File: file}
	if !utf8.Valid(data) {
		return nil, Errors{{File: file, Line: 1 + bytes.Count(data[:invalidUTF8(data)], []byte("\n")), Msg: "not UTF-8 text"}}
	}
	doc.index(string(data))
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	doc.md = md
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, Errors{{File: file, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}}
		}
		if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return nil, Errors{{File: file, Line: line, Key: m[2], Msg: m[3]}}
		}
		return nil, Errors{{File: file, Msg: err.Error()}}
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("tomlconf.Decode: want a pointer to a struct, not %T", v)
	}
	d := &decoder{md: md, doc: doc}
	d.fields(top, rv.Elem(), "")
	if err := d.errs.Err(); err != nil {
		return nil, err
	}
	return doc, nil
}

func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// IsDefined reports whether the file set key (dotted, without indices).
func (d *Doc) IsDefined(key ...string) bool { return d != nil && d.md.IsDefined(key...) }

// Line returns the line where key (site[0].route[1].path) was written, or the
// line of its nearest written parent, or 0.
func (d *Doc) Line(key string) int {
	if d == nil {
		return 0
	}
	for k := key; k != ""; {
		if l, ok := d.lines[k]; ok {
			return l
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

// Errorf makes a positioned validation error for key, in the file that
// holds it (see Mount).
func (d *Doc) Errorf(key, format string, args ...any) *Error {
	file, line, local := d.Locate(key)
	return &Error{File: file, Line: line, Key: local, Msg: fmt.Sprintf(format, args...)}
}

// Mount says that the keys under prefix of the merged configuration
// (site[3], upstream.app) were written in another file, sub, under
// subPrefix (site[1], upstream.app): errors about them name that file,
// its line and its own key.
func (d *Doc) Mount(prefix string, sub *Doc, subPrefix string) {
	d.mounts = append(d.mounts, mount{prefix: prefix, doc: sub, subPrefix: subPrefix})
}

// Locate returns the file, line and key (as written there) of a key of the
// merged configuration.
func (d *Doc) Locate(key string) (file string, line int, local string) {
	if d == nil {
		return "", 0, key
	}
	for _, m := range d.mounts {
		rest, ok := strings.CutPrefix(key, m.prefix)
		if ok && (rest == "" || rest[0] == '.' || rest[0] == '[') {
			return m.doc.Locate(m.subPrefix + rest)
		}
	}
	return d.File, d.Line(key), key
}

// Where is "file:line" for a key, for messages that point at another
// place ("already served by site[0] at edged.toml:12").
func (d *Doc) Where(key string) string {
	file, line, local := d.Locate(key)
	if line > 0 {
		return fmt.Sprintf("%s (%s:%d)", local, file, line)
	}
	return fmt.Sprintf("%s (%s)", local, file)
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

// index records the line of every table header and key. It is a light
// scanner, not a parser: the real decode has already judged the syntax, and
// a key it misses only loses its line number.
func (d *Doc) index(src string) {
	d.lines = map[string]int{}
	d.plain = map[string][]int{}
	arrays := map[string]int{} // indexed path of an array of tables -> last index
	table := ""                // current table, indexed
	depth := 0                 // open [ or { of a multi-line value
	inMulti := ""              // open multi-line string delimiter
	record := func(key string, line int) {
		if _, ok := d.lines[key]; !ok {
			d.lines[key] = line
		}
		p := indexRE.ReplaceAllString(key, "")
		d.plain[p] = append(d.plain[p], line)
	}
	// resolve adds the current index to every prefix that is an array of tables.
	resolve := func(parts []string) string {
		cur := ""
		for _, p := range parts {
			if cur != "" {
				cur += "."
			}
			cur += p
			if n, ok := arrays[cur]; ok {
				cur += fmt.Sprintf("[%d]", n)
			}
		}
		return cur
	}
	for i, raw := range strings.Split(src, "\n") {
		lineNo := i + 1
		line := raw
		if inMulti != "" {
			if strings.Contains(line, inMulti) {
				inMulti = ""
			}
			continue
		}
		line = strings.TrimSpace(stripComment(line))
		if line == "" {
			continue
		}
		if depth > 0 {
			depth += strings.Count(line, "[") + strings.Count(line, "{") - strings.Count(line, "]") - strings.Count(line, "}")
			continue
		}
		if strings.HasPrefix(line, "[[") {
			parts := splitKey(strings.TrimSuffix(strings.TrimPrefix(line, "[["), "]]"))
			parent := resolve(parts[:len(parts)-1])
			path := parts[len(parts)-1]
			if parent != "" {
				path = parent + "." + path
			}
			n, ok := arrays[path]
			if ok {
				n++
			}
			arrays[path] = n
			table = fmt.Sprintf("%s[%d]", path, n)
			record(table, lineNo)
			continue
		}
		if strings.HasPrefix(line, "[") {
			parts := splitKey(strings.TrimSuffix(strings.TrimPrefix(line, "["), "]"))
			table = resolve(parts)
			record(table, lineNo)
			continue
		}
		eq := strings.Index(line, "=")
		if eq < 0 {
			continue
		}
		key := strings.Join(splitKey(line[:eq]), ".")
		if table != "" {
			key = table + "." + key
		}
		record(key, lineNo)
		value := strings.TrimSpace(line[eq+1:])
		for _, q := range []string{`"""`, `'''`} {
			if strings.HasPrefix(value, q) && !strings.Contains(value[3:], q) {
				inMulti = q
			}
		}
		if inMulti == "" {
			depth = strings.Count(value, "[") + strings.Count(value, "{") - strings.Count(value, "]") - strings.Count(value, "}")
			if depth < 0 {
				depth = 0
			}
		}
	}
}

// splitKey splits a dotted key, unquoting quoted parts.
func splitKey(s string) []string {
	var parts []string
	for _, p := range strings.Split(strings.TrimSpace(s), ".") {
		p = strings.TrimSpace(p)
		p = strings.Trim(p, `"'`)
		parts = append(parts, p)
	}
	return parts
}

// stripComment cuts a # comment that is not inside a string.
func stripComment(s string) string {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#':
			return s[:i]
		}
	}
	return s
}
