package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Storage is a certmagic.Storage in etcd, so that every node of a cluster
// serves the same certificates and only one of them orders each.
//
// Layout under the cluster prefix:
//
//	certmagic/k/KEY           the value (inline), or a pointer to its chunks
//	certmagic/c/KEY/GEN/NNNNN chunks of a value larger than ChunkSize
//	certmagic/locks/NAME/...  certmagic's locks (etcd's concurrency.Mutex)
//
// A value's record starts with its format byte and modification time. A
// large value is written chunk by chunk under a fresh generation and then
// made current by one transaction that replaces the record, so a reader
// sees the old value or the new one, never a mix; the old generation's
// chunks go after the swap.
//
// Locks are etcd mutexes on a session lease of LockTTL: a node that dies
// holding one releases it when the lease runs out; a live one keeps the
// lease through an election (see lockLease). While it holds a lock, a
// process reads etcd, never its local copy (certmagic decides there
// whether to order). Within one process a
// name is also locked locally first, as certmagic may lock the same name
// from two goroutines and an etcd mutex is per session.
//
// Reads that cannot reach etcd are answered from a local copy (every
// value read or written is kept under StateDir/etcd-copy), so a node that
// restarts during an outage still has its certificates; writes and locks
// need etcd and fail without it (certmagic retries them).
type Storage struct {
	c     *Cluster
	local *certmagic.FileStorage // nil without a StateDir

	mu      sync.Mutex // guards lease and held
	lease   *lockLease
	held    map[string]*heldLock
	localMu sync.Mutex
	locals  map[string]chan struct{} // name -> taken while this process holds or awaits it
}

type heldLock struct {
	m     *concurrency.Mutex
	lease *lockLease
}

// lockLease is the lease this process's locks hang on. It is kept alive
// by keepLease, not by the client's KeepAlive alone: that one gives a
// lease up for good once etcd has not answered for one TTL, which an
// election under load easily takes, and the lease then ran out while its
// holder was still ordering a certificate: another node took the lock
// and ordered it too. keepLease keeps trying until etcd itself says the
// lease is gone (a new leader extends every lease when it takes over, so
// a holder that reaches it in time keeps its locks).
type lockLease struct {
	sess   *concurrency.Session
	lost   chan struct{}      // closed once etcd says the lease is gone
	cancel context.CancelFunc // stops keepLease
}

func (l *lockLease) isLost() bool {
	select {
	case <-l.lost:
		return true
	default:
		return false
	}
}

var (
	_ certmagic.Storage = (*Storage)(nil)
)

// ChunkSize is the largest value stored in one etcd key (etcd refuses
// requests over 1.5 MiB by default).
const ChunkSize = 512 << 10

const (
	fmtInline  = 1
	fmtChunked = 2
	headerLen  = 1 + 8 // format, modified (unix nanoseconds)
)

func newStorage(c *Cluster) *Storage {
	s := &Storage{c: c, held: map[string]*heldLock{}, locals: map[string]chan struct{}{}}
	if c.o.StateDir != "" {
		s.local = &certmagic.FileStorage{Path: filepath.Join(c.o.StateDir, "etcd-copy")}
	}
	return s
}

// Storage is the cluster's certificate storage.
func (c *Cluster) Storage() *Storage { return c.storage }

// LocalDir is where the local copy lives ("" without one).
func (s *Storage) LocalDir() string {
	if s.local == nil {
		return ""
	}
	return s.local.Path
}

func (s *Storage) recKey(key string) string   { return s.c.key("certmagic", "k", key) }
func (s *Storage) chunkPfx(key string) string { return s.c.key("certmagic", "c", key) + "/" }
func (s *Storage) lockKey(name string) string { return s.c.key("certmagic", "locks", name) }

func cleanKey(key string) string { return strings.Trim(path.Clean("/"+key), "/") }

