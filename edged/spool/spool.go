// Package spool is the buffer edged keeps one message body in while it
// stands between a client and an upstream server: in memory up to a size,
// then in an unnamed temporary file (O_TMPFILE) in edged's own directory.
// The file has no name from the start, so nothing is left behind when
// edged stops, crashes or is killed; where the file system cannot make
// unnamed files, the file is named and unlinked at once.
//
// A Spool is written once from its start and read back any number of
// times (a request body sent again on a retry) or while it is still being
// written (a response that reaches a slow client after the upstream is
// done): one goroutine writes, others may read at offsets already written.
package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// BlockSize is the unit of a spool's memory, taken from a shared pool.
const BlockSize = 16 << 10

var blocks = sync.Pool{New: func() any { b := make([]byte, BlockSize); return &b }}

// ErrFull says a write would take the spool past its Max.
var ErrFull = errors.New("spool: over its size limit")

// Options size a spool.
type Options struct {
	// Dir holds the file part; see DefaultDir.
	Dir string
	// Memory is how many bytes are kept in memory (rounded up to whole
	// blocks) before the rest goes to a file; 0 means all goes to a file.
	Memory int64
	// Max bounds the whole content; 0 means no bound. A write past it
	// fails with ErrFull and writes nothing.
	Max int64
}

// Spool is one body. The zero value is not usable: see New.
type Spool struct {
	opt Options

	mu     sync.Mutex
	mem    []*[]byte // blocks, filled in order
	memCap int64     // bytes the blocks may hold
	size   int64     // bytes written
	f      *os.File  // the file part, created on demand
	fsize  int64     // bytes in f
	closed bool

	// Written in all, across Resets: in memory and to the file.
	totalMem, totalFile int64
}

// New returns an empty spool.
func New(o Options) *Spool {
	s := &Spool{opt: o}
	if o.Memory > 0 {
		n := (o.Memory + BlockSize - 1) / BlockSize
		s.memCap = n * BlockSize
	}
	return s
}

// Size is the number of bytes written.
func (s *Spool) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// FileBytes is how many of them went to the file.
func (s *Spool) FileBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fsize
}

// HasFile reports whether the spool made a file.
func (s *Spool) HasFile() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f != nil
}

// Write appends p.
func (s *Spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, os.ErrClosed
	}
	if s.opt.Max > 0 && s.size+int64(len(p)) > s.opt.Max {
		return 0, ErrFull
	}
	n := 0
	for n < len(p) && s.size < s.memCap {
		i := int(s.size / BlockSize)
		if i == len(s.mem) {
			s.mem = append(s.mem, blocks.Get().(*[]byte))
		}
		k := copy((*s.mem[i])[s.size%BlockSize:], p[n:])
		n += k
		s.size += int64(k)
		s.totalMem += int64(k)
	}
	if n == len(p) {
		return n, nil
	}
	if s.f == nil {
		f, err := TempFile(s.opt.Dir)
		if err != nil {
			return n, err
		}
		s.f = f
	}
	k, err := s.f.WriteAt(p[n:], s.fsize)
	s.fsize += int64(k)
	s.size += int64(k)
	s.totalFile += int64(k)
	n += k
	if err != nil {
		return n, fmt.Errorf("spool: writing the temporary file in %s: %w", s.opt.Dir, err)
	}
	return n, nil
}

