package static

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Opening files below Root without escaping it.
//
// With openat2(2) (Linux 5.6+), RESOLVE_BENEATH makes the kernel refuse any
// resolution that leaves the root directory — "..", absolute symlinks, and
// symlinks pointing outside — in one syscall, race-free. Where openat2 is
// missing (ENOSYS) or filtered (EPERM from a seccomp profile), os.Root does
// the same walk in user space, a syscall per path component.
// AllowSymlinksOutsideRoot uses plain openat(2) relative to the root; the
// request path itself can still not climb out (".." is refused before).

const (
	openFlags   = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK // NONBLOCK: a FIFO under the root must not hang the request
	resolveMode = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS
	// rootRecheck is how often Root's path is compared with the directory
	// held open, so that a deploy that swaps a symlink is picked up
	// without a reload (as nginx, which resolves per request, would).
	rootRecheck = time.Second
)

var (
	errNotRegular = errors.New("not a regular file or directory")
	errEscape     = errors.New("resolves outside the root")
)

// rootDir is one open instance of Root. Replaced instances are not closed
// explicitly, since a request may still be using the descriptor; the
// garbage collector closes them when the last user is done.
type rootDir struct {
	f        *os.File
	fd       int
	dev, ino uint64
	osRoot   *os.Root // fallback mode only
}

// missCache remembers, per file name, which sidecars were just found
// missing, so that a site without sidecars does not pay a failed open per
// accepted encoding on every request. Only absence is cached, and only for
// missTTL: a stale entry can cost a sidecar's benefit for a moment, never
// serve wrong bytes. Replaced whole when the root changes or when full.
type missCache struct {
	m sync.Map // name -> *sidecarMiss (immutable)
	n atomic.Int32
}

type sidecarMiss struct {
	until  int64 // unix nanos
	absent uint8 // bit i: sidecar i (Options.Precompressed order) missing
}

const (
	missTTL     = time.Second
	maxMissKeys = 16384
)

type opener struct {
	misses     atomic.Pointer[missCache]
	files      atomic.Pointer[fileCache] // filecache.go
	path       string
	beneath    bool // refuse symlinks out of the root
	useOpenat2 bool
	cur        atomic.Pointer[rootDir]
	next       atomic.Int64 // monotonic-ish unix nanos of the next recheck
	log        *slog.Logger
	lastWarn   atomic.Int64
}

func newOpener(path string, allowOutside bool, log *slog.Logger) (*opener, error) {
	o := &opener{path: path, beneath: !allowOutside, log: log}
	// Probe openat2 before opening the root so openRoot knows which mode.
	o.useOpenat2 = true
	rd, err := o.openRoot()
	if err != nil {
		return nil, err
	}
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC | unix.O_DIRECTORY, Resolve: resolveMode}
	fd, err := unix.Openat2(rd.fd, ".", &how)
	switch {
	case err == nil:
		unix.Close(fd)
	case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM):
		o.useOpenat2 = false
		if o.beneath {
			log.Debug("static: openat2 unavailable, checking symlinks with os.Root instead", "root", path, "error", err)
			if rd, err = o.openRoot(); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("static: probing openat2 on %s: %w", path, err)
	}
	o.cur.Store(rd)
	o.misses.Store(new(missCache))
	o.files.Store(new(fileCache))
	o.next.Store(time.Now().Add(rootRecheck).UnixNano())
	return o, nil
}

