package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A disk entry is one file: the body, then the metadata (JSON), then a
// fixed footer with both lengths and checksums. The body comes first so a
// large body can be streamed to the file as it arrives and later sent from
// offset 0. A file that is truncated, or whose footer or metadata checksum
// fails, is deleted when the index is loaded; the body checksum is checked
// before the first time the body is served in this process.
//
//	footer: magic[8] bodyLen[8] metaLen[4] bodyCRC[4] metaCRC[4] footerCRC[4]

const (
	footerLen = 32
	diskMagic = "EDGEDC01"
	tmpDir    = "tmp"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var errCorrupt = errors.New("corrupt cache entry")

// diskFile is where an object's body lives on disk.
type diskFile struct {
	path     string
	size     int64 // whole file, as accounted
	bodyCRC  uint32
	verified atomic.Bool // body checksum checked in this process
}

type diskMeta struct {
	Key      string      `json:"k"`
	VaryVals []string    `json:"v,omitempty"`
	Status   int         `json:"s"`
	Header   http.Header `json:"h"`
	Own      []string    `json:"o,omitempty"` // edged's own targeted cache-control field
	Trailer  http.Header `json:"t,omitempty"`
	Age      int64       `json:"a,omitempty"`
	ReqTime  int64       `json:"rq"`
	RespTime int64       `json:"rs"`
}

type diskJob struct {
	o    *object
	m    *meta
	body []byte // nil: rewrite the entry with new metadata (after a 304)
}

// diskTier is the byte-bounded disk store, evicting by CLOCK (FIFO with a
// second chance for entries hit since their last pass).
type diskTier struct {
	c   *Cache
	dir string
	tmp string
	max int64

	mu         sync.Mutex
	bytes      int64
	n          int
	head, tail *object

	jobs   chan diskJob
	quit   chan struct{}
	wg     sync.WaitGroup
	seq    atomic.Uint64
	fails  failLog
	loaded chan struct{}
}

func openDisk(c *Cache, dir string, max int64) (*diskTier, error) {
	d := &diskTier{c: c, dir: dir, tmp: filepath.Join(dir, tmpDir), max: max,
		jobs: make(chan diskJob, 1024), quit: make(chan struct{}), loaded: make(chan struct{})}
	d.seq.Store(uint64(time.Now().UnixNano()))
	if err := os.MkdirAll(d.tmp, 0o750); err != nil {
		d.fails.fail(c.log, "cache directory is not usable; serving without storing to disk until it is", "dir", dir, "err", err)
	} else if ents, err := os.ReadDir(d.tmp); err == nil {
		for _, e := range ents { // leftovers of writes cut short by a crash
			os.Remove(filepath.Join(d.tmp, e.Name()))
		}
	}
	return d, nil
}

// start runs the writer and the index loader; c.disk must be set.
func (d *diskTier) start() {
	d.wg.Add(2)
	go d.writer()
	go d.load()
}

func (d *diskTier) close() {
	close(d.quit)
	d.wg.Wait()
}

func (d *diskTier) usage() (int64, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bytes, d.n
}

// enqueue hands a write to the writer goroutine; when it is behind, the
// object simply stays memory-only.
func (d *diskTier) enqueue(j diskJob) {
	select {
	case <-d.quit:
	case d.jobs <- j:
	default:
	}
}

func (d *diskTier) writer() {
	defer d.wg.Done()
	for {
		select {
		case j := <-d.jobs:
			d.do(j)
		case <-d.quit:
			for {
				select {
				case j := <-d.jobs:
					d.do(j)
				default:
					return
				}
			}
		}
	}
}

func (d *diskTier) do(j diskJob) {
	if j.o.gone.Load() {
		return
	}
	if j.body == nil {
		d.rewrite(j.o, j.m)
		return
	}
	df, err := d.writeEntry(j.o, j.m, j.body, nil)
	if err != nil {
		d.c.met.diskErr.Inc()
		d.fails.fail(d.c.log, "cannot write to the disk cache; serving without storing to disk", "dir", d.dir, "err", err)
		return
	}
	d.fails.ok(d.c.log, "disk cache writable again")
	j.o.disk.Store(df)
	d.add(j.o)
}

// rewrite replaces an entry's metadata after a 304 refreshed it, in place:
// the body, first in the file, is left alone (readers may be sending it
// right now), the new metadata and footer are written after it and the
// file is cut to its new length. However large the body, only the
// metadata is written. A crash in between leaves a footer or metadata
// that fails its checksum, and the entry is dropped at the next start.
func (d *diskTier) rewrite(o *object, m *meta) {
	old := o.disk.Load()
	if old == nil {
		return
	}
	mb, err := encodeMeta(o, m)
	if err != nil {
		return
	}
	tail := append(mb, makeFooter(o.size, len(mb), old.bodyCRC, crc32.Checksum(mb, crcTable))...)
	f, err := os.OpenFile(old.path, os.O_WRONLY, 0)
	if err != nil {
		return // evicted or purged meanwhile
	}
	_, err = f.WriteAt(tail, o.size)
	if err == nil {
		err = f.Truncate(o.size + int64(len(tail)))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		d.c.met.diskErr.Inc()
		d.fails.fail(d.c.log, "cannot write to the disk cache; serving without storing to disk", "dir", d.dir, "err", err)
		d.remove(o) // its metadata on disk may be half written
		return
	}
	df := &diskFile{path: old.path, size: o.size + int64(len(tail)), bodyCRC: old.bodyCRC}
	df.verified.Store(old.verified.Load())
	d.mu.Lock()
	if o.disk.CompareAndSwap(old, df) && o.dlisted {
		d.bytes += df.size - old.size
	}
	d.mu.Unlock()
}

func (d *diskTier) pathFor(o *object) string {
	return filepath.Join(d.dir, fmt.Sprintf("%02x", byte(o.hash>>56)), fmt.Sprintf("%016x-%x", o.hash, d.seq.Add(1)))
}

func encodeMeta(o *object, m *meta) ([]byte, error) {
	return json.Marshal(diskMeta{Key: o.key, VaryVals: o.varyVals, Status: m.status, Header: m.header, Own: m.own, Trailer: m.trailers,
		Age: m.ageValue, ReqTime: m.reqTime.UnixNano(), RespTime: m.respTime.UnixNano()})
}

func makeFooter(bodyLen int64, metaLen int, bodyCRC, metaCRC uint32) []byte {
	b := make([]byte, footerLen)
	copy(b, diskMagic)
	binary.LittleEndian.PutUint64(b[8:], uint64(bodyLen))
	binary.LittleEndian.PutUint32(b[16:], uint32(metaLen))
	binary.LittleEndian.PutUint32(b[20:], bodyCRC)
	binary.LittleEndian.PutUint32(b[24:], metaCRC)
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], crcTable))
	return b
}