// ReadFrom appends everything r yields, in memory blocks first, then
// through a buffer to the file; it stops at ErrFull.
func (s *Spool) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	var tmp *[]byte
	defer func() {
		if tmp != nil {
			blocks.Put(tmp)
		}
	}()
	for {
		s.mu.Lock()
		var dst []byte
		if s.closed {
			s.mu.Unlock()
			return total, os.ErrClosed
		}
		if s.size < s.memCap {
			i := int(s.size / BlockSize)
			if i == len(s.mem) {
				s.mem = append(s.mem, blocks.Get().(*[]byte))
			}
			dst = (*s.mem[i])[s.size%BlockSize:]
			if s.opt.Max > 0 {
				// One byte past the limit, to see it passed.
				dst = dst[:min(int64(len(dst)), s.opt.Max-s.size+1)]
			}
		}
		s.mu.Unlock()
		if dst != nil {
			// Read straight into the memory block: no copy.
			n, err := r.Read(dst)
			if n > 0 {
				s.mu.Lock()
				if s.opt.Max > 0 && s.size+int64(n) > s.opt.Max {
					s.mu.Unlock()
					return total, ErrFull
				}
				s.size += int64(n)
				s.totalMem += int64(n)
				s.mu.Unlock()
				total += int64(n)
			}
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
			continue
		}
		if tmp == nil {
			tmp = blocks.Get().(*[]byte)
		}
		n, err := r.Read(*tmp)
		if n > 0 {
			k, werr := s.Write((*tmp)[:n])
			total += int64(k)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Stats reports the bytes written to memory and to the file in all (a
// Reset does not take them back), and whether a file was made.
func (s *Spool) Stats() (memory, file int64, madeFile bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.totalMem, s.totalFile, s.totalFile > 0
}

// ReadAt reads bytes already written, at off.
func (s *Spool) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, os.ErrClosed
	}
	size, memLen, f := s.size, s.size-s.fsize, s.f
	n := 0
	for n < len(p) && off < memLen {
		b := *s.mem[off/BlockSize]
		k := copy(p[n:], b[off%BlockSize:min(int64(len(b)), memLen-off/BlockSize*BlockSize)])
		n += k
		off += int64(k)
	}
	s.mu.Unlock()
	if n == len(p) {
		return n, nil
	}
	if off >= size {
		return n, io.EOF
	}
	want := p[n:min(int64(len(p)), int64(n)+size-off)]
	k, err := f.ReadAt(want, off-memLen)
	n += k
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// WriteTo writes the whole content to w: the memory part, then the file
// part as an *io.LimitedReader over the file, so that a TCP connection's
// ReadFrom sends it with sendfile(2). Not while the spool is written.
func (s *Spool) WriteTo(w io.Writer) (int64, error) {
	s.mu.Lock()
	memLen, f, fsize := s.size-s.fsize, s.f, s.fsize
	mem := s.mem
	s.mu.Unlock()
	var total int64
	for i := 0; int64(i)*BlockSize < memLen; i++ {
		b := (*mem[i])[:min(BlockSize, memLen-int64(i)*BlockSize)]
		n, err := w.Write(b)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	if f == nil {
		return total, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return total, err
	}
	n, err := io.Copy(w, &io.LimitedReader{R: f, N: fsize})
	total += n
	return total, err
}

// Memory returns the content when it is all in one memory block (nil
// otherwise), so a small body is sent with its head in one write.
func (s *Spool) Memory() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil || len(s.mem) > 1 || s.size > BlockSize {
		return nil
	}
	if len(s.mem) == 0 {
		return []byte{}
	}
	return (*s.mem[0])[:s.size]
}

// Reset empties the spool, keeping its memory; the file is truncated.
func (s *Spool) Reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.size, s.fsize = 0, 0
	if s.f != nil {
		return s.f.Truncate(0)
	}
	return nil
}

// Close gives the memory back and closes the file (which, having no name,
// is gone with it).
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, b := range s.mem {
		blocks.Put(b)
	}
	s.mem = nil
	var err error
	if s.f != nil {
		err = s.f.Close()
		s.f = nil
	}
	return err
}

// TempFile opens a new unnamed file in dir, for reading and writing.
func TempFile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dir, "(spool)")), nil
	}
	if !errors.Is(err, syscall.EOPNOTSUPP) && !errors.Is(err, syscall.EISDIR) && !errors.Is(err, syscall.EINVAL) {
		return nil, fmt.Errorf("spool: creating a temporary file in %s: %w", dir, err)
	}
	// A file system without O_TMPFILE: a named file, unlinked at once.
	f, err := os.CreateTemp(dir, ".edged-spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool: creating a temporary file in %s: %w", dir, err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: unlinking the temporary file %s: %w", f.Name(), err)
	}
	return f, nil
}

// CheckDir reports whether spools can make files in dir.
func CheckDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("%q is not an absolute path", dir)
	}
	f, err := TempFile(dir)
	if err != nil {
		return err
	}
	return f.Close()
}

// DefaultDir is where spools make their files when the configuration names
// no directory: systemd's CacheDirectory= (on disk, edged's own, emptied
// by nothing else), else RuntimeDirectory= (a tmpfs), else the system's
// temporary directory.
func DefaultDir() string {
	for _, env := range []string{"CACHE_DIRECTORY", "RUNTIME_DIRECTORY"} {
		if v := os.Getenv(env); v != "" {
			// systemd lists several directories separated by ':'.
			for i := 0; i < len(v); i++ {
				if v[i] == ':' {
					return v[:i]
				}
			}
			return v
		}
	}
	return os.TempDir()
}