// Store writes value at key.
//
// A write that fails while etcd elects a leader is tried again for up to
// storeRetryFor: a certificate that was ordered but not saved would be
// ordered again, against the CA's rate limits.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	key = cleanKey(key)
	deadline := time.Now().Add(storeRetryFor)
	wait := 200 * time.Millisecond
	for {
		err := s.store(ctx, key, value)
		if err == nil {
			break
		}
		s.c.noteError("store", err)
		if !isUnavailable(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("storing %s in etcd: %w", key, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("storing %s in etcd: %w", key, err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
	s.keepLocal(ctx, key, value)
	return nil
}

// storeRetryFor bounds the retries of a write (an election takes a few
// election timeouts).
const storeRetryFor = 30 * time.Second

func (s *Storage) store(ctx context.Context, key string, value []byte) error {
	now := time.Now()
	if len(value) <= ChunkSize {
		rec := make([]byte, headerLen+len(value))
		rec[0] = fmtInline
		binary.BigEndian.PutUint64(rec[1:9], uint64(now.UnixNano()))
		copy(rec[headerLen:], value)
		ctx, cancel := s.c.opCtx(ctx)
		defer cancel()
		resp, err := s.c.cli.Put(ctx, s.recKey(key), string(rec), clientv3.WithPrevKV())
		if err != nil {
			return err
		}
		if resp.PrevKv != nil {
			s.dropChunks(ctx, key, resp.PrevKv.Value)
		}
		return nil
	}
	var g [8]byte
	rand.Read(g[:])
	gen := hex.EncodeToString(g[:])
	n := 0
	for off := 0; off < len(value); off += ChunkSize {
		end := min(off+ChunkSize, len(value))
		cctx, cancel := s.c.opCtx(ctx)
		_, err := s.c.cli.Put(cctx, fmt.Sprintf("%s%s/%05d", s.chunkPfx(key), gen, n), string(value[off:end]))
		cancel()
		if err != nil {
			s.deleteGen(context.WithoutCancel(ctx), key, gen)
			return err
		}
		n++
	}
	rec := make([]byte, headerLen, headerLen+8+4+len(gen))
	rec[0] = fmtChunked
	binary.BigEndian.PutUint64(rec[1:9], uint64(now.UnixNano()))
	rec = binary.BigEndian.AppendUint64(rec, uint64(len(value)))
	rec = binary.BigEndian.AppendUint32(rec, uint32(n))
	rec = append(rec, gen...)
	cctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	resp, err := s.c.cli.Put(cctx, s.recKey(key), string(rec), clientv3.WithPrevKV())
	if err != nil {
		s.deleteGen(context.WithoutCancel(ctx), key, gen)
		return err
	}
	if resp.PrevKv != nil {
		s.dropChunks(cctx, key, resp.PrevKv.Value)
	}
	return nil
}

// chunked describes a chunked record.
type chunked struct {
	size   int64
	chunks int
	gen    string
}

func parseRecord(rec []byte) (format byte, mod time.Time, data []byte, ch chunked, err error) {
	if len(rec) < headerLen {
		return 0, time.Time{}, nil, ch, errors.New("record too short")
	}
	format = rec[0]
	mod = time.Unix(0, int64(binary.BigEndian.Uint64(rec[1:9])))
	switch format {
	case fmtInline:
		return format, mod, rec[headerLen:], ch, nil
	case fmtChunked:
		rest := rec[headerLen:]
		if len(rest) < 12+16 {
			return 0, mod, nil, ch, errors.New("chunked record too short")
		}
		ch.size = int64(binary.BigEndian.Uint64(rest[:8]))
		ch.chunks = int(binary.BigEndian.Uint32(rest[8:12]))
		ch.gen = string(rest[12:])
		return format, mod, nil, ch, nil
	}
	return 0, mod, nil, ch, fmt.Errorf("unknown record format %d", format)
}

// dropChunks deletes the chunks an overwritten or deleted record pointed at.
func (s *Storage) dropChunks(ctx context.Context, key string, prev []byte) {
	if f, _, _, ch, err := parseRecord(prev); err == nil && f == fmtChunked {
		s.deleteGen(ctx, key, ch.gen)
	}
}

func (s *Storage) deleteGen(ctx context.Context, key, gen string) {
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	if _, err := s.c.cli.Delete(ctx, s.chunkPfx(key)+gen+"/", clientv3.WithPrefix()); err != nil {
		s.c.log.Warn("cluster storage: could not delete the old chunks of a value; they stay in etcd", "key", key, "err", err)
	}
}

// Load reads key's value.
//
// While etcd counts as unreachable (see offline), the local copy answers
// when it has the key. Its "not found" is only believed once the outage
// has lasted longer than an election: another node's ACME challenge is
// not in it, and a CA validating it must not get a 404.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	key = cleanKey(key)
	if s.offline() {
		v, err := s.local.Load(ctx, key)
		if err == nil {
			s.c.met.fallbacks.Inc()
			return v, nil
		}
		if !s.c.downBriefly() {
			return nil, fmt.Errorf("etcd is unreachable and the local copy has no %s: %w", key, err)
		}
	}
	start := time.Now()
	v, err := s.load(ctx, key)
	if isUnavailable(err) {
		v, err = duringElection(ctx, start, func(ctx context.Context) ([]byte, error) { return s.load(ctx, key) },
			func(ctx context.Context) ([]byte, error) { return s.loadWith(ctx, key, clientv3.WithSerializable()) })
	}
	switch {
	case err == nil:
		s.keepLocal(ctx, key, v)
		return v, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	s.c.noteError("load", err)
	if s.local != nil && isUnavailable(err) {
		// Only a value: what the copy lacks etcd may well have.
		if v, lerr := s.local.Load(ctx, key); lerr == nil {
			s.c.met.fallbacks.Inc()
			return v, nil
		}
	}
	return nil, fmt.Errorf("loading %s from etcd: %w", key, err)
}

// offline reports whether reads start with the local copy: there is one,
// etcd counts as unreachable (the first probe said so, or later ones
// did), and this process holds no lock (a lock holder decides on what it
// reads, so it reads etcd's current values).
func (s *Storage) offline() bool {
	return s.local != nil && s.c.probed.Load() && !s.c.Up() && !s.holdsLock()
}

// duringElection reads while etcd has no leader (an election, a member
// gone): a member's own copy (serial) is taken when it has the value (it
// is current once the write that made it was acknowledged), but its "not
// found" may only be late -- a follower applies a write only when it
// learns that it was committed, which a leader killed right after
// committing never tells it -- so the linearizable read (linear) is tried
// again until it answers or electionWait has passed since the read began
// (since). An ACME challenge read here while the CA validates must not
// turn into a 404 and a second order, nor the check after a lock into a
// second order.
func duringElection[T any](ctx context.Context, since time.Time, linear, serial func(context.Context) (T, error)) (T, error) {
	deadline := since.Add(electionWait)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var zero T
	lastErr := errors.New("etcd has no leader")
	for wait := 100 * time.Millisecond; ; wait = min(wait*2, time.Second) {
		v, err := serial(ctx)
		if err == nil || (!isUnavailable(err) && !errors.Is(err, fs.ErrNotExist)) {
			return v, err
		}
		if isUnavailable(err) {
			lastErr = err
		}
		// Not cut short when the probe calls etcd lost meanwhile: an
		// election can fail two probes, and this is bounded anyway.
		if time.Now().Add(wait).After(deadline) {
			// A member's "not found" is no answer: say etcd could not.
			return zero, lastErr
		}
		select {
		case <-ctx.Done():
			return zero, lastErr
		case <-time.After(wait):
		}
		if v, err = linear(ctx); !isUnavailable(err) {
			return v, err
		}
		lastErr = err
	}
}

// electionWait bounds duringElection: a few election timeouts (etcd's
// default is 1 s), well within an ACME CA's validation timeout.
const electionWait = 10 * time.Second

func (s *Storage) load(ctx context.Context, key string) ([]byte, error) {
	return s.loadWith(ctx, key)
}

func (s *Storage) loadWith(ctx context.Context, key string, opts ...clientv3.OpOption) ([]byte, error) {
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	resp, err := s.c.cli.Get(ctx, s.recKey(key), opts...)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	f, _, data, ch, err := parseRecord(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if f == fmtInline {
		return bytes.Clone(data), nil
	}
	// The chunks as of the record's revision: a concurrent overwrite
	// cannot mix generations.
	copts := append([]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}, opts...)
	cr, err := s.c.cli.Get(ctx, s.chunkPfx(key)+ch.gen+"/", copts...)
	if err != nil {
		return nil, err
	}
	if len(cr.Kvs) != ch.chunks {
		return nil, fmt.Errorf("%s: %d of %d chunks found", key, len(cr.Kvs), ch.chunks)
	}
	out := make([]byte, 0, ch.size)
	for _, kv := range cr.Kvs {
		out = append(out, kv.Value...)
	}
	if int64(len(out)) != ch.size {
		return nil, fmt.Errorf("%s: chunks hold %d bytes, want %d", key, len(out), ch.size)
	}
	return out, nil
}

// Delete removes key and everything under it (certmagic deletes a site's
// directory this way).
func (s *Storage) Delete(ctx context.Context, key string) error {
	key = cleanKey(key)
	cctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	rk := s.recKey(key)
	_, err := s.c.cli.Txn(cctx).Then(
		clientv3.OpDelete(rk),
		clientv3.OpDelete(rk+"/", clientv3.WithPrefix()),
		clientv3.OpDelete(s.chunkPfx(key), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		s.c.noteError("delete", err)
		return fmt.Errorf("deleting %s in etcd: %w", key, err)
	}
	if s.local != nil {
		s.local.Delete(ctx, key)
	}
	return nil
}

// Exists reports whether key holds a value or has keys under it.
//
// certmagic asks it, holding the issuance lock, whether another node
// already obtained the certificate; as it cannot hear "I do not know", a
// process holding a lock is answered yes when etcd cannot tell (certmagic
// then loads the certificate, fails, and edged tries again later) rather
// than no, which would order the certificate a second time.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return err == nil
	}
	if s.holdsLock() {
		s.c.log.Warn("cluster storage: etcd cannot tell whether a key exists; this node holds a lock, so it assumes the key is there rather than repeat what another node may have done", "key", key, "err", err)
		return true
	}
	return false
}

// Stat describes key; the local copy answers as in Load.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = cleanKey(key)
	if s.offline() {
		ki, err := s.local.Stat(ctx, key)
		if err == nil {
			s.c.met.fallbacks.Inc()
			return ki, nil
		}
		if !s.c.downBriefly() {
			return ki, err
		}
	}
	start := time.Now()
	ki, err := s.stat(ctx, key)
	if isUnavailable(err) {
		ki, err = duringElection(ctx, start, func(ctx context.Context) (certmagic.KeyInfo, error) { return s.stat(ctx, key) },
			func(ctx context.Context) (certmagic.KeyInfo, error) { return s.statSerializable(ctx, key) })
	}
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return ki, err
	}
	s.c.noteError("stat", err)
	if s.local != nil && isUnavailable(err) {
		if ki, lerr := s.local.Stat(ctx, key); lerr == nil {
			s.c.met.fallbacks.Inc()
			return ki, nil
		}
	}
	return ki, fmt.Errorf("stat %s in etcd: %w", key, err)
}