// writeEntry writes a complete entry to a temp file and renames it into
// place (over old's path when replacing).
func (d *diskTier) writeEntry(o *object, m *meta, body []byte, old *diskFile) (*diskFile, error) {
	mb, err := encodeMeta(o, m)
	if err != nil {
		return nil, fmt.Errorf("encoding cache metadata: %w", err)
	}
	if err := os.MkdirAll(d.tmp, 0o750); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(d.tmp, "w-")
	if err != nil {
		return nil, err
	}
	bodyCRC := crc32.Checksum(body, crcTable)
	foot := makeFooter(int64(len(body)), len(mb), bodyCRC, crc32.Checksum(mb, crcTable))
	_, err = f.Write(body)
	if err == nil {
		_, err = f.Write(append(mb, foot...))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	path := d.pathFor(o)
	if old != nil {
		path = old.path
	}
	if err := d.place(f.Name(), path); err != nil {
		return nil, err
	}
	df := &diskFile{path: path, size: int64(len(body) + len(mb) + footerLen), bodyCRC: bodyCRC}
	df.verified.Store(true)
	return df, nil
}

// finishSpill turns a body already streamed to a temp file into an entry:
// metadata and footer are appended, then the file is renamed into place.
func (d *diskTier) finishSpill(f *os.File, tmpPath string, bodyLen int64, bodyCRC uint32, o *object, m *meta) (*diskFile, error) {
	mb, err := encodeMeta(o, m)
	if err != nil {
		return nil, fmt.Errorf("encoding cache metadata: %w", err)
	}
	foot := makeFooter(bodyLen, len(mb), bodyCRC, crc32.Checksum(mb, crcTable))
	if _, err := f.WriteAt(append(mb, foot...), bodyLen); err != nil {
		return nil, err
	}
	path := d.pathFor(o)
	if err := d.place(tmpPath, path); err != nil {
		return nil, err
	}
	df := &diskFile{path: path, size: bodyLen + int64(len(mb)) + footerLen, bodyCRC: bodyCRC}
	df.verified.Store(true)
	return df, nil
}

func (d *diskTier) place(tmp, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// spillFile creates the temp file a large body streams into.
func (d *diskTier) spillFile() (*os.File, error) {
	if err := os.MkdirAll(d.tmp, 0o750); err != nil {
		return nil, err
	}
	return os.CreateTemp(d.tmp, "s-")
}

// add accounts o's file and evicts by CLOCK until the tier fits.
func (d *diskTier) add(o *object) {
	df := o.disk.Load()
	if df == nil {
		return
	}
	var victims []*object
	d.mu.Lock()
	if !o.dlisted {
		o.dlisted = true
		o.dprev, o.dnext = nil, d.head
		if d.head != nil {
			d.head.dprev = o
		} else {
			d.tail = o
		}
		d.head = o
		d.bytes += df.size
		d.n++
	}
	for spins := 0; d.bytes > d.max && d.tail != nil && spins < 2*d.n+2; spins++ {
		v := d.tail
		d.unlink(v)
		if v.dref.Load() && v != o {
			v.dref.Store(false)
			v.dlisted = true
			v.dprev, v.dnext = nil, d.head
			if d.head != nil {
				d.head.dprev = v
			} else {
				d.tail = v
			}
			d.head = v
			d.bytes += v.disk.Load().size
			d.n++
			continue
		}
		victims = append(victims, v)
	}
	d.mu.Unlock()
	for _, v := range victims {
		if df := v.disk.Swap(nil); df != nil {
			os.Remove(df.path)
		}
		d.c.met.diskEvict.Inc()
		if v.mem.Load() == nil {
			d.c.unindex(v)
		}
	}
	if o.gone.Load() {
		d.remove(o)
	}
}

// unlink takes o off the clock list; d.mu held.
func (d *diskTier) unlink(o *object) {
	if !o.dlisted {
		return
	}
	if o.dprev != nil {
		o.dprev.dnext = o.dnext
	} else {
		d.head = o.dnext
	}
	if o.dnext != nil {
		o.dnext.dprev = o.dprev
	} else {
		d.tail = o.dprev
	}
	o.dprev, o.dnext = nil, nil
	o.dlisted = false
	if df := o.disk.Load(); df != nil {
		d.bytes -= df.size
	}
	d.n--
}

// remove deletes o's file and forgets it.
func (d *diskTier) remove(o *object) {
	d.mu.Lock()
	d.unlink(o)
	d.mu.Unlock()
	if df := o.disk.Swap(nil); df != nil {
		os.Remove(df.path)
	}
}

// readBody reads a whole body and checks its checksum.
func (d *diskTier) readBody(o *object, df *diskFile) ([]byte, error) {
	f, err := os.Open(df.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	body := make([]byte, o.size)
	if _, err := f.ReadAt(body, 0); err != nil {
		return nil, fmt.Errorf("%w: reading body of %s: %v", errCorrupt, df.path, err)
	}
	if crc32.Checksum(body, crcTable) != df.bodyCRC {
		return nil, fmt.Errorf("%w: body checksum of %s", errCorrupt, df.path)
	}
	df.verified.Store(true)
	return body, nil
}

// verify checks a large body's checksum once per process before it is served.
func (d *diskTier) verify(o *object, df *diskFile) error {
	if df.verified.Load() {
		return nil
	}
	f, err := os.Open(df.path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := crc32.New(crcTable)
	if n, err := io.Copy(h, io.LimitReader(f, o.size)); err != nil || n != o.size {
		return fmt.Errorf("%w: reading body of %s", errCorrupt, df.path)
	}
	if h.Sum32() != df.bodyCRC {
		return fmt.Errorf("%w: body checksum of %s", errCorrupt, df.path)
	}
	df.verified.Store(true)
	return nil
}

// readEntry reads an entry's footer and metadata.
func (d *diskTier) readEntry(path string) (*object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < footerLen {
		return nil, fmt.Errorf("%w: %s is truncated", errCorrupt, path)
	}
	foot := make([]byte, footerLen)
	if _, err := f.ReadAt(foot, size-footerLen); err != nil {
		return nil, err
	}
	if string(foot[:8]) != diskMagic || crc32.Checksum(foot[:28], crcTable) != binary.LittleEndian.Uint32(foot[28:]) {
		return nil, fmt.Errorf("%w: %s has no valid footer", errCorrupt, path)
	}
	bodyLen := int64(binary.LittleEndian.Uint64(foot[8:]))
	metaLen := int64(binary.LittleEndian.Uint32(foot[16:]))
	if bodyLen < 0 || bodyLen+metaLen+footerLen != size {
		return nil, fmt.Errorf("%w: %s has the wrong length", errCorrupt, path)
	}
	mb := make([]byte, metaLen)
	if _, err := f.ReadAt(mb, bodyLen); err != nil {
		return nil, err
	}
	if crc32.Checksum(mb, crcTable) != binary.LittleEndian.Uint32(foot[24:]) {
		return nil, fmt.Errorf("%w: metadata checksum of %s", errCorrupt, path)
	}
	var dm diskMeta
	if err := json.NewDecoder(bytes.NewReader(mb)).Decode(&dm); err != nil {
		return nil, fmt.Errorf("%w: metadata of %s: %v", errCorrupt, path, err)
	}
	c := d.c
	m := c.newMeta(dm.Status, dm.Header, dm.Own, dm.Age, time.Unix(0, dm.ReqTime), time.Unix(0, dm.RespTime), bodyLen)
	m.trailers = dm.Trailer
	o := &object{key: dm.Key, varyVals: dm.VaryVals, size: bodyLen, hash: c.objHash(dm.Key, dm.VaryVals)}
	o.m.Store(m)
	o.disk.Store(&diskFile{path: path, size: size, bodyCRC: binary.LittleEndian.Uint32(foot[20:])})
	return o, nil
}

// load indexes the entries found on disk, oldest first, while the cache
// already serves. Broken entries are deleted.
func (d *diskTier) load() {
	defer d.wg.Done()
	defer d.c.loadDone()
	defer close(d.loaded)
	dirs, err := os.ReadDir(d.dir)
	if err != nil {
		return
	}
	var objs []*object
	bad := 0
	for _, de := range dirs {
		if !de.IsDir() || len(de.Name()) != 2 {
			continue
		}
		sub := filepath.Join(d.dir, de.Name())
		ents, err := os.ReadDir(sub)
		if err != nil {
			continue
		}
		for _, e := range ents {
			select {
			case <-d.quit:
				return
			default:
			}
			path := filepath.Join(sub, e.Name())
			o, err := d.readEntry(path)
			if errors.Is(err, fs.ErrNotExist) {
				continue // evicted or replaced since the directory was read
			}
			if err != nil {
				bad++
				d.c.log.Warn("discarding a broken disk cache entry", "path", path, "err", err)
				os.Remove(path)
				continue
			}
			objs = append(objs, o)
		}
	}
	slices.SortFunc(objs, func(a, b *object) int { return a.m.Load().respTime.Compare(b.m.Load().respTime) })
	for _, o := range objs {
		d.c.indexLoaded(o)
	}
	d.c.log.Info("disk cache index loaded", "dir", d.dir, "entries", len(objs), "discarded", bad)
}

// indexLoaded adds an entry found on disk unless something newer for the
// same variant is already stored or it was purged meanwhile.
func (c *Cache) indexLoaded(o *object) {
	df := o.disk.Load()
	m := o.m.Load()
	if c.purgedWhileLoading(o.key, m.respTime) {
		os.Remove(df.path)
		return
	}
	sh := c.shard(o.key)
	sh.mu.Lock()
	n := sh.nodes[o.key]
	if n == nil {
		n = &node{}
		sh.nodes[o.key] = n
	}
	var older *object
	for _, v := range n.variants {
		if vd := v.disk.Load(); vd != nil && vd.path == df.path {
			sh.mu.Unlock() // stored by this process while the index loaded
			return
		}
		if slices.Equal(v.varyVals, o.varyVals) && slices.Equal(v.m.Load().vary, m.vary) {
			if !v.m.Load().respTime.Before(m.respTime) {
				sh.mu.Unlock()
				os.Remove(df.path)
				return
			}
			older = v
		}
	}
	vs := make([]*object, 0, len(n.variants)+1)
	for _, v := range n.variants {
		if v != older {
			vs = append(vs, v)
		}
	}
	n.variants = append(vs, o)
	sh.mu.Unlock()
	if older != nil {
		c.drop(older)
	}
	c.disk.add(o)
}

func (c *Cache) purgedWhileLoading(key string, t time.Time) bool {
	c.loadMu.Lock()
	defer c.loadMu.Unlock()
	for _, p := range c.loadPurges {
		if (p.key == key || (p.prefix && len(key) >= len(p.key) && key[:len(p.key)] == p.key)) && !t.After(p.at) {
			return true
		}
	}
	return false
}
