package engine

import (
	"bufio"
	"io"
	"sync"
)

// Buffer sizes: a request head that fits in 4 KiB (nearly all) never
// needs more; a larger one moves to a buffer of MaxHeaderBytes. Buffers
// go back to their pool whenever a connection waits for its next request.
// Pools hold pointers, and a connection returns the very pointer it got,
// so that neither taking nor returning a buffer allocates.
const (
	smallBuf = 4 << 10
	writeBuf = 4 << 10
	stageBuf = 4 << 10
)

type bufPools struct {
	small, large, stage sync.Pool
	writers             sync.Pool
	largeSize           int
}

func newBufPools(maxHeader int) *bufPools {
	p := &bufPools{largeSize: max(maxHeader+smallBuf, smallBuf*2)}
	p.small.New = func() any { b := make([]byte, smallBuf); return &b }
	p.large.New = func() any { b := make([]byte, p.largeSize); return &b }
	p.stage.New = func() any { b := make([]byte, 0, stageBuf); return &b }
	p.writers.New = func() any { return bufio.NewWriterSize(nil, writeBuf) }
	return p
}

func (p *bufPools) getRead(large bool) *[]byte {
	if large {
		return p.large.Get().(*[]byte)
	}
	return p.small.Get().(*[]byte)
}

func (p *bufPools) putRead(b *[]byte) {
	if len(*b) == smallBuf {
		p.small.Put(b)
	} else {
		p.large.Put(b)
	}
}

func (p *bufPools) getWriter(w io.Writer) *bufio.Writer {
	bw := p.writers.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func (p *bufPools) putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	p.writers.Put(bw)
}

func (p *bufPools) getStage() *[]byte { return p.stage.Get().(*[]byte) }

func (p *bufPools) putStage(b *[]byte) {
	*b = (*b)[:0]
	p.stage.Put(b)
}
