// Package sockdiag reads the accept queue of a listening socket through
// the kernel's socket diagnostics (NETLINK_SOCK_DIAG, what ss(8) uses):
// how many connections wait for a worker to accept them, and the backlog
// they may grow to. It handles unix stream listeners (unix_diag, looked up
// by inode, UNIX_DIAG_RQLEN) and TCP listeners (inet_diag, the listeners of
// the socket's family, matched by inode; an MPTCP listener, which Go makes
// by default, through TCP_INFO). Nothing here needs privileges.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Queue is a listener's accept queue.
type Queue struct {
	Queued  uint32 // connections waiting to be accepted
	Backlog uint32 // the most that may wait (listen()'s backlog, capped by somaxconn)
}

// Prober asks the kernel about listening sockets over one netlink socket.
// Safe for use by one goroutine at a time; Close releases it.
type Prober struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

// Open makes a Prober.
func Open() (*Prober, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("opening a NETLINK_SOCK_DIAG socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding the sock_diag socket: %w", err)
	}
	return &Prober{fd: fd, buf: make([]byte, 64<<10)}, nil
}

// Close releases the netlink socket.
func (p *Prober) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	return err
}

// ErrNotListener is returned for a socket that is not a listening unix
// stream or TCP socket.
var ErrNotListener = errors.New("not a listening unix stream or TCP socket")

// AcceptQueue returns the accept queue of the listening socket f.
func (p *Prober) AcceptQueue(f *os.File) (Queue, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return Queue{}, err
	}
	var q Queue
	var qerr error
	if err := rc.Control(func(fd uintptr) { q, qerr = p.acceptQueue(int(fd)) }); err != nil {
		return Queue{}, err
	}
	return q, qerr
}

func (p *Prober) acceptQueue(fd int) (Queue, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Queue{}, err
	}
	ino := uint32(st.Ino)
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return Queue{}, err
	}
	if ok, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || ok != 1 {
		return Queue{}, ErrNotListener
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return Queue{}, errors.New("sockdiag: prober closed")
	}
	switch domain {
	case unix.AF_UNIX:
		return p.unixQueue(ino)
	case unix.AF_INET, unix.AF_INET6:
		switch proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); {
		case err != nil:
			return Queue{}, err
		case proto == unix.IPPROTO_TCP:
			return p.tcpQueue(uint8(domain), ino)
		case proto == unix.IPPROTO_MPTCP:
			// Go listens with MPTCP by default; inet_diag has no byte for
			// protocol 262. TCP_INFO of a listener is its accept queue.
			return tcpInfoQueue(fd)
		}
	}
	return Queue{}, ErrNotListener
}

const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	udiagShowRQLen   = 0x10
	unixDiagRQLen    = 4 // UNIX_DIAG_RQLEN
	tcpListen        = 10
	inetDiagMsgLen   = 72 // struct inet_diag_msg
	unixDiagMsgLen   = 16 // struct unix_diag_msg
)

// unixQueue looks the socket up by inode (unix_diag_get_exact).
func (p *Prober) unixQueue(ino uint32) (Queue, error) {
	req := make([]byte, 24)
	req[0] = unix.AF_UNIX
	ne := binary.NativeEndian
	ne.PutUint32(req[4:], ^uint32(0)) // states: all
	ne.PutUint32(req[8:], ino)
	ne.PutUint32(req[12:], udiagShowRQLen)
	ne.PutUint32(req[16:], ^uint32(0)) // no cookie
	ne.PutUint32(req[20:], ^uint32(0))
	var q Queue
	found := false
	err := p.roundTrip(req, unix.NLM_F_REQUEST, func(data []byte) {
		if len(data) < unixDiagMsgLen || ne.Uint32(data[4:]) != ino {
			return
		}
		for attrs := data[unixDiagMsgLen:]; len(attrs) >= 4; {
			l, typ := int(ne.Uint16(attrs)), ne.Uint16(attrs[2:])
			if l < 4 || l > len(attrs) {
				return
			}
			if typ == unixDiagRQLen && l >= 12 {
				q = Queue{Queued: ne.Uint32(attrs[4:]), Backlog: ne.Uint32(attrs[8:])}
				found = true
			}
			attrs = attrs[min((l+3)&^3, len(attrs)):]
		}
	})
	if err != nil {
		return Queue{}, fmt.Errorf("unix_diag of socket inode %d: %w", ino, err)
	}
	if !found {
		return Queue{}, fmt.Errorf("unix_diag of socket inode %d: no queue length in the answer", ino)
	}
	return q, nil
}

// tcpQueue dumps the family's TCP listeners and picks the inode.
func (p *Prober) tcpQueue(family uint8, ino uint32) (Queue, error) {
	req := make([]byte, 56) // struct inet_diag_req_v2
	req[0] = family
	req[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpListen)
	var q Queue
	found := false
	ne := binary.NativeEndian
	err := p.roundTrip(req, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, func(data []byte) {
		if len(data) < inetDiagMsgLen || ne.Uint32(data[68:]) != ino {
			return
		}
		q = Queue{Queued: ne.Uint32(data[56:]), Backlog: ne.Uint32(data[60:])}
		found = true
	})
	if err != nil {
		return Queue{}, fmt.Errorf("inet_diag of TCP listeners: %w", err)
	}
	if !found {
		return Queue{}, fmt.Errorf("inet_diag: no TCP listener with inode %d", ino)
	}
	return q, nil
}

// tcpInfoQueue reads a TCP (or MPTCP) listener's accept queue from
// TCP_INFO, where the kernel reports it as unacked (and the backlog as
// sacked) for a socket in LISTEN state.
func tcpInfoQueue(fd int) (Queue, error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return Queue{}, fmt.Errorf("TCP_INFO of a listener: %w", err)
	}
	if ti.State != tcpListen {
		return Queue{}, ErrNotListener
	}
	return Queue{Queued: ti.Unacked, Backlog: ti.Sacked}, nil
}

// roundTrip sends one request and hands each answer's payload to each,
// until the answer (or the dump) ends.
func (p *Prober) roundTrip(payload []byte, flags uint16, each func([]byte)) error {
	p.seq++
	seq := p.seq
	msg := make([]byte, unix.NLMSG_HDRLEN+len(payload))
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], sockDiagByFamily)
	ne.PutUint16(msg[6:], flags)
	ne.PutUint32(msg[8:], seq)
	copy(msg[unix.NLMSG_HDRLEN:], payload)
	if err := unix.Sendto(p.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	for {
		n, _, err := unix.Recvfrom(p.fd, p.buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(p.buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue // a late answer to an earlier request
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(ne.Uint32(m.Data)); e != 0 {
						return unix.Errno(-e)
					}
				}
				return nil
			default:
				each(m.Data)
			}
		}
		if flags&unix.NLM_F_DUMP == 0 {
			return nil
		}
	}
}