func (o *opener) openRoot() (*rootDir, error) {
	f, err := os.Open(o.path)
	if err != nil {
		return nil, fmt.Errorf("static: opening root: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("static: stat root %s: %w", o.path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		f.Close()
		return nil, fmt.Errorf("static: root %s is not a directory", o.path)
	}
	rd := &rootDir{f: f, fd: int(f.Fd()), dev: st.Dev, ino: st.Ino}
	if !o.useOpenat2 && o.beneath {
		if rd.osRoot, err = os.OpenRoot(o.path); err != nil {
			f.Close()
			return nil, fmt.Errorf("static: opening root: %w", err)
		}
	}
	return rd, nil
}

// root returns the directory to resolve against, re-opening Root at most
// once per rootRecheck when its path now names another directory.
func (o *opener) root() *rootDir {
	now := time.Now().UnixNano()
	next := o.next.Load()
	if now < next || !o.next.CompareAndSwap(next, now+int64(rootRecheck)) {
		return o.cur.Load()
	}
	cur := o.cur.Load()
	var st unix.Stat_t
	if err := unix.Stat(o.path, &st); err != nil {
		o.warn("static: root path no longer resolves; still serving the directory opened before", "root", o.path, "error", err)
		return cur
	}
	if st.Dev == cur.dev && st.Ino == cur.ino {
		return cur
	}
	rd, err := o.openRoot()
	if err != nil {
		o.warn("static: root path changed but cannot be opened; still serving the directory opened before", "root", o.path, "error", err)
		return cur
	}
	o.cur.Store(rd)
	o.misses.Store(new(missCache))
	o.files.Store(new(fileCache))
	o.log.Info("static: root path now names another directory; serving from it", "root", o.path)
	return rd
}

// knownAbsent returns the sidecars recently found missing for name.
func (o *opener) knownAbsent(name string, now int64) uint8 {
	if v, ok := o.misses.Load().m.Load(name); ok {
		if m := v.(*sidecarMiss); now < m.until {
			return m.absent
		}
	}
	return 0
}

// recordAbsent remembers the sidecars found missing for name.
func (o *opener) recordAbsent(name string, absent uint8, now int64) {
	mc := o.misses.Load()
	if _, loaded := mc.m.Swap(strings.Clone(name), &sidecarMiss{until: now + int64(missTTL), absent: absent}); !loaded {
		if mc.n.Add(1) > maxMissKeys {
			o.misses.CompareAndSwap(mc, new(missCache))
		}
	}
}

// warn logs at most once per minute, since requests can trigger it.
func (o *opener) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := o.lastWarn.Load()
	if now-last < int64(time.Minute) || !o.lastWarn.CompareAndSwap(last, now) {
		return
	}
	o.log.Warn(msg, args...)
}

// file is an open regular file or directory below the root. It holds the
// bare descriptor; an *os.File is made only when one is needed (sendfile,
// directory reading), since os.NewFile costs two syscalls (F_GETFL and a
// failing epoll_ctl) that a small file's response does not need. A small
// file from the open-file cache has its contents in data and no
// descriptor (fd -1).
type file struct {
	fd    int
	osf   *os.File // owns fd once set
	name  string
	size  int64
	mtime time.Time
	dir   bool
	data  []byte
	ce    *cachedFile // with data: the cache entry, for its ready-made fields
}

func (f *file) close() {
	if f.fd < 0 {
		return
	}
	if f.osf != nil {
		f.osf.Close()
		return
	}
	unix.Close(f.fd)
}

func (f *file) osFile() *os.File {
	if f.osf == nil {
		f.osf = os.NewFile(uintptr(f.fd), f.name)
	}
	return f.osf
}

// open opens name ("." or a slash-separated path with no "." or ".."
// elements, no leading slash) below the root, or finds its contents in the
// open-file cache.
func (o *opener) open(name string) (file, error) {
	if f, ok := o.cached(name); ok {
		return f, nil
	}
	rd := o.root()
	var fd int
	var err error
	switch {
	case !o.beneath:
		fd, err = unix.Openat(rd.fd, name, openFlags, 0)
	case o.useOpenat2:
		how := unix.OpenHow{Flags: openFlags, Resolve: resolveMode}
		for range 3 {
			// EAGAIN: a concurrent rename or mount raced the lookup.
			if fd, err = unix.Openat2(rd.fd, name, &how); err != unix.EAGAIN {
				break
			}
		}
	default:
		return o.openRoot2(rd, name)
	}
	if err != nil {
		// The root's descriptor must stay open until the syscall is done.
		runtime.KeepAlive(rd)
		if err == unix.EXDEV || err == unix.ELOOP {
			return file{}, errEscape
		}
		// The bare errno: boxing a small Errno does not allocate, and a
		// missing sidecar is the common case. Callers name the path.
		return file{}, err
	}
	runtime.KeepAlive(rd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return file{}, &fs.PathError{Op: "fstat", Path: name, Err: err}
	}
	fl := file{fd: fd, name: name, size: st.Size, mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec)}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		o.remember(&fl, &st)
	case unix.S_IFDIR:
		fl.dir = true
	default:
		unix.Close(fd)
		return file{}, errNotRegular
	}
	return fl, nil
}

// openRoot2 is the os.Root fallback of open.
func (o *opener) openRoot2(rd *rootDir, name string) (file, error) {
	f, err := rd.osRoot.OpenFile(name, openFlags, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && (errors.Is(pe.Err, fs.ErrNotExist) || errors.Is(pe.Err, unix.ENOTDIR) || errors.Is(pe.Err, fs.ErrPermission)) {
			return file{}, err
		}
		// os.Root reports escapes with an unexported error.
		return file{}, errEscape
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return file{}, err
	}
	fl := file{osf: f, fd: int(f.Fd()), name: name, size: fi.Size(), mtime: fi.ModTime()}
	switch {
	case fi.Mode().IsRegular():
	case fi.IsDir():
		fl.dir = true
	default:
		f.Close()
		return file{}, errNotRegular
	}
	return fl, nil
}