func (s *Storage) stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	rk := s.recKey(key)
	resp, err := s.c.cli.Txn(ctx).Then(
		clientv3.OpGet(rk),
		clientv3.OpGet(rk+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		f, mod, data, ch, err := parseRecord(kvs[0].Value)
		if err != nil {
			return certmagic.KeyInfo{}, fmt.Errorf("%s: %w", key, err)
		}
		size := int64(len(data))
		if f == fmtChunked {
			size = ch.size
		}
		return certmagic.KeyInfo{Key: key, Modified: mod, Size: size, IsTerminal: true}, nil
	}
	if resp.Responses[1].GetResponseRange().Count > 0 {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
}

func (s *Storage) statSerializable(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	rk := s.recKey(key)
	resp, err := s.c.cli.Get(ctx, rk, clientv3.WithSerializable())
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if len(resp.Kvs) > 0 {
		f, mod, data, ch, err := parseRecord(resp.Kvs[0].Value)
		if err != nil {
			return certmagic.KeyInfo{}, fmt.Errorf("%s: %w", key, err)
		}
		size := int64(len(data))
		if f == fmtChunked {
			size = ch.size
		}
		return certmagic.KeyInfo{Key: key, Modified: mod, Size: size, IsTerminal: true}, nil
	}
	dir, err := s.c.cli.Get(ctx, rk+"/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithSerializable())
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if dir.Count > 0 {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
}

// List returns the keys under prefix: its direct children, or with
// recursive every key below it.
func (s *Storage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	prefix = cleanKey(prefix)
	if !s.c.Up() && s.local != nil {
		s.c.met.fallbacks.Inc()
		return s.local.List(ctx, prefix, recursive)
	}
	out, err := s.list(ctx, prefix, recursive)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return out, err
	}
	s.c.noteError("list", err)
	if s.local != nil && isUnavailable(err) {
		s.c.met.fallbacks.Inc()
		return s.local.List(ctx, prefix, recursive)
	}
	return nil, fmt.Errorf("listing %s in etcd: %w", prefix, err)
}

func (s *Storage) list(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	base := s.c.key("certmagic", "k") + "/"
	if prefix != "" {
		base = s.recKey(prefix) + "/"
	}
	resp, err := s.c.cli.Get(ctx, base, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s: %w", prefix, fs.ErrNotExist)
	}
	seen := map[string]bool{}
	for _, kv := range resp.Kvs {
		rel := strings.TrimPrefix(string(kv.Key), base)
		parts := strings.Split(rel, "/")
		if !recursive {
			parts = parts[:1]
		}
		for i := range parts {
			seen[path.Join(prefix, strings.Join(parts[:i+1], "/"))] = true
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// keepLocal refreshes the local copy of key; a failure costs only the
// fallback, so it is logged and nothing else.
func (s *Storage) keepLocal(ctx context.Context, key string, value []byte) {
	if s.local == nil {
		return
	}
	if old, err := s.local.Load(ctx, key); err == nil && bytes.Equal(old, value) {
		return
	}
	if err := s.local.Store(ctx, key, value); err != nil {
		s.c.log.Warn("cluster storage: could not keep the local copy of a value; it will not be there if etcd is unreachable", "key", key, "dir", s.local.Path, "err", err)
	}
}

// Lock takes the cluster-wide lock name, waiting until it is free or ctx
// ends.
func (s *Storage) Lock(ctx context.Context, name string) error {
	if err := s.lockLocal(ctx, name); err != nil {
		return err
	}
	m, l, err := s.lockEtcd(ctx, name)
	if err != nil {
		s.unlockLocal(name)
		s.c.noteError("lock", err)
		return fmt.Errorf("locking %s in etcd: %w", name, err)
	}
	s.mu.Lock()
	s.held[name] = &heldLock{m: m, lease: l}
	s.mu.Unlock()
	return nil
}

// lockEtcd takes name in etcd. A request that fails while etcd elects a
// leader is tried again for up to storeRetryFor, as Store does: giving up
// at once made a node that was waiting for the lock try again only at
// edged's next retry (a minute later) and could leave its waiting key
// behind, applied by etcd after the request timed out, on a lease this
// process keeps alive.
func (s *Storage) lockEtcd(ctx context.Context, name string) (*concurrency.Mutex, *lockLease, error) {
	deadline := time.Now().Add(storeRetryFor)
	wait := 200 * time.Millisecond
	renewed := false
	queued := "" // this process's key in the lock's queue, if it may be there
	giveUp := func(err error) (*concurrency.Mutex, *lockLease, error) {
		if queued != "" {
			dctx, cancel := s.c.opCtx(context.WithoutCancel(ctx))
			s.c.cli.Delete(dctx, queued)
			cancel()
		}
		return nil, nil, err
	}
	for {
		l, err := s.session(ctx)
		if err == nil {
			m := concurrency.NewMutex(l.sess, s.lockKey(name))
			if err = m.Lock(ctx); err == nil {
				return m, l, nil
			}
			// A retry on the same lease reuses the key.
			queued = m.Key()
			if errors.Is(err, concurrency.ErrSessionExpired) && !renewed {
				renewed = true
				queued = ""
				s.dropLease(l)
				continue
			}
		}
		if !isUnavailable(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return giveUp(err)
		}
		s.c.noteError("lock", err)
		select {
		case <-ctx.Done():
			return giveUp(err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// session is the lease every lock of this process hangs on; a new one is
// made when etcd says the old one expired (etcd was away longer than
// LockTTL).
func (s *Storage) session(ctx context.Context) (*lockLease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease != nil {
		if !s.lease.isLost() {
			return s.lease, nil
		}
		s.lease = nil
	}
	ttl := int((s.c.o.LockTTL + time.Second - 1) / time.Second)
	gctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	lease, err := s.c.cli.Grant(gctx, int64(ttl))
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(s.c.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(context.WithoutCancel(s.c.ctx)))
	if err != nil {
		return nil, err
	}
	kctx, stop := context.WithCancel(s.c.ctx)
	l := &lockLease{sess: sess, lost: make(chan struct{}), cancel: stop}
	go s.keepLease(kctx, l, time.Duration(ttl)*time.Second)
	s.lease = l
	return l, nil
}

// keepLease renews l every third of its TTL, and after a failure every
// leaseRetry, until ctx ends or etcd answers that the lease is gone.
func (s *Storage) keepLease(ctx context.Context, l *lockLease, ttl time.Duration) {
	wait := ttl / 3
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		kctx, cancel := s.c.opCtx(ctx)
		_, err := s.c.cli.KeepAliveOnce(kctx, l.sess.Lease())
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			wait = ttl / 3
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			close(l.lost)
			if names := s.heldOn(l); len(names) > 0 {
				s.c.log.Error("cluster storage: the lease of this node's locks ran out while it held them (etcd was out of reach longer than lock_ttl); another node may take them and repeat the work", "locks", strings.Join(names, ","), "lock_ttl", s.c.o.LockTTL)
			}
			return
		default:
			// An election, a member gone: etcd extends the lease when a
			// new leader takes over, so keep asking.
			s.c.noteError("lease", err)
			wait = leaseRetry
		}
	}
}

// leaseRetry is the pause between renewals that failed.
const leaseRetry = 250 * time.Millisecond

// heldOn lists the locks this process holds on l.
func (s *Storage) heldOn(l *lockLease) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for name, h := range s.held {
		if h.lease == l {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// holdsLock reports whether this process holds a cluster-wide lock.
func (s *Storage) holdsLock() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held) > 0
}

func (s *Storage) dropLease(l *lockLease) {
	s.mu.Lock()
	if s.lease == l {
		s.lease = nil
	}
	s.mu.Unlock()
	l.release(s.c)
}

// release stops keeping l alive and revokes it (best effort: its locks go
// at once, or else at the TTL). Not Session.Close, whose revoke may wait
// a whole minute (the session's default TTL) while etcd is away.
func (l *lockLease) release(c *Cluster) {
	l.cancel()
	l.sess.Orphan()
	ctx, cancel := c.opCtx(context.Background())
	defer cancel()
	c.cli.Revoke(ctx, l.sess.Lease())
}

// Unlock releases name.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("unlocking %s: not locked by this process", name)
	}
	defer s.unlockLocal(name)
	ctx, cancel := s.c.opCtx(context.WithoutCancel(ctx))
	defer cancel()
	resp, err := s.c.cli.Delete(ctx, h.m.Key())
	if err != nil {
		// The lock key would outlive us while the lease is kept alive:
		// give the whole lease up so it expires.
		s.c.noteError("unlock", err)
		s.dropLease(h.lease)
		return fmt.Errorf("unlocking %s in etcd (it is released when its lease ends, within %v): %w", name, s.c.o.LockTTL, err)
	}
	if resp.Deleted == 0 {
		// Its lease ran out while held (keepLease said so): another node
		// may have held it at the same time.
		return fmt.Errorf("unlocking %s in etcd: the lock had already expired with its lease (lock_ttl %v)", name, s.c.o.LockTTL)
	}
	return nil
}

func (s *Storage) lockLocal(ctx context.Context, name string) error {
	for {
		s.localMu.Lock()
		ch, busy := s.locals[name]
		if !busy {
			s.locals[name] = make(chan struct{})
			s.localMu.Unlock()
			return nil
		}
		s.localMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Storage) unlockLocal(name string) {
	s.localMu.Lock()
	ch := s.locals[name]
	delete(s.locals, name)
	s.localMu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// close gives up the locks' lease, so locks still held are free at once.
func (s *Storage) close() {
	s.mu.Lock()
	l := s.lease
	s.lease = nil
	s.mu.Unlock()
	if l != nil {
		l.release(s.c)
	}
}

// isUnavailable tells a failure to reach etcd (fall back, count the node
// as cut off) from a bad record.
func isUnavailable(err error) bool {
	return err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, context.Canceled)
}
