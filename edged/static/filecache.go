package static

import (
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The open-file cache, nginx's open_file_cache for small files taken one
// step further: the contents of regular files up to maxCachedFile are kept
// in memory, so that a hit costs one stat(2) instead of open, fstat, pread
// and close. The stat, relative to the root held open, runs on every
// request and must name the same inode with the same size, modification
// and change times as when the file was read (a deploy that renames a new
// file into place, or an edit in place, is seen at once; nothing is ever
// served stale). The stat is a check of identity only: a hit serves bytes
// that were read through the opener's refusal of paths leaving the root.
const (
	maxCachedFile  = 32 << 10
	maxCacheBytes  = 64 << 20
	maxCacheFiles  = 16384
	cacheFillAfter = 2 // a file is cached on its second request, so a crawl does not fill memory with files read once
)

type fileCache struct {
	m     sync.Map // name -> *cachedFile (immutable once stored) or *cacheSeen
	bytes atomic.Int64
	n     atomic.Int64
}

type cachedFile struct {
	data         []byte
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
	// Response fields made once (shared, never modified in place).
	etag, lastModified, length []string
}

// cacheSeen counts requests for a file not cached yet.
type cacheSeen struct{ n atomic.Int32 }

func (e *cachedFile) same(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Dev == e.dev && st.Ino == e.ino && st.Size == e.size &&
		st.Mtim == e.mtime && st.Ctim == e.ctime
}

// cached returns name's contents if they are cached and the file is
// unchanged.
func (o *opener) cached(name string) (file, bool) {
	v, ok := o.files.Load().m.Load(name)
	if !ok {
		return file{}, false
	}
	e, ok := v.(*cachedFile)
	if !ok {
		return file{}, false
	}
	rd := o.root()
	var st unix.Stat_t
	err := unix.Fstatat(rd.fd, name, &st, 0)
	runtime.KeepAlive(rd)
	if err != nil || !e.same(&st) {
		return file{}, false
	}
	return file{fd: -1, name: name, size: e.size, mtime: time.Unix(e.mtime.Sec, e.mtime.Nsec), data: e.data, ce: e}, true
}

// remember reads a small regular file just opened into the cache (from its
// second request on) and makes f serve from memory.
func (o *opener) remember(f *file, st *unix.Stat_t) {
	if f.dir || f.size > maxCachedFile || f.osf != nil {
		return
	}
	fc := o.files.Load()
	if v, ok := fc.m.Load(f.name); ok {
		if s, ok := v.(*cacheSeen); ok && s.n.Add(1) < cacheFillAfter {
			return
		}
	} else {
		if fc.n.Add(1) > maxCacheFiles {
			o.files.CompareAndSwap(fc, new(fileCache))
			return
		}
		s := new(cacheSeen)
		s.n.Store(1)
		fc.m.Store(strings.Clone(f.name), s)
		if cacheFillAfter > 1 {
			return
		}
	}
	data := make([]byte, f.size)
	for n := 0; n < len(data); {
		k, err := unix.Pread(f.fd, data[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil || k == 0 {
			return // changed under us: serve it the usual way
		}
		n += k
	}
	e := &cachedFile{data: data, dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim,
		etag:         []string{makeETag(f, nil)},
		lastModified: []string{f.mtime.UTC().Format(http.TimeFormat)},
		length:       []string{strconv.FormatInt(f.size, 10)},
	}
	fc.m.Store(strings.Clone(f.name), e)
	if fc.bytes.Add(int64(len(data))) > maxCacheBytes {
		o.files.CompareAndSwap(fc, new(fileCache))
	}
	f.data, f.ce = data, e
}
