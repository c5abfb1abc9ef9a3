package accesslog

import (
	"errors"

	"github.com/coreos/go-systemd/v22/journal"
)

// journalAvailable says whether journald's native socket takes messages.
func journalAvailable() error {
	if !journal.Enabled() {
		return errors.New(`output "journal": journald's socket is not available (not running under systemd?); use "stdout" or a file`)
	}
	return nil
}

// send writes one entry as a journal record: MESSAGE is the text line,
// and each configured field is HTTP_<NAME> (HTTP_STATUS=502), so that
// `journalctl -t edged-access HTTP_STATUS=502` selects. Empty values are
// left out.
func (l *Logger) send(e *Entry) {
	vars := make(map[string]string, len(l.fields)+2)
	vars["SYSLOG_IDENTIFIER"] = "edged-access"
	var b []byte
	for i := range l.fields {
		f := &l.fields[i]
		var v string
		if s, ok := f.text(e); ok {
			v = s
		} else {
			var empty bool
			b, empty = f.appendRaw(b[:0], e, true)
			if empty {
				continue
			}
			v = string(b)
		}
		if v != "" {
			vars[f.journal] = v
		}
	}
	rec := journalRecord{msg: string(l.appendText(b[:0], e)), prio: journal.PriInfo, vars: vars}
	if e.Status >= 500 {
		rec.prio = journal.PriWarning
	}
	select {
	case l.records <- rec:
	default:
		// journald is not keeping up: drop rather than hold requests.
		l.report("the journal is not taking access log records fast enough; records are dropped", errJournalBehind, 1)
	}
}

var errJournalBehind = errors.New("queue full")

// journalRecord is one record on its way to journald.
type journalRecord struct {
	msg  string
	prio journal.Priority
	vars map[string]string
}

// journalQueue is how many records may wait for journald.
const journalQueue = 4096

// sendRecords writes queued records to journald, off the request path:
// a datagram to a busy journald blocks, and that must not hold requests.
// The channel is never closed: a request that loaded this logger just
// before a reload replaced it may still log; after Close its record
// waits in the buffer and is dropped with the logger.
func (l *Logger) sendRecords() {
	defer close(l.sent)
	for {
		select {
		case rec := <-l.records:
			l.sendRecord(rec)
		case <-l.closing:
			for {
				select {
				case rec := <-l.records:
					l.sendRecord(rec)
				default:
					return
				}
			}
		}
	}
}

func (l *Logger) sendRecord(rec journalRecord) {
	if err := journal.Send(rec.msg, rec.prio, rec.vars); err != nil {
		l.report("sending an access log record to the journal failed; the record is lost", err, 1)
	}
}

// journalName is HTTP_ and the field's name in upper case, with anything
// but letters and digits as '_' (journal field names allow no more).
func (f *field) journalName() string {
	b := make([]byte, 0, 5+len(f.name))
	b = append(b, "HTTP_"...)
	for i := 0; i < len(f.name); i++ {
		c := f.name[i]
		switch {
		case c >= 'a' && c <= 'z':
			b = append(b, c-'a'+'A')
		case c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
			b = append(b, c)
		default:
			b = append(b, '_')
		}
	}
	return string(b)
}
